"""KL to the reference model on the retain set."""

from __future__ import annotations

import torch

from .base import LossContext, RetainLoss, masked_token_mean
from .registry import register_loss


@register_loss("kl")
class RetainKL(RetainLoss):
    """L_retain = KL(p_ref || p_theta) over the vocabulary at each retain answer token, averaged per answer then over
    the batch. Keeps the whole next-token distribution on retain data close to the model before unlearning (TOFU's
    "KL" baseline), not only the likelihood of the reference answer.
    """

    needs_ref_model = True

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        labels = ctx.labels("retain")
        mask = labels[:, 1:] != -100
        log_p = torch.log_softmax(ctx.logits("retain")[:, :-1].float(), dim=-1)
        log_p_ref = torch.log_softmax(ctx.ref_logits("retain")[:, :-1].float(), dim=-1)
        kl = (log_p_ref.exp() * (log_p_ref - log_p)).sum(dim=-1)
        return masked_token_mean(kl, mask)
