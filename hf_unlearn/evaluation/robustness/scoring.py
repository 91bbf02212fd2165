"""What the robustness attacks measure: the forget answers' probability under a model, and the attack scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ...data import PromptEncoder
from ..model_io import resolve_pad_token_id
from ..scoring import score_answers

QAPairs = list[tuple[list[int], list[int]]]


def encode_qa(
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    *,
    question_key: str = "question",
    answer_key: str = "answer",
    use_chat_template: bool | None = None,
    what: str = "dataset",
) -> QAPairs:
    """`(prompt_ids, answer_ids)` of question/answer rows, encoded as for training and TOFU evaluation."""
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"The {what} is empty: the attack needs questions and answers.")
    columns = set(getattr(dataset, "column_names", None) or dataset[0].keys())
    missing = {question_key, answer_key} - columns
    if missing:
        raise ValueError(f"The {what} lacks the column(s) {sorted(missing)}; it has {sorted(columns)}.")
    encoder = PromptEncoder(tokenizer, use_chat_template)
    rows = dataset if not hasattr(dataset, "to_list") else dataset.to_list()
    return [encoder.encode([{"role": "user", "content": row[question_key]}], row[answer_key]) for row in rows]


def answer_probabilities(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: QAPairs, batch_size: int = 16
) -> np.ndarray:
    """TOFU's probability of each answer, exp(-mean NLL of its tokens) given its prompt (teacher forced, in eval
    mode; the model's mode is restored), by the one scoring path ([`~hf_unlearn.evaluation.scoring.score_answers`])."""
    pad = resolve_pad_token_id(tokenizer, owner="The robustness attack")
    was_training = model.training
    model.eval()
    try:
        return score_answers(model, pairs, pad_token_id=pad, batch_size=batch_size).probability
    finally:
        model.train(was_training)


def robustness_score(change_unlearned: float, change_reference: float) -> float:
    """1 - |a - b| / (|a| + |b|): 1 when the unlearned model's change under an attack equals the reference's (e.g. the
    retain model's, which never knew the data), towards 0 as they differ; 1 when neither changes."""
    denominator = abs(change_unlearned) + abs(change_reference)
    if denominator == 0:
        return 1.0
    return 1.0 - abs(change_unlearned - change_reference) / denominator


def stability_score(before: float, after: float) -> float:
    """Q = 1 - |after - before| / (|before| + |after|): 1 when an attack leaves the metric where it was."""
    return robustness_score(after, before)


def mean(values: Sequence[float] | np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else math.nan
