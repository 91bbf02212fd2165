"""`create_trainer`: the trainer of an unlearning job, as the method of its config declares it
([`hf_unlearn.methods`]): full weights, a peft adapter, GRUN modules, or a registered kind of your own."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from ..config import UnlearningConfig
from ..methods import method_for_config
from .core import UnlearningTrainer

__all__ = ["build_unlearning_trainer", "create_trainer"]


def build_unlearning_trainer(
    model: str | PreTrainedModel | torch.nn.Module,
    args: UnlearningConfig | None,
    peft_config: Any | None = None,
    **kwargs: Any,
) -> UnlearningTrainer:
    """The trainer builder of the `full` and `peft` methods: an [`UnlearningTrainer`] of `model` (with
    `peft_config`: of a new adapter on it)."""
    return UnlearningTrainer(model=model, args=args, peft_config=peft_config, **kwargs)


def create_trainer(
    model: str | PreTrainedModel | torch.nn.Module,
    args: UnlearningConfig | None = None,
    method_config: Any | None = None,
    *,
    peft_config: Any | None = None,
    grun_config: Any | None = None,
    **kwargs: Any,
) -> UnlearningTrainer:
    """The trainer of an unlearning job, built by the method its config asks for.

    ```python
    create_trainer(model, args, **data)                         # full weights: an UnlearningTrainer
    create_trainer(model, args, LoraConfig(r=8), **data)        # a peft adapter on the frozen model
    create_trainer(model, args, GRUNConfig(layers=[...]), **data)  # GRUN: a GRUNTrainer of get_grun_model(...)
    ```

    Args:
        model: a model id or path, or a model.
        args: the [`UnlearningConfig`].
        method_config: the config of the method (a peft config, a `GRUNConfig`, or the config class of a method
            registered with [`hf_unlearn.methods.register_method`]); None trains the full weights.
        peft_config, grun_config: the same, by the names trl's trainers and earlier releases use; give one config.
        **kwargs: go to the trainer (datasets, tokenizer, callbacks, ...).

    GRUN's modules are initialised from the training seed (they are created before the trainer seeds anything).
    """
    configs = [config for config in (method_config, peft_config, grun_config) if config is not None]
    if len(configs) > 1:
        names = ", ".join(type(config).__name__ for config in configs)
        raise ValueError(
            f"create_trainer got several method configs ({names}): a job trains one method (GRUN trains gated edits "
            "on the frozen model and cannot be combined with a peft adapter). Give one config."
        )
    config = configs[0] if configs else None
    return method_for_config(config).build_trainer(model, args, config, **kwargs)
