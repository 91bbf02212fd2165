"""Tokenizing forget / retain datasets into prompt and answer ids, with checks that name the bad row."""

from __future__ import annotations

from datasets import Dataset
from transformers.utils import logging

from .formatting import ColumnLayout, PromptEncoder

logger = logging.get_logger(__name__)

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
    text_key: str = "text",
    max_length: int | None = None,
    num_proc: int | None = None,
) -> Dataset:
    """Tokenize a forget or retain dataset into `prompt_ids`, `answer_ids` and `row_index` columns.

    Text rows (a `text_key` column, no question/answer) are trained on whole: the prompt is only the BOS token the
    tokenizer adds (if any) and the answer is the text and EOS. A text longer than `max_length` becomes several
    consecutive examples ("chunks") of at most `max_length` tokens, each starting with the BOS token, the last
    ending with EOS; `row_index` then numbers the chunks.

    Empty or blank texts (raw corpora such as wikitext have many) are dropped, with a warning that counts them.

    Raises a clear error for an empty dataset, unknown columns, or a prompt too long to leave an answer token.
    """
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"The {name} is empty: unlearning needs at least one example in it.")
    layout = ColumnLayout.detect(dataset.column_names, question_key, answer_key, dataset_name=name, text_key=text_key)
    if layout.kind == "text":
        return _prepare_text(dataset, encoder, layout, name=name, max_length=max_length, num_proc=num_proc)

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


def _prepare_text(
    dataset: Dataset,
    encoder: PromptEncoder,
    layout: ColumnLayout,
    *,
    name: str,
    max_length: int | None,
    num_proc: int | None,
) -> Dataset:
    """Text rows into (possibly several) examples each: see [`prepare_dataset`]."""

    kept = dataset.filter(
        lambda text: bool(str(text).strip()),
        input_columns=[layout.prompt_key],
        num_proc=num_proc,
        desc=f"Dropping the {name}'s empty texts",
    )
    if len(kept) == 0:
        raise ValueError(f"Every row of the {name} has an empty {layout.prompt_key!r}: there is no text to train on.")
    if len(kept) < len(dataset):
        dropped = len(dataset) - len(kept)
        logger.warning(
            f"Dropped {dropped} of the {len(dataset)} rows of the {name}: their {layout.prompt_key!r} is empty."
        )
    dataset = kept

    def encode(batch: dict) -> dict:
        chunks: dict[str, list[list[int]]] = {PROMPT_IDS: [], ANSWER_IDS: []}
        for offset in range(len(batch[layout.prompt_key])):
            prompt, text = layout.split({key: values[offset] for key, values in batch.items()})
            prompt_ids, answer_ids = encoder.encode(prompt, text)
            room = len(answer_ids) if max_length is None else max_length - len(prompt_ids)
            if room <= 0:
                raise ValueError(f"max_length={max_length} leaves no room for text after the BOS token; raise it.")
            for start in range(0, len(answer_ids), room):
                chunks[PROMPT_IDS].append(prompt_ids)
                chunks[ANSWER_IDS].append(answer_ids[start : start + room])
        return chunks

    encoded = dataset.map(
        encode,
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing the {name}",
    )
    return encoded.map(lambda _, index: {ROW_INDEX: index}, with_indices=True, desc=f"Numbering the {name}'s chunks")
