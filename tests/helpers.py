"""Measurements the tests share."""

from __future__ import annotations

import torch

from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.losses import mean_nll


@torch.no_grad()
def mean_answer_nll(model, tokenizer, dataset, batch_size: int = 32) -> float:
    """Average per-token NLL of the dataset's answers (higher = less likely)."""
    encoder = PromptEncoder(tokenizer)
    model.eval()
    pairs = [
        encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(dataset["question"], dataset["answer"])
    ]
    values = []
    for start in range(0, len(pairs), batch_size):
        batch = pad_examples(pairs[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        values.append(mean_nll(logits, batch["labels"]))
    return torch.cat(values).mean().item()
