"""Gradient ascent (GA): push the forget answers' likelihood down."""

from __future__ import annotations

import torch

from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("ga")
class GradientAscent(ForgetLoss):
    """L_forget = -mean-NLL(x, y) over the forget batch.

    Minimising it ascends the NLL of the forget answers (Jang et al. 2023, "Knowledge Unlearning for Mitigating
    Privacy Risks in Language Models"; the GA baseline of TOFU). Each example weighs the same: the per-token mean
    is taken per answer, then over the batch.
    """

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return -ctx.mean_nll("forget").mean()
