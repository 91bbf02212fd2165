"""Unlearning losses: a registry of small classes, one file per method.

Add a loss by adding one file that subclasses [`ForgetLoss`] or [`RetainLoss`] and decorates it with
`@register_loss("name")`, then import it below (built-in) or anywhere before training (user losses).
"""

from ..modeling import find_decoder_layers
from .base import (
    IGNORE_INDEX,
    TOKEN_AVERAGES,
    ForgetLoss,
    LossContext,
    RetainLoss,
    UnlearningLoss,
    masked_token_mean,
    mean_nll,
    pooled_token_mean,
    sequence_nll,
    token_log_probs,
    token_mean,
)
from .registry import get_loss, list_losses, register_loss

# Built-in losses register themselves on import.
from . import ceu, dpo, ga, idk, kl, nll, none, npo, rmu, satimp, simnpo, tnpo, undial, wga  # noqa: E402,F401  isort: skip

__all__ = [
    "IGNORE_INDEX",
    "TOKEN_AVERAGES",
    "find_decoder_layers",
    "pooled_token_mean",
    "token_mean",
    "ForgetLoss",
    "LossContext",
    "RetainLoss",
    "UnlearningLoss",
    "get_loss",
    "list_losses",
    "masked_token_mean",
    "mean_nll",
    "register_loss",
    "sequence_nll",
    "token_log_probs",
]
