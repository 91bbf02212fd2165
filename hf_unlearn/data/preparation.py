"""Tokenizing forget / retain datasets into prompt and answer ids, with checks that name the bad row."""

from __future__ import annotations

from datasets import Dataset

from .formatting import ColumnLayout, PromptEncoder

PROMPT_IDS = "prompt_ids"
ANSWER_IDS = "answer_ids"
ROW_INDEX = "row_index"


def truncate_answer(prompt_ids: list[int], answer_ids: list[int], max_length: int | None, where: str) -> list[int]:
    """Cut the answer so that prompt + answer fits `max_length`; an empty answer is an error naming `where`."""
    if max_length is not None and len(prompt_ids) >= max_length:
        raise ValueError(
            f"{where}: the prompt has {len(prompt_ids)} tokens, so truncating to max_length={max_length} would leave "
            "no answer token to train on. Raise `max_length` or shorten the prompt."
        )
    if max_length is not None:
        answer_ids = answer_ids[: max_length - len(prompt_ids)]
    if not answer_ids:
        raise ValueError(f"{where}: the answer is empty after tokenization; every example needs an answer.")
    return answer_ids


def prepare_dataset(
    dataset: Dataset,
    encoder: PromptEncoder,
    *,
    name: str,
    question_key: str = "question",
    answer_key: str = "answer",
    max_length: int | None = None,
    num_proc: int | None = None,
) -> Dataset:
    """Tokenize a forget or retain dataset into `prompt_ids`, `answer_ids` and `row_index` columns.

    Raises a clear error for an empty dataset, unknown columns, or a prompt too long to leave an answer token.
    """
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"The {name} is empty: unlearning needs at least one example in it.")
    layout = ColumnLayout.detect(dataset.column_names, question_key, answer_key, dataset_name=name)

    def encode(row: dict, index: int) -> dict:
        prompt, answer = layout.split(row)
        prompt_ids, answer_ids = encoder.encode(prompt, answer)
        answer_ids = truncate_answer(prompt_ids, answer_ids, max_length, f"Row {index} of the {name}")
        return {PROMPT_IDS: prompt_ids, ANSWER_IDS: answer_ids, ROW_INDEX: index}

    return dataset.map(
        encode,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing the {name}",
    )
