"""What the tests share: the trainer factory and its CPU config, measurements, hand-made models."""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from hf_unlearn import UnlearningConfig, UnlearningTrainer, create_trainer
from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.losses import mean_nll

# Parametrise a test over these to run it on the CPU and, marked `cuda` (`pytest -m cuda`), on a GPU when one is there.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]
    ),
]


def tiny_config(output_dir: str | PathLike, **overrides: Any) -> UnlearningConfig:
    """An UnlearningConfig for fast CPU tests of the tiny models: no bf16, no gradient checkpointing, no reporting,
    no saving, quiet, 4 steps of 4 examples at lr 1e-3, seed 0. `overrides` are UnlearningConfig fields."""
    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=1e-3,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    defaults.update(overrides)
    return UnlearningConfig(**defaults)


def make_trainer(
    model: Any,
    tokenizer: Any = None,
    forget: Any = None,
    retain: Any = None,
    output_dir: str | PathLike | None = None,
    *,
    args: UnlearningConfig | None = None,
    peft_config: Any = None,
    grun_config: Any = None,
    ref_model: torch.nn.Module | None = None,
    callbacks: Iterable[Any] | None = None,
    trainer_cls: type | None = None,
    **overrides: Any,
) -> UnlearningTrainer:
    """The unlearning trainer of a test, built as a user builds one (not trained: call `.train()`).

    ```python
    trainer = make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss="npo")
    ```

    Args:
        model: a model, or a local path / Hub id that the trainer loads.
        tokenizer: the trainer's `processing_class`.
        forget, retain: the forget and retain datasets (`retain=None`: no retain data).
        output_dir: the `output_dir` of `tiny_config(output_dir, **overrides)`, the config used unless `args` is
            given.
        args: a ready config instead (then neither `output_dir` nor `overrides`).
        peft_config: train a peft adapter of `model` (its reference is the model with the adapter off).
        grun_config: a `GRUNConfig`: `create_trainer` wraps `model` with `get_grun_model(..., seed=args.seed)` and
            returns a `GRUNTrainer`.
        ref_model: the reference model (by default the trainer builds one if a loss needs it).
        callbacks: trainer callbacks.
        trainer_cls: call this class, as `trainer_cls(model, args, forget_dataset=..., ...)`, instead of
            `hf_unlearn.create_trainer`: `GRUNTrainer` for a model already wrapped by `get_grun_model`, or a test's
            own subclass.
        **overrides: UnlearningConfig fields over `tiny_config`'s defaults.
    """
    if args is None:
        if output_dir is None:
            raise TypeError("make_trainer needs an output_dir (or a ready config as args=)")
        args = tiny_config(output_dir, **overrides)
    elif output_dir is not None or overrides:
        raise TypeError("make_trainer takes either args= or an output_dir and config overrides, not both")
    kwargs: dict[str, Any] = dict(forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer)
    if callbacks is not None:
        kwargs["callbacks"] = list(callbacks)
    if ref_model is not None:
        kwargs["ref_model"] = ref_model
    if trainer_cls is None:
        return create_trainer(model, args, grun_config=grun_config, peft_config=peft_config, **kwargs)
    if peft_config is not None or grun_config is not None:
        raise TypeError("with trainer_cls, wrap the model yourself (peft_config and grun_config go to create_trainer)")
    return trainer_cls(model, args, **kwargs)


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
    """A batch of these labels (-100: not trained on), all attended to, whose input ids are the labels (-100: 0)."""
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
    """The model's parameters and mode are those of `snapshot(model)` taken before."""
    params, training = before
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), params)), "the input model must not change"
    assert model.training == training
