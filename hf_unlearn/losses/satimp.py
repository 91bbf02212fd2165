"""SatImp: saturation and importance weighted token unlearning."""

from __future__ import annotations

import torch

from ..citations import Paper
from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("satimp")
class SatImp(ForgetLoss):
    """L_forget = -mean_t (p_t^b1 * (1 - p_t)^b2 * CE_t), weights detached.

    Yang et al. 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning" (ICML 2025): the
    saturation factor p_t^b1 down-weights tokens already forgotten, the importance factor (1 - p_t)^b2 down-weights
    tokens the model is certain of (often generic words). Tokens are averaged as `token_average` says (pooled by
    default, as open-unlearning's `compute_satimp_loss`).

    Args:
        b1: saturation exponent (default 5).
        b2: importance exponent (default 1).
    """

    papers = (
        Paper(
            "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", "Yang et al., ICML 2025", "2505.11953"
        ),
    )

    def __init__(self, b1: float = 5.0, b2: float = 1.0):
        if b1 < 0 or b2 < 0:
            raise ValueError(f"SatImp's exponents must be >= 0, got b1={b1}, b2={b2}.")
        self.b1 = float(b1)
        self.b2 = float(b2)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        logp, mask = ctx.token_log_probs("forget")
        p = logp.exp()
        weights = (p.pow(self.b1) * (1 - p).clamp(min=0).pow(self.b2)).detach()
        return -ctx.token_mean(weights * -logp, mask)
