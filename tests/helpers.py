"""Measurements the tests share."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.losses import mean_nll


@torch.no_grad()
def mean_answer_nll(model, tokenizer, dataset, batch_size: int = 32) -> float:
    """Average per-token NLL of the dataset's answers, or of its texts (a `text` column; higher = less likely)."""
    encoder = PromptEncoder(tokenizer)
    model.eval()
    if "text" in dataset.column_names:
        pairs = [encoder.encode("", text) for text in dataset["text"]]
    else:
        questions, answers = dataset["question"], dataset["answer"]
        pairs = [encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(questions, answers)]
    values = []
    for start in range(0, len(pairs), batch_size):
        batch = pad_examples(pairs[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        values.append(mean_nll(logits, batch["labels"]))
    return torch.cat(values).mean().item()


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are a parameter: gradients and values are easy to compute by hand."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids, attention_mask, **kwargs):
        return SimpleNamespace(logits=self.logits, hidden_states=None)


def batch_of(labels: list[list[int]]) -> dict[str, torch.Tensor]:
    labels = torch.tensor(labels)
    return {"input_ids": labels.clamp(min=0), "attention_mask": torch.ones_like(labels), "labels": labels}


class FixedHidden(FixedLogits):
    """FixedLogits that also returns given hidden states (a tuple: embeddings, layer 0, layer 1, ...)."""

    def __init__(self, logits: torch.Tensor, hidden: torch.Tensor, num_layers: int = 2):
        super().__init__(logits)
        self.hidden = torch.nn.Parameter(hidden.clone())
        self.num_layers = num_layers

    def forward(self, input_ids, attention_mask, **kwargs):
        states = tuple(self.hidden * (i + 1) / (self.num_layers + 1) for i in range(self.num_layers + 1))
        return SimpleNamespace(logits=self.logits, hidden_states=states)
