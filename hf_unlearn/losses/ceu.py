"""CE-U: cross entropy against the model's own distribution without the true token."""

from __future__ import annotations

import torch

from ..citations import Paper
from .base import IGNORE_INDEX, ForgetLoss, LossContext, at_least_float32
from .registry import register_loss


def drop_first_answer_tokens(labels: torch.Tensor, n: int) -> torch.Tensor:
    """A copy of `labels` with the first `n` answer tokens of each row set to IGNORE_INDEX."""
    if n <= 0:
        return labels
    answer = labels != IGNORE_INDEX
    first = answer & (answer.long().cumsum(dim=-1) <= n)
    return labels.masked_fill(first, IGNORE_INDEX)


@register_loss("ceu")
class CEU(ForgetLoss):
    """L_forget = mean_t CE(softmax(stopgrad(logits_t) with logit[y_t] = -inf), p_theta,t).

    Yang et al. 2025, "CE-U: Cross Entropy Unlearning" (arXiv 2503.01224): the target is the model's own
    (detached) prediction with the true token removed, a bounded alternative to GA whose gradient vanishes when the
    true token's probability reaches 0. As open-unlearning's `CEU`, the first answer token of each answer is left
    out (`ignore_first_n_answer_tokens=1`), and tokens are averaged as `token_average` says (pooled by default).

    Args:
        ignore_first_n_answer_tokens: answer tokens left out at the start of each answer (default 1).
    """

    papers = (Paper("CE-U: Cross Entropy Unlearning", "Yang et al. 2025", "2503.01224"),)

    def __init__(self, ignore_first_n_answer_tokens: int = 1):
        if ignore_first_n_answer_tokens < 0:
            raise ValueError(f"ignore_first_n_answer_tokens must be >= 0, got {ignore_first_n_answer_tokens}.")
        self.ignore_first_n_answer_tokens = int(ignore_first_n_answer_tokens)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        labels = drop_first_answer_tokens(ctx.labels("forget"), self.ignore_first_n_answer_tokens)[:, 1:]
        mask = labels != IGNORE_INDEX
        logits = at_least_float32(ctx.logits("forget")[:, :-1])
        true_token = torch.nn.functional.one_hot(labels.masked_fill(~mask, 0), logits.shape[-1]).bool()
        target = torch.softmax(logits.detach().masked_fill(true_token, float("-inf")), dim=-1)
        log_p = torch.log_softmax(logits, dim=-1)
        # 0 * log p where the target is 0 (the true token): avoid 0 * -inf = nan
        return ctx.token_mean(-(target * log_p).nan_to_num(0.0).sum(dim=-1), mask)
