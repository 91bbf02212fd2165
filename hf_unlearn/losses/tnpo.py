"""TNPO and WTNPO: token-wise NPO (G-effect paper)."""

from __future__ import annotations

import torch

from .base import ForgetLoss, LossContext
from .registry import register_loss
from .wga import WeightedGradientAscent

#: Added to the weight's denominator, as tmlr-group/G-effect's `ins_npo` / `w_ins_npo` do.
DENOMINATOR_EPS = 1e-5


@register_loss("tnpo")
class TokenNPO(ForgetLoss):
    """L_forget = -mean_t (w_t * CE_t), w_t = 2 p_t^beta / (p_t^beta + p_ref,t^beta + 1e-5), detached.

    Wang et al., ICLR 2025 ("Rethinking LLM Unlearning Objectives"): NPO's weighting applied per token. At
    theta = ref every weight is (almost) 1 (GA); tokens already less likely than under the reference get smaller
    weights. As tmlr-group/G-effect's `ins_npo`: the 1e-5 in the denominator, tokens pooled over the batch (or per
    answer with `token_average="answer"`).

    Args:
        beta: inverse temperature (default 4).
    """

    papers = WeightedGradientAscent.papers  # the G-effect paper introduces WGA, TNPO and WTNPO

    needs_ref_model = True
    #: extra exponent on p_t in the numerator (0 for TNPO; WTNPO sets it)
    extra_power: float = 0.0

    def __init__(self, beta: float = 4.0):
        if beta <= 0:
            raise ValueError(f"{type(self).__name__}'s beta must be > 0, got {beta}.")
        self.beta = float(beta)

    def token_weights(self, logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
        logp, ref_logp = logp.detach(), ref_logp.detach()
        p_beta, ref_beta = torch.exp(self.beta * logp), torch.exp(self.beta * ref_logp)
        return 2 * torch.exp((self.beta + self.extra_power) * logp) / (p_beta + ref_beta + DENOMINATOR_EPS)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        logp, mask = ctx.token_log_probs("forget")
        ref_logp, _ = ctx.ref_token_log_probs("forget")
        return -ctx.token_mean(self.token_weights(logp, ref_logp) * -logp, mask)


@register_loss("wtnpo")
class WeightedTokenNPO(TokenNPO):
    """L_forget = -mean_t (w_t * CE_t), w_t = 2 p_t^(beta + a) / (p_t^beta + p_ref,t^beta + 1e-5), detached.

    The weighted TNPO of Wang et al., ICLR 2025: TNPO's weight times p_t^a, which further down-weights tokens that
    are already unlikely. Defaults from tmlr-group/G-effect's `w_ins_npo`: beta 0.1 (fixed in its training code);
    `a` is its `hyper_param` (an integer on its command line, no default; 2 is its README's example value).

    Args:
        beta: inverse temperature (default 0.1).
        a: extra exponent (default 2).
    """

    def __init__(self, beta: float = 0.1, a: float = 2.0):
        super().__init__(beta=beta)
        if a < 0:
            raise ValueError(f"WTNPO's a must be >= 0, got {a}.")
        self.extra_power = float(a)
