"""Gradient ascent (GA): push the forget answers' likelihood down."""

from __future__ import annotations

import torch

from ..citations import Paper
from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("ga")
class GradientAscent(ForgetLoss):
    """L_forget = -(cross-entropy of the forget answer tokens).

    Minimising it ascends the NLL of the forget answers (Jang et al. 2023, "Knowledge Unlearning for Mitigating
    Privacy Risks in Language Models"; the GA baseline of TOFU). The token average follows
    `UnlearningConfig.token_average`: pooled over the batch's answer tokens by default, i.e. `-outputs.loss` as
    locuslab/open-unlearning's `GradAscent` and locuslab/tofu's `grad_ascent` compute it.
    """

    papers = (
        Paper(
            "Knowledge Unlearning for Mitigating Privacy Risks in Language Models", "Jang et al. 2023", "2210.01504"
        ),
    )

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return -ctx.token_nll("forget")
