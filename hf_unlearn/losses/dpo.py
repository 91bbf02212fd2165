"""IdkDPO: direct preference optimisation with a refusal as the preferred answer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..citations import Paper
from .base import ForgetLoss, LossContext
from .idk import IDK
from .registry import register_loss


@register_loss("dpo")
class IdkDPO(ForgetLoss):
    """L_forget = -(2 / beta) * mean_batch log sigmoid(beta * [(logp_w - logp_ref,w) - (logp_l - logp_ref,l)]).

    DPO (Rafailov et al. 2023) as used for unlearning in TOFU / NPO (Zhang et al. 2024): the winning answer w is a
    refusal ("I don't know", the `"idk"` split), the losing answer l the true forget answer; logp are sequence
    log-likelihoods (sums over answer tokens) and ref the model before unlearning.

    Args:
        beta: inverse temperature (default 0.1).
    """

    papers = (
        Paper(
            "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
            "Rafailov et al. 2023",
            "2305.18290",
        ),
        *IDK.papers,  # TOFU, which unlearns with DPO towards refusals
    )

    needs_ref_model = True
    needs_refusals = True

    def __init__(self, beta: float = 0.1):
        if beta <= 0:
            raise ValueError(f"DPO's beta must be > 0, got {beta}.")
        self.beta = float(beta)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        win_margin = ctx.ref_nll("idk") - ctx.nll("idk")  # logp_w - logp_ref,w
        lose_margin = ctx.ref_nll("forget") - ctx.nll("forget")  # logp_l - logp_ref,l
        return -(2.0 / self.beta) * F.logsigmoid(self.beta * (win_margin - lose_margin)).mean()
