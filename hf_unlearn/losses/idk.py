"""IDK: preference optimization towards a refusal ("I don't know") answer."""

from __future__ import annotations

import torch

from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("idk")
class IDK(ForgetLoss):
    """L_forget = mean-NLL of a refusal answer on the forget prompt.

    The "PO" / IDK baseline of TOFU (Maini et al. 2024, arXiv 2401.06121): instead of pushing the true answer down,
    teach the model to answer forget questions with one of TOFU's refusal answers, drawn at random per example.
    Combine with a retain loss (`nll`) to keep answering the other questions.
    """

    needs_refusals = True

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return ctx.mean_nll("idk").mean()
