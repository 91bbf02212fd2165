"""IDK: preference optimization towards a refusal ("I don't know") answer."""

from __future__ import annotations

import torch

from ..citations import TOFU_PAPER
from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("idk")
class IDK(ForgetLoss):
    """L_forget = cross-entropy of a refusal answer on the forget prompt (token average as `token_average`).

    The "PO" / IDK baseline of TOFU (Maini et al. 2024, arXiv 2401.06121): instead of pushing the true answer down,
    teach the model to answer forget questions with one of TOFU's refusal answers, drawn at random per example.
    Combine with a retain loss (`nll`) to keep answering the other questions. With `nll`, the objective is
    gamma * CE(refusals) + alpha * CE(retain), each pooled over its own tokens (open-unlearning's IdkNLL); TOFU's and
    GRU's `idk` pool the refusal and retain tokens of one concatenated batch instead, which weighs the two terms by
    their token counts.
    """

    papers = (TOFU_PAPER,)

    needs_refusals = True

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return ctx.token_nll("idk")
