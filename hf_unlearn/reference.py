"""The reference model ("the model before unlearning") that NPO, DPO, KL, TNPO, UNDIAL and embed_diff read: one
policy for the trainer and the G-effect analysis.

With no reference given, the model's method decides ([`hf_unlearn.methods`]): a peft or GRUN model is its own
reference with its adapters (edits) switched off, so no copy is made; any other model is deep-copied once and frozen.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import torch

from .methods import REFERENCE_ADAPTERS_OFF, REFERENCE_FROZEN_COPY, get_method, method_for_config, method_of_model

__all__ = [
    "REFERENCE_ADAPTERS_OFF",
    "REFERENCE_FROZEN_COPY",
    "default_reference_mode",
    "freeze",
    "frozen_copy",
    "independent_copy",
    "is_peft_model",
    "remove_forward_patch",
]


def is_peft_model(model: Any) -> bool:
    """Whether `model` is a peft model (the registered `"peft"` kind)."""
    return get_method("peft").is_model(model)


def default_reference_mode(model: torch.nn.Module, method_config: Any | None = None) -> str:
    """How NPO-like losses get the model before unlearning when no reference is given, as the model's method
    declares it ([`hf_unlearn.methods.UnlearningMethod.reference`]): `REFERENCE_ADAPTERS_OFF` for a peft or GRUN
    model (or one that will get a peft or GRUN config), else `REFERENCE_FROZEN_COPY`."""
    if method_config is not None:
        return method_for_config(method_config).reference
    return method_of_model(model).reference


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Evaluation mode and no gradients, in place; returns the model."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def remove_forward_patch(model: torch.nn.Module) -> torch.nn.Module:
    """Undo a forward that closes over the model's own bound forward (trl's `add_fused_lm_head`, which trl's
    SFTTrainer applies to the model it trains): such a closure survives `copy.deepcopy` still bound to the ORIGINAL
    model, so a copy (a frozen reference, a quantized or relearned copy) would run the original's weights. The plain
    forward returns the same logits; hf_unlearn's losses and evaluations read those. In place; returns the model."""
    for module in model.modules():
        while True:  # a model patched twice (trained by two trl trainers) has nested closures
            func = getattr(module.__dict__.get("forward"), "__func__", None)
            freevars = getattr(getattr(func, "__code__", None), "co_freevars", ())
            if "original_forward" not in freevars:
                break
            original = func.__closure__[freevars.index("original_forward")].cell_contents
            original_func = getattr(original, "__func__", None)
            # in a copy the closure's method is still bound to the original model: rebind its function to this one
            if original_func is None or original_func is type(module).forward:
                del module.__dict__["forward"]
            else:
                module.forward = types.MethodType(original_func, module)
    return model


def independent_copy(model: torch.nn.Module) -> torch.nn.Module:
    """`copy.deepcopy(model)` whose forward runs its own weights (see [`remove_forward_patch`])."""
    return remove_forward_patch(copy.deepcopy(model))


def frozen_copy(model: torch.nn.Module, how_to_avoid: str = "") -> torch.nn.Module:
    """A frozen deep copy of `model`; a model that cannot be copied (quantized, or failing to) raises a ValueError
    that ends with `how_to_avoid`."""
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise ValueError(f"A quantized model cannot be copied to serve as the frozen reference. {how_to_avoid}")
    try:
        reference = independent_copy(model)
    except Exception as err:  # noqa: BLE001  (any copy failure gets the same advice)
        raise ValueError(
            f"The model could not be copied to build the frozen reference ({err}). {how_to_avoid}"
        ) from err
    return freeze(reference)
