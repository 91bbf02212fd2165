"""WGA: weighted gradient ascent (G-effect paper)."""

from __future__ import annotations

import torch

from ..citations import Paper
from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("wga")
class WeightedGradientAscent(ForgetLoss):
    """L_forget = -mean_t (w_t * CE_t) with w_t = p_t^beta, detached.

    Wang et al., ICLR 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond": GA's
    gradient weighs each token by 1 / p_t, so already-unlikely tokens dominate and retention suffers; weighting the
    token losses by p_t^beta removes that bias. beta = 0 is GA. Tokens are averaged as `token_average` says
    (pooled over the batch by default, as tmlr-group/G-effect's `wga` and open-unlearning's `compute_wga_loss`).

    Args:
        beta: weight exponent (default 1, open-unlearning's WGA config).
    """

    papers = (
        Paper(
            "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
            "Wang et al., ICLR 2025",
            "2502.19301",
        ),
    )

    def __init__(self, beta: float = 1.0):
        if beta < 0:
            raise ValueError(f"WGA's beta must be >= 0, got {beta}.")
        self.beta = float(beta)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        logp, mask = ctx.token_log_probs("forget")
        weights = torch.exp(self.beta * logp).detach()
        return -ctx.token_mean(weights * -logp, mask)
