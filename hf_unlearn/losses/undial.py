"""UNDIAL: self-distillation towards an adjusted reference distribution."""

from __future__ import annotations

import torch

from ..citations import Paper
from .base import IGNORE_INDEX, ForgetLoss, LossContext, at_least_float32
from .registry import register_loss

UNDIAL_POSITIONS = ("answer", "all")


@register_loss("undial")
class UNDIAL(ForgetLoss):
    """L_forget = mean_t CE(softmax(ref_logits_t - beta * onehot(y_t)), p_theta,t).

    Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language
    Models" (arXiv 2402.10052): the target is the reference model's next-token distribution with the true token's
    logit lowered by beta, so the model moves mass off the memorised token without GA's unbounded objective.

    `positions="answer"` (default) averages over the answer tokens as `token_average` says (pooled by default).
    `positions="all"` is locuslab/open-unlearning's `compute_undial_loss` exactly: the mean over every position of
    the padded batch (prompt and padding included, where the student is distilled towards the unadjusted teacher),
    and, as there, the label -100 of those positions indexes vocabulary id V - 100, whose logit is lowered too.

    Args:
        beta: logit reduction of the true token (default 10).
        positions: `"answer"` (default) or `"all"` (open-unlearning's averaging).
    """

    papers = (
        Paper(
            "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
            "Dong et al. 2024",
            "2402.10052",
        ),
    )

    needs_ref_model = True

    def __init__(self, beta: float = 10.0, positions: str = "answer"):
        if beta < 0:
            raise ValueError(f"UNDIAL's beta must be >= 0, got {beta}.")
        if positions not in UNDIAL_POSITIONS:
            raise ValueError(f"UNDIAL's positions must be one of {list(UNDIAL_POSITIONS)}, got {positions!r}.")
        self.beta = float(beta)
        self.positions = positions

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        labels = ctx.labels("forget")[:, 1:]
        mask = labels != IGNORE_INDEX
        ref_logits = at_least_float32(ctx.ref_logits("forget")[:, :-1])
        vocab = ref_logits.shape[-1]
        # "all": the reference's index -100 is Python's negative index, i.e. token V - 100
        index = labels.remainder(vocab) if self.positions == "all" else labels.masked_fill(~mask, 0)
        onehot = torch.nn.functional.one_hot(index, vocab)
        if self.positions == "answer":
            onehot = onehot * mask.unsqueeze(-1)
        target = torch.softmax(ref_logits - self.beta * onehot, dim=-1).detach()
        log_p = torch.log_softmax(at_least_float32(ctx.logits("forget")[:, :-1]), dim=-1)
        cross_entropy = -(target * log_p).sum(dim=-1)
        if self.positions == "all":
            return cross_entropy.mean()
        return ctx.token_mean(cross_entropy, mask)
