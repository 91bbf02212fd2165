"""Tokenizing forget / retain datasets into prompt and answer ids, with checks that name the bad row."""

from __future__ import annotations

from datasets import Dataset
from transformers.utils import logging

from .formatting import ColumnLayout, InvalidRowError, PromptEncoder

logger = logging.get_logger(__name__)

PROMPT_IDS = "prompt_ids"
ANSWER_IDS = "answer_ids"
ROW_INDEX = "row_index"
_TOKENS_CUT = "tokens_cut"  # a temporary column: answer tokens truncation removed from the row

#: What `prepare_dataset` does with a row whose prompt or answer is missing or not text.
INVALID_ROW_ACTIONS = ("error", "drop")


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
    invalid_rows: str = "error",
) -> Dataset:
    """Tokenize a forget or retain dataset into `prompt_ids`, `answer_ids` and `row_index` columns.

    A row whose prompt or answer is missing (None, NaN, an empty CSV cell, a missing JSON key), not text (bytes, a
    list) or empty is refused with its row number and column (`invalid_rows="error"`), or dropped with a warning
    that counts them (`"drop"`): it is never trained on as the text "None" or "nan". Answers that `max_length` cuts
    (losing their end token) are counted in one warning.

    Text rows (a `text_key` column, no question/answer) are trained on whole: the prompt is only the BOS token the
    tokenizer adds (if any) and the answer is the text and EOS. A text longer than `max_length` becomes several
    consecutive examples ("chunks") of at most `max_length` tokens, each starting with the BOS token, the last
    ending with EOS; `row_index` then numbers the chunks.

    Empty or blank texts (raw corpora such as wikitext have many) are dropped, with a warning that counts them.

    Raises a clear error for an empty dataset, unknown columns, or a prompt too long to leave an answer token.
    """
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"The {name} is empty: unlearning needs at least one example in it.")
    if invalid_rows not in INVALID_ROW_ACTIONS:
        raise ValueError(f"invalid_rows must be one of {list(INVALID_ROW_ACTIONS)}, got {invalid_rows!r}.")
    layout = ColumnLayout.detect(dataset.column_names, question_key, answer_key, dataset_name=name, text_key=text_key)
    if layout.kind == "text":
        dataset = _drop_blank_texts(dataset, layout, name=name, num_proc=num_proc)
    if invalid_rows == "drop":
        dataset = _drop_invalid_rows(dataset, layout, name=name, num_proc=num_proc)
    if layout.kind == "text":
        return _prepare_text(dataset, encoder, layout, name=name, max_length=max_length, num_proc=num_proc)

    def encode(row: dict, index: int) -> dict:
        prompt, answer = _split(layout, row, index, name)
        prompt_ids, answer_ids = encoder.encode(prompt, answer)
        kept = truncate_answer(prompt_ids, answer_ids, max_length, f"Row {index} of the {name}")
        return {PROMPT_IDS: prompt_ids, ANSWER_IDS: kept, ROW_INDEX: index, _TOKENS_CUT: len(answer_ids) - len(kept)}

    encoded = dataset.map(
        encode,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing the {name}",
    )
    cut = encoded[_TOKENS_CUT]
    if any(cut):
        logger.warning(
            f"{sum(1 for c in cut if c)} of the {len(cut)} answers of the {name} are longer than max_length="
            f"{max_length} allows: {sum(cut)} answer tokens were cut, their end-of-answer token included. Raise "
            "`max_length` to train on whole answers."
        )
    return encoded.remove_columns(_TOKENS_CUT)


def _split(layout: ColumnLayout, row: dict, index: int, name: str) -> tuple:
    try:
        return layout.split(row)
    except InvalidRowError as err:
        raise ValueError(
            f"Row {index} of the {name}: {err}. Fix or remove the row, or set `invalid_rows='drop'` in "
            "UnlearningConfig to skip such rows (with a warning that counts them)."
        ) from err


def _drop_invalid_rows(dataset: Dataset, layout: ColumnLayout, *, name: str, num_proc: int | None) -> Dataset:
    def valid(row: dict) -> bool:
        try:
            layout.split(row)
        except InvalidRowError:
            return False
        return True

    kept = dataset.filter(valid, num_proc=num_proc, desc=f"Dropping the {name}'s invalid rows")
    if len(kept) == 0:
        raise ValueError(f"Every row of the {name} has a missing or non-text prompt or answer: nothing to train on.")
    if len(kept) < len(dataset):
        logger.warning(
            f"Dropped {len(dataset) - len(kept)} of the {len(dataset)} rows of the {name}: their prompt or answer is "
            "missing or not text (invalid_rows='drop')."
        )
    return kept


def _drop_blank_texts(dataset: Dataset, layout: ColumnLayout, *, name: str, num_proc: int | None) -> Dataset:
    """Raw corpora (wikitext, ...) have many empty lines: they are dropped with a counted warning."""
    kept = dataset.filter(
        lambda text: not (isinstance(text, str) and not text.strip()),
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
    return kept


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

    def encode(batch: dict, indices: list[int]) -> dict:
        chunks: dict[str, list[list[int]]] = {PROMPT_IDS: [], ANSWER_IDS: []}
        for offset, index in enumerate(indices):
            prompt, text = _split(layout, {key: values[offset] for key, values in batch.items()}, index, name)
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
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc=f"Tokenizing the {name}",
    )
    return encoded.map(lambda _, index: {ROW_INDEX: index}, with_indices=True, desc=f"Numbering the {name}'s chunks")
