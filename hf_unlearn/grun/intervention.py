"""GatedLoreftIntervention: a LoReFT edit of the residual stream scaled by a learned sigmoid gate (GRUN)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._compat import import_pyreft

pyreft = import_pyreft()

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_gate(hidden_size: int, kind: str, hidden_sizes: Sequence[int], dtype: torch.dtype) -> torch.nn.Module:
    """g: R^d -> R, the gate's logit: `Linear(d, 1)` or an MLP `d -> hidden_sizes... -> 1` with ReLU."""
    if kind == "linear":
        return torch.nn.Linear(hidden_size, 1, dtype=dtype)
    if kind == "mlp":
        layers: list[torch.nn.Module] = []
        width = hidden_size
        for next_width in hidden_sizes:
            layers += [torch.nn.Linear(width, next_width, dtype=dtype), torch.nn.ReLU()]
            width = next_width
        layers.append(torch.nn.Linear(width, 1, dtype=dtype))
        return torch.nn.Sequential(*layers)
    raise ValueError(f"Unknown GRUN gate {kind!r}; choose 'linear' or 'mlp'.")


class GatedLoreftIntervention(pyreft.LoreftIntervention):
    r"""GRUN's gated LoReFT (Ren et al. 2025, arXiv 2502.17823) as a pyvene/pyreft intervention:

        h' = h + s(h) * R^T (W h + b - R h),        s(h) = sigmoid(g(h)),

    where the LoReFT part (R with orthonormal rows, W, b; Wu et al. 2024, arXiv 2404.03592) comes from pyreft's
    [`~pyreft.LoreftIntervention`] and g is `Linear(d, 1)` or an MLP (see [`build_gate`]). The gate reads the SAME
    hidden state it edits.

    Stock pyvene returns only the edited hidden state, so the gate reaches the loss another way: every forward
    records its gate logits g(h), shape `[batch, units]`, on the module (`last_gate_logits`, with their autograd
    graph); [`~hf_unlearn.grun.GRUNModel`] collects them right after the forward and clears them.

    Sequential unlearning stacks modules: the modules of earlier requests at the same layer are listed in `stacked`
    (a plain list: they are registered on the GRUN model, not here) and every module's gated edit is computed from
    the same input, h' = h + sum_i s_i(h) * edit_i(h).

    Parameters are created in `dtype` (float32 by default, unlike pyreft's bfloat16 `learned_source`): the edit
    computes in it and casts back to the hidden states' dtype.

    Args:
        embed_dim: d, the hidden size.
        low_rank_dimension: r, the rank.
        gate: `"linear"` or `"mlp"`.
        gate_hidden_sizes: hidden widths of the MLP gate.
        dtype: the parameters' dtype.
        dropout: dropout on the edit R^T (W h + b - R h).
        act_fn: activation of W h + b (None: linear, as in LoReFT).
    """

    def __init__(
        self,
        embed_dim: int,
        low_rank_dimension: int = 4,
        gate: str = "linear",
        gate_hidden_sizes: Sequence[int] = (256, 64),
        dtype: torch.dtype | str = torch.float32,
        dropout: float = 0.0,
        act_fn: str | None = None,
        **kwargs,
    ):
        dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
        super().__init__(
            embed_dim=embed_dim,
            low_rank_dimension=low_rank_dimension,
            dtype=dtype,
            dropout=dropout,
            act_fn=act_fn,
            **kwargs,
        )
        # pyreft builds the rotation in the default dtype; move it to ours so the whole edit has one dtype.
        self.rotate_layer.to(dtype)
        self.gate = build_gate(int(embed_dim), gate, gate_hidden_sizes, dtype)
        self.gate_kind = gate
        self.param_dtype = dtype
        self.stacked: list[GatedLoreftIntervention] = []
        self.last_gate_logits: torch.Tensor | None = None
        self.enabled = True

    # pyreft's LoreftIntervention replaces state_dict/load_state_dict with versions that drop the `destination` and
    # `prefix` arguments (so a parent module's state_dict silently misses them) and rebuild the rotation on load.
    # Restore torch's behaviour: the full state (incl. the orthogonal parametrization's tensors) round-trips exactly.
    def state_dict(self, *args, **kwargs):
        return torch.nn.Module.state_dict(self, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return torch.nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)

    def gate_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """g(h) for hidden states `[..., d]` (already in the parameters' dtype), shape `[...]`."""
        return self.gate(hidden).squeeze(-1)

    def edit(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LoReFT edit R^T (W h + b - R h) (without h), for hidden states in the parameters' dtype."""
        rotated = self.rotate_layer(hidden)
        return torch.matmul(self.act_fn(self.learned_source(hidden)) - rotated, self.rotate_layer.weight.T)

    def gated_edit(self, hidden: torch.Tensor) -> torch.Tensor:
        """s(h) * edit(h); records g(h) in `last_gate_logits`. A disabled module adds nothing."""
        logits = self.gate_logits(hidden)
        self.last_gate_logits = logits
        if not self.enabled:
            return torch.zeros_like(hidden)
        return torch.sigmoid(logits).unsqueeze(-1) * self.dropout(self.edit(hidden))

    def forward(self, base: torch.Tensor, source: torch.Tensor | None = None, subspaces=None) -> torch.Tensor:
        hidden = base.to(self.param_dtype)
        delta = self.gated_edit(hidden)
        for earlier in self.stacked:
            delta = delta + earlier.gated_edit(hidden)
        return (hidden + delta).to(base.dtype)

    def pop_gate_logits(self) -> torch.Tensor | None:
        """The gate logits of the last forward, cleared here so that no autograd graph stays on the module."""
        logits, self.last_gate_logits = self.last_gate_logits, None
        return logits
