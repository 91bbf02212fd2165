"""TOFU evaluation of a GRUN model: the evaluator's scoring pass edits the last prompt token, as in training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..evaluation.tofu import TOFUEvaluator
from .model import GRUNModel


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
    sequence is edited at the end of its prompt. Generation needs nothing: the prompt is the whole input.

    Args:
        model: the GRUN model.
        tokenizer: its tokenizer.
        output_dir, retain_logs: as in `TOFUEvaluator.evaluate`.
        **evaluator_kwargs: passed to `TOFUEvaluator` (forget_split, data_dir, splits, max_questions, ...).
    """
    if not isinstance(model, GRUNModel):
        raise TypeError(f"evaluate_tofu expects a GRUNModel, got {type(model).__name__}; use TOFUEvaluator directly.")
    evaluator = TOFUEvaluator(model, tokenizer, **evaluator_kwargs)
    prompts = [question.prompt_ids for questions in evaluator.questions.values() for question in questions]
    with model.known_prompts(prompts):
        summary = evaluator.evaluate(output_dir=output_dir, retain_logs=retain_logs)
    return summary, evaluator
