"""Full weights: every parameter (or those `trainable_parameters` selects) is trained; the default kind."""

from __future__ import annotations

from .registry import REFERENCE_FROZEN_COPY, UnlearningMethod, register_method

FULL = register_method(
    UnlearningMethod(
        kind="full",
        marker_file="config.json",  # transformers' model configuration
        noun="full weights",
        description="full model weights",
        resave="model.save_pretrained(folder)  # transformers saves model.safetensors",
        trainer="hf_unlearn.trainer.factory:build_unlearning_trainer",
        recorded_in=lambda state: True,
        reference=REFERENCE_FROZEN_COPY,
    )
)
