"""No retain loss."""

from __future__ import annotations

import torch

from .base import LossContext, RetainLoss
from .registry import register_loss


@register_loss("none")
class NoRetainLoss(RetainLoss):
    """L_retain = 0: forget only (plain GA, NPO, ...). The trainer then runs no retain forward at all."""

    uses_retain_data = False

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return torch.zeros((), device=ctx.batch("forget")["input_ids"].device)
