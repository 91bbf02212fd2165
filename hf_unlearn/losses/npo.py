"""Negative preference optimization (NPO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..citations import Paper
from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("npo")
class NPO(ForgetLoss):
    """L_forget = -(2 / beta) * mean_batch log sigmoid(beta * (NLL_theta(x, y) - NLL_ref(x, y))).

    Zhang et al. 2024, "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"
    (arXiv 2404.05868). NLL is the sequence sum over answer tokens; the reference is the model before unlearning.
    Sign check: log(pi_theta / pi_ref) = NLL_ref - NLL_theta, so at theta = ref the loss is (2 / beta) ln 2 and its
    gradient is the gradient of -mean_batch NLL_theta (GA on the sequence NLL); the NPO gradient is that GA gradient
    weighted by 2 pi^beta / (pi^beta + pi_ref^beta), which vanishes as the forget answers become unlikely.

    Args:
        beta: inverse temperature (default 0.1).
    """

    papers = (
        Paper(
            "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
            "Zhang et al. 2024",
            "2404.05868",
        ),
    )

    needs_ref_model = True

    def __init__(self, beta: float = 0.1):
        if beta <= 0:
            raise ValueError(f"NPO's beta must be > 0, got {beta}.")
        self.beta = float(beta)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        log_ratio_gap = ctx.nll("forget") - ctx.ref_nll("forget")
        return -(2.0 / self.beta) * F.logsigmoid(self.beta * log_ratio_gap).mean()
