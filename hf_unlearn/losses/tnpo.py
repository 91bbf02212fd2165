"""TNPO and WTNPO: token-wise NPO (G-effect paper)."""

from __future__ import annotations

import torch

from .base import ForgetLoss, LossContext, masked_token_mean
from .registry import register_loss


@register_loss("tnpo")
class TokenNPO(ForgetLoss):
    """L_forget = -mean_t (w_t * CE_t), w_t = 2 p_t^beta / (p_t^beta + p_ref,t^beta), detached.

    Wang et al., ICLR 2025 ("Rethinking LLM Unlearning Objectives"): NPO's weighting applied per token. At
    theta = ref every weight is 1 (GA); tokens already less likely than under the reference get smaller weights.
    The weight is computed in log space (a sigmoid of beta * (log p_t - log p_ref,t)) for stability.

    Args:
        beta: inverse temperature (default 4).
    """

    needs_ref_model = True
    #: extra exponent on p_t in the numerator (0 for TNPO; WTNPO sets it)
    extra_power: float = 0.0

    def __init__(self, beta: float = 4.0):
        if beta <= 0:
            raise ValueError(f"{type(self).__name__}'s beta must be > 0, got {beta}.")
        self.beta = float(beta)

    def token_weights(self, logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
        # 2 p^b / (p^b + q^b) = 2 sigmoid(b (log p - log q)); times p^a for WTNPO
        weights = 2 * torch.sigmoid(self.beta * (logp - ref_logp)) * torch.exp(self.extra_power * logp)
        return weights.detach()

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        logp, mask = ctx.token_log_probs("forget")
        ref_logp, _ = ctx.ref_token_log_probs("forget")
        return -masked_token_mean(self.token_weights(logp, ref_logp) * -logp, mask)


@register_loss("wtnpo")
class WeightedTokenNPO(TokenNPO):
    """L_forget = -mean_t (w_t * CE_t), w_t = 2 p_t^(beta + a) / (p_t^beta + p_ref,t^beta), detached.

    The weighted TNPO of Wang et al., ICLR 2025: TNPO's weight times p_t^a, which further down-weights tokens that
    are already unlikely.

    Args:
        beta: inverse temperature (default 4).
        a: extra exponent (default 1.5).
    """

    def __init__(self, beta: float = 4.0, a: float = 1.5):
        super().__init__(beta=beta)
        if a < 0:
            raise ValueError(f"WTNPO's a must be >= 0, got {a}.")
        self.extra_power = float(a)
