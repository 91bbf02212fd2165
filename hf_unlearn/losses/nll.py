"""NLL on the retain set: keep answering the retain questions (the 'GD' / 'GradDiff' retain term)."""

from __future__ import annotations

import torch

from .base import LossContext, RetainLoss
from .registry import register_loss


@register_loss("nll")
class RetainNLL(RetainLoss):
    """L_retain = cross-entropy of the retain answer tokens, averaged as `UnlearningConfig.token_average` says
    (pooled over the batch by default: HF's `outputs.loss`, open-unlearning's `GradDiff` NLL retain term)."""

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return ctx.token_nll("retain")
