"""RMU: representation misdirection (WMDP paper), and its retain term `embed_diff`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..citations import Paper
from .base import ForgetLoss, LossContext, RetainLoss, at_least_float32, masked_token_mean
from .registry import register_loss


def _layer_hidden(ctx: LossContext, split: str, layer: int, reference: bool = False) -> torch.Tensor:
    # The residual stream at the output of decoder layer `layer`, before any final norm (open-unlearning's RMU reads
    # it with a forward hook on the layer), also when `layer` is the last one.
    n_layers = len(ctx.outputs(split).hidden_states) - 1
    if not 0 <= layer < n_layers:
        raise ValueError(
            f"RMU layer {layer} does not exist: the model has decoder layers 0..{n_layers - 1}. "
            "Set `layer` in the loss kwargs."
        )
    return ctx.layer_output(split, layer, reference=reference)


@register_loss("rmu")
class RMU(ForgetLoss):
    """L_forget = mean over answer tokens of ||h_l(x) - c * u||^2 / d at decoder layer l.

    Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning" (arXiv 2403.03218):
    steer the forget data's activations at one layer toward a fixed random direction u (a unit vector drawn
    uniformly from [0, 1)^d then normalised, reproducibly from the seed, saved with the run) scaled by c, which
    scrambles what later layers read. h_l is the residual stream at the output of decoder layer l, before any
    final norm. As open-unlearning's `compute_activation_loss`: squared distances averaged over the d hidden units,
    then over the answer tokens of each example, then over the batch (not affected by `token_average`). Pair with
    the `embed_diff` retain loss at the same layer, and train only a few modules around it (the paper updates the
    MLPs of layers l-2..l: `trainable_parameters` in UnlearningConfig).

    Args:
        layer: decoder layer (0-based) whose output is steered (default 7).
        steering_coeff: c (default 6.5, the paper's value for Zephyr-7B; smaller models often need less).
    """

    papers = (
        Paper(
            "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", "Li et al. 2024", "2403.03218"
        ),
    )

    needs_hidden_states = True

    def __init__(self, layer: int = 7, steering_coeff: float = 6.5):
        self.layer = int(layer)
        self.steering_coeff = float(steering_coeff)
        self._direction: torch.Tensor | None = None

    def setup(self, model: torch.nn.Module, seed: int) -> None:
        hidden_size = model.config.get_text_config().hidden_size
        generator = torch.Generator().manual_seed(seed)
        direction = torch.rand(hidden_size, generator=generator)
        self._direction = direction / direction.norm()

    @property
    def direction(self) -> torch.Tensor:
        if self._direction is None:
            raise RuntimeError("RMU's direction is drawn in setup(); the trainer calls it before training.")
        return self._direction

    def state_dict(self) -> dict[str, Any]:
        return {"direction": self.direction.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._direction = torch.as_tensor(state["direction"]).float()

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        hidden = at_least_float32(_layer_hidden(ctx, "forget", self.layer))
        target = self.steering_coeff * self.direction.to(hidden.device)
        mask = ctx.labels("forget") != -100
        return masked_token_mean((hidden - target).pow(2).mean(dim=-1), mask)


@register_loss("embed_diff")
class EmbeddingDifference(RetainLoss):
    """L_retain = mean over retain answer tokens of ||h_l,theta(x) - h_l,ref(x)||^2 / d at decoder layer l.

    RMU's retain term (Li et al. 2024): keep the retain data's activations where the model before unlearning had
    them. Use the same `layer` as the `rmu` forget loss.

    Args:
        layer: decoder layer (0-based), default 7.
    """

    papers = RMU.papers

    needs_ref_model = True
    needs_hidden_states = True

    def __init__(self, layer: int = 7):
        self.layer = int(layer)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        hidden = at_least_float32(_layer_hidden(ctx, "retain", self.layer))
        ref_hidden = at_least_float32(_layer_hidden(ctx, "retain", self.layer, reference=True))
        mask = ctx.labels("retain") != -100
        return masked_token_mean((hidden - ref_hidden).pow(2).mean(dim=-1), mask)
