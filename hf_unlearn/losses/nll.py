"""NLL on the retain set: keep answering the retain questions (the 'GD' / 'GradDiff' retain term)."""

from __future__ import annotations

import torch

from .base import LossContext, RetainLoss
from .registry import register_loss


@register_loss("nll")
class RetainNLL(RetainLoss):
    """L_retain = mean-NLL(x, y) over the retain batch (per-token mean per answer, then over the batch)."""

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return ctx.mean_nll("retain").mean()
