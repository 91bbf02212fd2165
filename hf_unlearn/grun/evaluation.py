"""TOFU evaluation of a GRUN model: the evaluator's scoring pass edits the last prompt token, as in training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..evaluation.tofu import TOFUEvaluator, run_tofu_evaluation
from .model import GRUNModel

__all__ = ["evaluate_tofu"]


def evaluate_tofu(
    model: GRUNModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | Path | None = None,
    retain_logs: str | Path | None = None,
    **evaluator_kwargs: Any,
) -> tuple[dict[str, Any], TOFUEvaluator]:
    """Run [`~hf_unlearn.evaluation.TOFUEvaluator`] on a GRUN model; returns `(summary, evaluator)`.

    The evaluator scores prompt + answer sequences without labels, so the model alone cannot tell where the prompt
    ends; every prompt of the evaluation is registered with [`GRUNModel.known_prompts`] for the run, and each scored
    sequence is edited at the end of its prompt. Generation needs nothing: the prompt is the whole input. This is
    [`~hf_unlearn.evaluation.tofu.run_tofu_evaluation`], which does the same for any model with `known_prompts`,
    restricted to GRUN models.

    Args:
        model: the GRUN model.
        tokenizer: its tokenizer.
        output_dir, retain_logs: as in `TOFUEvaluator.evaluate`.
        **evaluator_kwargs: passed to `TOFUEvaluator` (forget_split, data_dir, splits, max_questions, ...).
    """
    if not isinstance(model, GRUNModel):
        raise TypeError(f"evaluate_tofu expects a GRUNModel, got {type(model).__name__}; use TOFUEvaluator directly.")
    return run_tofu_evaluation(model, tokenizer, output_dir=output_dir, retain_logs=retain_logs, **evaluator_kwargs)
