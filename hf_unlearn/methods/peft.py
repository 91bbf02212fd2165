"""A peft adapter on a frozen base model: its own reference with the adapters switched off (no copy)."""

from __future__ import annotations

from ..constants import ADAPTER_CONFIG_FILE
from .registry import REFERENCE_ADAPTERS_OFF, UnlearningMethod, register_method


def _unfreeze_active_adapter(model) -> None:
    """Gradients for the active adapter's parameters only."""
    adapter = model.active_adapter
    for name, param in model.named_parameters():
        param.requires_grad_(f".{adapter}." in name or name.endswith(f".{adapter}"))


PEFT = register_method(
    UnlearningMethod(
        kind="peft",
        marker_file=ADAPTER_CONFIG_FILE,
        noun="a peft adapter",
        description="a peft adapter, loaded on top of the base model",
        resave="model.save_pretrained(folder)  # peft saves adapter_model.safetensors by default",
        trainer="hf_unlearn.trainer.factory:build_unlearning_trainer",
        recorded_in=lambda state: bool(state.get("peft")),
        model_class="peft:PeftModel",
        config_class="peft:PeftConfig",
        reference=REFERENCE_ADAPTERS_OFF,
        unfreeze=_unfreeze_active_adapter,
        loader="hf_unlearn.methods.peft:attach_adapter",
        library_name="peft",
        tag="peft",
        base_model_note="The adapter was trained on a base model that is not on the Hub: pass it as `base_model`.",
    )
)


def attach_adapter(base_model, folder: str):
    """peft's `PeftModel.from_pretrained(base_model, folder)`."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, folder)
