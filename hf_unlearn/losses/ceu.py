"""CE-U: cross entropy against the model's own distribution without the true token."""

from __future__ import annotations

import torch

from .base import ForgetLoss, LossContext, masked_token_mean
from .registry import register_loss


@register_loss("ceu")
class CEU(ForgetLoss):
    """L_forget = mean_t CE(softmax(stopgrad(logits_t) with logit[y_t] = -inf), p_theta,t).

    Yang et al. 2025, "CE-U: Cross Entropy Unlearning" (arXiv 2503.01224): the target is the model's own
    (detached) prediction with the true token removed, a bounded alternative to GA whose gradient vanishes when the
    true token's probability reaches 0.
    """

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        labels = ctx.labels("forget")[:, 1:]
        mask = labels != -100
        logits = ctx.logits("forget")[:, :-1].float()
        true_token = torch.nn.functional.one_hot(labels.masked_fill(~mask, 0), logits.shape[-1]).bool()
        target = torch.softmax(logits.detach().masked_fill(true_token, float("-inf")), dim=-1)
        log_p = torch.log_softmax(logits, dim=-1)
        # 0 * log p where the target is 0 (the true token): avoid 0 * -inf = nan
        return masked_token_mean(-(target * log_p).nan_to_num(0.0).sum(dim=-1), mask)
