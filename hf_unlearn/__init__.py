"""hf_unlearn: machine unlearning for language models on the Hugging Face stack (trl, peft, accelerate)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .exceptions import NonFiniteLossError

__version__ = "0.2.0.dev0"

# torch, datasets, trl and the trainer stack take seconds to import: load them on first use, so that the CLI's
# --help and its commands that read files only (tofu-summary) start at once, and `hf_unlearn.evaluation` and the
# losses without trl.
_LAZY = {
    "ForgetLoss": "hf_unlearn.losses",
    "LossContext": "hf_unlearn.losses",
    "RetainLoss": "hf_unlearn.losses",
    "get_loss": "hf_unlearn.losses",
    "list_losses": "hf_unlearn.losses",
    "register_loss": "hf_unlearn.losses",
    "load_tofu": "hf_unlearn.data",
    "UnlearningConfig": "hf_unlearn.config",
    "UnlearningTrainer": "hf_unlearn.trainer",
    "create_trainer": "hf_unlearn.trainer",
}

if TYPE_CHECKING:
    from .config import UnlearningConfig
    from .data import load_tofu
    from .losses import ForgetLoss, LossContext, RetainLoss, get_loss, list_losses, register_loss
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
