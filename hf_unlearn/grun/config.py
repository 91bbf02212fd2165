"""GRUNConfig: where the gated representation edits go, how large they are, and the objective that trains them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..io import parse_json_object

GATES = ("linear", "mlp")
POSITIONS = ("last_prompt_token",)
FORGET_LOSSES = ("ga", "npo", "idk", "rmu")
DTYPES = ("float32", "bfloat16", "float16")

#: The paper's retain weights lambda_r (Ren et al. 2025, Sec. 5): 2 with GA, 1 with NPO and IDK; RMU's retain term
#: (hidden-state matching) gets 1 as in the WMDP paper's recipe.
DEFAULT_RETAIN_WEIGHTS = {"ga": 2.0, "npo": 1.0, "idk": 1.0, "rmu": 1.0}

#: The forget-term coefficients of the reference code (renjie3/GRUN, its TOFU commands in cmd_grun.sh): `npo_coeff`
#: 100 for NPO, `grad_diff_forget_weight` 1 for GA; IDK and RMU enter with weight 1.
DEFAULT_FORGET_WEIGHTS = {"ga": 1.0, "npo": 100.0, "idk": 1.0, "rmu": 1.0}


@dataclass
class GRUNConfig:
    r"""Configuration of one GRUN unlearning request (Ren et al. 2025, "A General Framework to Enhance
    Fine-tuning-based LLM Unlearning", arXiv 2502.17823).

    GRUN freezes the model and trains, on the residual stream h (the output of a few decoder layers) at one position
    (the last prompt token), a gated low-rank representation edit (a LoReFT, Wu et al. 2024, arXiv 2404.03592):

        h' = h + s(h) * R^T (W h + b - R h),        s(h) = sigmoid(g(h)),

    with R (rank x d) of orthonormal rows, W, b a linear map to the rank-r subspace, and g a linear layer or a small
    MLP (d-256-64-1). The gate learns to fire on questions about the forget data and to stay shut elsewhere, so the
    edit removes knowledge without touching the model's behaviour on other inputs. The objective is

        L = lambda_f * L_forget + lambda_r * L_retain + lambda_g * BCE(s, 1 on forget examples, 0 on retain examples),

    where L_forget is GA (-CE on the forget answers), NPO (reference: the same model with the GRUN edits switched off,
    no second copy), IDK (CE of a refusal answer) or RMU (steer the forget hidden states toward c * u at a layer;
    its retain term matches the unedited hidden states instead of the CE).

    Parameters:
        layers (`list[int]`): decoder layers (0-based; negative counts from the end) whose output is edited. The
            paper edits three layers of Llama-3.1-8B's 32 (e.g. 20, 25, 31).
        rank (`int`, defaults to 4): r, the rank of the edit (the paper's 4).
        gate (`str`, defaults to `"linear"`): `"linear"` (g = Linear(d, 1)) or `"mlp"` (d-256-64-1 with ReLU).
        gate_hidden_sizes (`tuple[int, ...]`, defaults to `(256, 64)`): hidden widths of the `"mlp"` gate.
        position (`str`, defaults to `"last_prompt_token"`): the only position GRUN edits: the last prompt token
            (the token before the first answer token in training; the last input token in generation, whose
            prefill pass alone is edited).
        gate_weight (`float`, defaults to 10.0): lambda_g (the paper's TOFU value; 100 on WMDP).
        forget_weight (`float`, *optional*): lambda_f; None takes the reference code's value for the forget loss
            (`DEFAULT_FORGET_WEIGHTS`: 100 for NPO, its TOFU `npo_coeff`, so that forget : retain : gate is
            100 : 1 : 10; 1 for GA, IDK and RMU).
        retain_weight (`float`, *optional*): lambda_r; None takes the paper's value for the forget loss
            (`DEFAULT_RETAIN_WEIGHTS`: 2 for GA, 1 for NPO, IDK and RMU).
        forget_loss (`str`, defaults to `"ga"`): `"ga"`, `"npo"`, `"idk"` or `"rmu"` (the registered losses of
            `hf_unlearn.losses`).
        forget_loss_kwargs (`dict`, *optional*): hyperparameters of the forget loss, e.g. `{"beta": 0.1}` for NPO or
            `{"layer": 5, "steering_coeff": 6.5}` for RMU (whose layer defaults to the last edited layer).
        dropout (`float`, defaults to 0.0): dropout on the edit.
        act_fn (`str`, *optional*): activation of the learned source W h + b (LoReFT's `act_fn`; None is linear).
        dtype (`str`, defaults to `"float32"`): dtype of the edit's parameters. The edit computes in this dtype and
            casts back to the hidden states' dtype; float32 keeps saving and loading exact and the gate well
            conditioned under a bf16 model.
    """

    layers: list[int] = field(default_factory=list)
    rank: int = 4
    gate: str = "linear"
    gate_hidden_sizes: tuple[int, ...] = (256, 64)
    position: str = "last_prompt_token"
    gate_weight: float = 10.0
    forget_weight: float | None = None
    retain_weight: float | None = None
    forget_loss: str = "ga"
    forget_loss_kwargs: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.0
    act_fn: str | None = None
    dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.layers, int):
            self.layers = [self.layers]
        if not isinstance(self.layers, Sequence) or not self.layers:
            raise ValueError(
                f"GRUNConfig needs at least one decoder layer to edit, got layers={self.layers!r}; e.g. "
                "layers=[20, 25, 31] for a 32-layer model (the paper's choice), or a few layers "
                "in the upper half of yours."
            )
        if any(isinstance(layer, bool) or not isinstance(layer, int) for layer in self.layers):
            raise ValueError(f"GRUNConfig.layers must be integers (decoder layer indices), got {self.layers!r}.")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"GRUNConfig.layers lists a layer twice: {self.layers!r}. Give each layer once.")
        self.layers = [int(layer) for layer in self.layers]
        if int(self.rank) < 1:
            raise ValueError(f"GRUNConfig.rank must be >= 1 (the paper uses 4), got {self.rank}.")
        self.rank = int(self.rank)
        if self.gate not in GATES:
            raise ValueError(f"Unknown GRUN gate {self.gate!r}; choose 'linear' (Linear(d, 1)) or 'mlp' (d-256-64-1).")
        self.gate_hidden_sizes = tuple(int(width) for width in self.gate_hidden_sizes)
        if self.gate == "mlp" and (not self.gate_hidden_sizes or min(self.gate_hidden_sizes) < 1):
            raise ValueError(f"gate_hidden_sizes must be positive widths, got {self.gate_hidden_sizes!r}.")
        if self.position not in POSITIONS:
            raise ValueError(
                f"Unknown GRUN position {self.position!r}: GRUN edits one position, the last prompt token "
                "(position='last_prompt_token')."
            )
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"Unknown GRUN forget_loss {self.forget_loss!r}; choose one of {list(FORGET_LOSSES)}.")
        if self.retain_weight is None:
            self.retain_weight = DEFAULT_RETAIN_WEIGHTS[self.forget_loss]
        if self.forget_weight is None:
            self.forget_weight = DEFAULT_FORGET_WEIGHTS[self.forget_loss]
        if self.gate_weight < 0 or self.retain_weight < 0 or self.forget_weight < 0:
            raise ValueError(
                f"forget_weight, gate_weight and retain_weight are loss weights and must be >= 0, got "
                f"forget_weight={self.forget_weight}, gate_weight={self.gate_weight}, "
                f"retain_weight={self.retain_weight}."
            )
        self.gate_weight = float(self.gate_weight)
        self.forget_weight = float(self.forget_weight)
        self.retain_weight = float(self.retain_weight)
        self.forget_loss_kwargs = parse_json_object("GRUNConfig.forget_loss_kwargs", self.forget_loss_kwargs)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GRUNConfig.dropout must be in [0, 1), got {self.dropout}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"GRUNConfig.dtype must be one of {list(DTYPES)}, got {self.dtype!r}.")

    def resolved_layers(self, num_layers: int) -> list[int]:
        """The layers as non-negative indices of a model with `num_layers` decoder layers (bad ones raise)."""
        resolved = []
        for layer in self.layers:
            if not -num_layers <= layer < num_layers:
                raise ValueError(
                    f"GRUN layer {layer} is out of range: the model has {num_layers} decoder layers "
                    f"(0..{num_layers - 1}, or -{num_layers}..-1 from the end). Fix GRUNConfig.layers."
                )
            resolved.append(layer % num_layers)
        if len(set(resolved)) != len(resolved):
            raise ValueError(
                f"GRUNConfig.layers {self.layers} name the same layer twice on a {num_layers}-layer model."
            )
        return resolved

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gate_hidden_sizes"] = list(self.gate_hidden_sizes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GRUNConfig:
        """Rebuild a config from `to_dict()`; unknown keys (e.g. from a newer version) raise a clear error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown GRUNConfig field(s) {unknown}; known fields: {sorted(known)}.")
        return cls(**dict(data))
