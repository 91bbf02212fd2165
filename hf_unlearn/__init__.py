"""hf_unlearn: machine unlearning for language models on the Hugging Face stack (trl, peft, accelerate)."""

from .config import UnlearningConfig
from .data import load_tofu
from .losses import ForgetLoss, LossContext, RetainLoss, get_loss, list_losses, register_loss
from .trainer import NonFiniteLossError, UnlearningTrainer

__version__ = "0.1.0.dev0"

__all__ = [
    "ForgetLoss",
    "LossContext",
    "NonFiniteLossError",
    "RetainLoss",
    "UnlearningConfig",
    "UnlearningTrainer",
    "get_loss",
    "list_losses",
    "load_tofu",
    "register_loss",
]
