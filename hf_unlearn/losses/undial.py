"""UNDIAL: self-distillation towards an adjusted reference distribution."""

from __future__ import annotations

import torch

from .base import ForgetLoss, LossContext
from .registry import register_loss


@register_loss("undial")
class UNDIAL(ForgetLoss):
    """L_forget = mean_t CE(softmax(ref_logits_t - beta * onehot(y_t)), p_theta,t).

    Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language
    Models" (arXiv 2402.10052): the target is the reference model's next-token distribution with the true token's
    logit lowered by beta, so the model moves mass off the memorised token without GA's unbounded objective.
    Averaged over the answer tokens as `token_average` says (pooled by default). open-unlearning's
    `compute_undial_loss` averages over every position of the padded batch instead, prompt and padding included
    (with the true-token index -100 wrapping to vocabulary id V - 100 there), which dilutes the answer tokens.

    Args:
        beta: logit reduction of the true token (default 10).
    """

    needs_ref_model = True

    def __init__(self, beta: float = 10.0):
        if beta < 0:
            raise ValueError(f"UNDIAL's beta must be >= 0, got {beta}.")
        self.beta = float(beta)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        labels = ctx.labels("forget")[:, 1:]
        mask = labels != -100
        ref_logits = ctx.ref_logits("forget")[:, :-1].float()
        onehot = torch.nn.functional.one_hot(labels.masked_fill(~mask, 0), ref_logits.shape[-1])
        target = torch.softmax(ref_logits - self.beta * onehot, dim=-1).detach()
        log_p = torch.log_softmax(ctx.logits("forget")[:, :-1].float(), dim=-1)
        return ctx.token_mean(-(target * log_p).sum(dim=-1), mask)
