"""Unlearning methods, one declaration per kind of unlearned model (see [`registry`]); importing this package
registers the built-in kinds: GRUN, peft adapters, and full weights (the default, recognised last)."""

from __future__ import annotations

from .full import FULL
from .grun import GRUN
from .peft import PEFT
from .registry import (
    REFERENCE_ADAPTERS_OFF,
    REFERENCE_FROZEN_COPY,
    UnlearningMethod,
    answer_forward_kwargs,
    get_method,
    list_methods,
    method_for_config,
    method_of_folder,
    method_of_model,
    method_of_state,
    prompt_lengths_from_labels,
    register_method,
)

__all__ = [
    "FULL",
    "GRUN",
    "PEFT",
    "REFERENCE_ADAPTERS_OFF",
    "REFERENCE_FROZEN_COPY",
    "UnlearningMethod",
    "answer_forward_kwargs",
    "get_method",
    "list_methods",
    "method_for_config",
    "method_of_folder",
    "method_of_model",
    "method_of_state",
    "prompt_lengths_from_labels",
    "register_method",
]
