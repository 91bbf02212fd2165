"""Batches of forget examples, each paired with a retain example (and a refusal answer when a loss needs one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..losses.base import IGNORE_INDEX
from .preparation import ANSWER_IDS, PROMPT_IDS, ROW_INDEX, truncate_answer


def pad_examples(
    examples: Sequence[tuple[list[int], list[int]]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad `(prompt_ids, answer_ids)` pairs into `input_ids`, `attention_mask` and `labels` (answer only)."""
    lengths = [len(p) + len(a) for p, a in examples]
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        n_prompt, n_total = len(prompt), len(prompt) + len(answer)
        input_ids[row, :n_total] = torch.tensor(prompt + answer, dtype=torch.long)
        labels[row, n_prompt:n_total] = torch.tensor(answer, dtype=torch.long)
        attention_mask[row, :n_total] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class ForgetRetainCollator:
    """Collates forget rows and pairs each one with a retain row (and a refusal answer, for IDK-style losses).

    The retain row is drawn with replacement by a generator seeded from `(seed, process_index, epoch, forget row)`:
    every rank draws its own retain examples (unlike a shared seed, which makes all ranks draw the same ones), and
    the draw of a given step is the same after resuming from a checkpoint. The trainer updates `epoch`.

    Args:
        pad_token_id: id used for padding.
        retain_dataset: the tokenized retain dataset, or None when no retain loss reads it.
        refusal_answer_ids: tokenized refusal answers, or None when no loss reads them.
        seed: the training seed.
        process_index: this process's rank.
        max_length: the maximum sequence length (refusal answers are truncated to it).
        pad_to_multiple_of: pad the sequence length to a multiple of this.
    """

    def __init__(
        self,
        pad_token_id: int,
        retain_dataset: Dataset | None = None,
        refusal_answer_ids: Sequence[list[int]] | None = None,
        seed: int = 42,
        process_index: int = 0,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        self.pad_token_id = pad_token_id
        self.retain_dataset = retain_dataset
        self.refusal_answer_ids = list(refusal_answer_ids) if refusal_answer_ids is not None else None
        self.seed = seed
        self.process_index = process_index
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.epoch = 0

    def _rng(self, row_index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.process_index, self.epoch, row_index])

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        forget = [(f[PROMPT_IDS], f[ANSWER_IDS]) for f in features]
        batch = {"forget": pad_examples(forget, self.pad_token_id, self.pad_to_multiple_of)}
        rngs = [self._rng(int(f[ROW_INDEX])) for f in features]
        if self.retain_dataset is not None:
            picks = [int(rng.integers(len(self.retain_dataset))) for rng in rngs]
            rows = self.retain_dataset.select(picks)
            retain = list(zip(rows[PROMPT_IDS], rows[ANSWER_IDS]))
            batch["retain"] = pad_examples(retain, self.pad_token_id, self.pad_to_multiple_of)
            batch["retain"]["row_index"] = torch.tensor(rows[ROW_INDEX], dtype=torch.long)
        if self.refusal_answer_ids is not None:
            idk = []
            for (prompt, _), rng in zip(forget, rngs):
                refusal = self.refusal_answer_ids[int(rng.integers(len(self.refusal_answer_ids)))]
                idk.append((prompt, truncate_answer(prompt, refusal, self.max_length, "A refusal answer")))
            batch["idk"] = pad_examples(idk, self.pad_token_id, self.pad_to_multiple_of)
        batch["forget"]["row_index"] = torch.tensor([int(f[ROW_INDEX]) for f in features], dtype=torch.long)
        return batch
