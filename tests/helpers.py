"""Measurements the tests share."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.losses import mean_nll

# Parametrise a test over these to run it on the CPU and, marked `cuda` (`pytest -m cuda`), on a GPU when one is there.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]
    ),
]


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
    """FixedLogits that also returns given hidden states, as a transformers decoder does: a tuple (embeddings,
    layer 0, ..., layer L-1) in which the output of decoder layer i is `hidden * (i + 2) / (L + 1)` (the last one is
    `hidden`), and the last entry is after a final norm (here: halved). The decoder layers are identity modules
    under `model.layers`, called on their outputs, so that forward hooks on them see the pre-norm outputs."""

    FINAL_NORM_SCALE = 0.5

    def __init__(self, logits: torch.Tensor, hidden: torch.Tensor, num_layers: int = 2):
        super().__init__(logits)
        self.hidden = torch.nn.Parameter(hidden.clone())
        self.num_layers = num_layers
        self.config = SimpleNamespace(num_hidden_layers=num_layers)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(num_layers))

    def forward(self, input_ids, attention_mask, **kwargs):
        states = [self.hidden / (self.num_layers + 1)]
        for i, layer in enumerate(self.model.layers):
            states.append(layer(self.hidden * (i + 2) / (self.num_layers + 1)))
        states[-1] = states[-1] * self.FINAL_NORM_SCALE
        return SimpleNamespace(logits=self.logits, hidden_states=tuple(states))


def snapshot(model):
    """The model's parameters (copies) and mode, to check that an attack or analysis leaves it unchanged."""
    return [p.detach().clone() for p in model.parameters()], model.training


def assert_unchanged(model, before):
    params, training = before
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), params)), "the input model must not change"
    assert model.training == training
