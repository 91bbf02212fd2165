"""hf_unlearn: machine unlearning for language models on the Hugging Face stack (trl, peft, accelerate)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .data import load_tofu
from .exceptions import NonFiniteLossError
from .losses import ForgetLoss, LossContext, RetainLoss, get_loss, list_losses, register_loss

__version__ = "0.2.0.dev0"

# trl and its trainer stack take seconds to import: load them on first use, so that `hf_unlearn.evaluation`,
# the losses and the CLI's --help stay quick.
_LAZY = {
    "UnlearningConfig": "hf_unlearn.config",
    "UnlearningTrainer": "hf_unlearn.trainer",
    "create_trainer": "hf_unlearn.trainer",
}

if TYPE_CHECKING:
    from .config import UnlearningConfig
    from .trainer import UnlearningTrainer, create_trainer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_unlearn' has no attribute {name!r}")


__all__ = [
    "ForgetLoss",
    "LossContext",
    "NonFiniteLossError",
    "RetainLoss",
    "UnlearningConfig",
    "UnlearningTrainer",
    "create_trainer",
    "get_loss",
    "list_losses",
    "load_tofu",
    "register_loss",
]
