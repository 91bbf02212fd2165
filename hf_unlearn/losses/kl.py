"""KL to the reference model on the retain set."""

from __future__ import annotations

import torch

from .base import LossContext, RetainLoss, at_least_float32
from .registry import register_loss

KL_POSITIONS = ("all", "answer")


@register_loss("kl")
class RetainKL(RetainLoss):
    """L_retain = KL(p_ref || p_theta) of the next-token distributions on the retain batch.

    Keeps the whole next-token distribution on retain data close to the model before unlearning (TOFU's "KL"
    baseline), not only the likelihood of the reference answer. By default (`positions="all"`) as TOFU's and
    locuslab/open-unlearning's `compute_kl_divergence`: `kl_div(..., reduction="batchmean")` over the logits of every
    position of the padded batch (prompt, answer and padding; rows = batch x length), i.e. the sum of the per-position
    KLs divided by the number of positions. The padding positions count too, so the value depends on how a batch is
    padded (and, under data parallelism, split). `positions="answer"` takes the answer tokens only, averaged as
    `token_average` says.

    Args:
        positions: `"all"` (default, the reference) or `"answer"`.
    """

    needs_ref_model = True

    def __init__(self, positions: str = "all"):
        if positions not in KL_POSITIONS:
            raise ValueError(f"KL's positions must be one of {list(KL_POSITIONS)}, got {positions!r}.")
        self.positions = positions

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        log_p = torch.log_softmax(at_least_float32(ctx.logits("retain")), dim=-1)
        log_p_ref = torch.log_softmax(at_least_float32(ctx.ref_logits("retain")), dim=-1)
        kl = (log_p_ref.exp() * (log_p_ref - log_p)).sum(dim=-1)  # [batch, length]
        if self.positions == "all":
            return kl.mean()
        mask = ctx.labels("retain")[:, 1:] != -100
        return ctx.token_mean(kl[:, :-1], mask)
