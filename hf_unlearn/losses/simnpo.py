"""SimNPO: reference-free NPO on length-normalised likelihoods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..citations import Paper
from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("simnpo")
class SimNPO(ForgetLoss):
    """L_forget = -(2 / beta) * mean_batch log sigmoid(beta * (mean-NLL_theta(x, y) - delta)).

    Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning"
    (arXiv 2410.07163): NPO without a reference model, on the per-token mean NLL of each answer, with a reward margin
    delta inside the scaling, as OPTML's Unlearn-Simple and open-unlearning's `SimNPO` compute it.
    Minimising it raises the forget answers' mean NLL; as beta -> 0 its gradient tends to GA's on the mean NLL.
    The paper's TOFU setting weighs the forget term by 0.125: set `gamma=0.125` in UnlearningConfig.

    Args:
        beta: inverse temperature (default 4.5).
        delta: reward margin (default 0).
    """

    papers = (
        Paper(
            "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
            "Fan et al. 2024",
            "2410.07163",
        ),
    )

    def __init__(self, beta: float = 4.5, delta: float = 0.0):
        if beta <= 0:
            raise ValueError(f"SimNPO's beta must be > 0, got {beta}.")
        self.beta = float(beta)
        self.delta = float(delta)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return -(2.0 / self.beta) * F.logsigmoid(self.beta * (ctx.mean_nll("forget") - self.delta)).mean()
