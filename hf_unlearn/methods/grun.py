"""GRUN (Ren et al. 2025, arXiv 2502.17823): gated ReFT edits of the frozen model at the last prompt token.

What sets it apart from the other kinds: a teacher-forced forward of `prompt + answer` must be told where each
prompt ends (the edit lands on the last prompt token, as in training), and its reference is the same model with the
edits switched off.
"""

from __future__ import annotations

from typing import Any

import torch

from ..citations import GRUN_PAPER
from ..constants import GRUN_CONFIG_FILE
from .registry import REFERENCE_ADAPTERS_OFF, UnlearningMethod, register_method


def last_prompt_token(prompt_lengths: torch.Tensor) -> dict[str, Any]:
    """GRUN edits the last prompt token of each right-padded row: `intervention_positions = prompt_length - 1`."""
    return {"intervention_positions": (prompt_lengths.long() - 1).clamp(min=0)}


def _unfreeze_newest_request(model: torch.nn.Module) -> None:
    """Gradients for the newest request's gated modules (what a GRUN run trains)."""
    for module in model.trainable_modules():
        module.requires_grad_(True)


GRUN = register_method(
    UnlearningMethod(
        kind="grun",
        marker_file=GRUN_CONFIG_FILE,
        noun="GRUN modules",
        description="GRUN modules (a gate and ReFT interventions), attached to the frozen base model",
        resave="save the GRUN modules again with hf_unlearn.grun (safetensors)",
        trainer="hf_unlearn.grun.trainer:build_grun_trainer",
        recorded_in=lambda state: state.get("method") == "grun",
        model_class="hf_unlearn.grun.model:GRUNModel",
        config_class="hf_unlearn.grun.config:GRUNConfig",
        reference=REFERENCE_ADAPTERS_OFF,
        scoring_inputs=last_prompt_token,
        unfreeze=_unfreeze_newest_request,
        loader="hf_unlearn.grun:load_grun_model",
        tag="grun",
        papers=(GRUN_PAPER,),
        per_request=True,
    )
)
