"""Relearning attack: how fast does an unlearned model relearn what it forgot?

Lynch et al. 2024 (arXiv 2402.16835) and Hu et al. 2024 ("Jogging the memory of unlearned LLMs", arXiv 2406.13356):
a few fine-tuning steps on part of the forget data bring the rest back when the knowledge was suppressed rather than
removed. The attack fine-tunes a copy of the model (all weights, or a LoRA adapter) on `relearn_dataset` and measures
the answers' probability on the held-out `eval_dataset` before and after. The relearning score compares that change
with the change of a model that never knew the data (the retain model) under the same attack:
R = 1 - |d_unlearned - d_retain| / (|d_unlearned| + |d_retain|).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from ...data import pad_examples
from ...reference import independent_copy
from ..model_io import model_device, resolve_pad_token_id
from .scoring import QAPairs, answer_probabilities, encode_qa, robustness_score


@dataclass
class RelearningAttackResult:
    """The held-out forget answers' mean probability before and after relearning, and its change. `settings`: the
    schedule a preset or a caller asked for beyond the defaults (epochs, scheduler, LoRA shape...), None otherwise."""

    steps: int
    learning_rate: float
    lora: bool
    before: float
    after: float
    settings: dict[str, Any] | None = None

    @property
    def change(self) -> float:
        return self.after - self.before

    def to_dict(self) -> dict[str, Any]:
        values = {**vars(self), "change": self.change}
        if values["settings"] is None:
            del values["settings"]
        return values


def relearning_score(attacked: RelearningAttackResult, reference: RelearningAttackResult) -> float:
    """R = 1 - |d_unl - d_ret| / (|d_unl| + |d_ret|) from the attack on the unlearned and on the retain model."""
    return robustness_score(attacked.change, reference.change)


SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "constant_after_linear_warmup")
OPTIMIZERS = ("adamw", "lion")


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Any, text_key: str, max_length: int | None) -> QAPairs:
    """`([], ids)` pairs of plain texts (a corpus): the loss falls on every token. `texts`: strings, or rows (a
    `datasets.Dataset`, dicts) with a `text_key` column."""
    if texts is None or len(texts) == 0:
        raise ValueError("The relearning corpus is empty.")
    rows = texts.to_list() if hasattr(texts, "to_list") else list(texts)
    strings = [row if isinstance(row, str) else row[text_key] for row in rows]
    encoded = [
        tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"] for text in strings
    ]
    if any(len(ids) < 2 for ids in encoded):
        raise ValueError("A text of the relearning corpus encodes to fewer than 2 tokens: nothing to learn from.")
    return [([], list(ids)) for ids in encoded]


def _lora_targets(model: torch.nn.Module, wanted: str | Sequence[str]) -> str | list[str]:
    """The LoRA target modules: `wanted` when it is "all-linear", else the names of `wanted` the model has (peft
    matches module-name suffixes); "all-linear" when it has none of them."""
    if isinstance(wanted, str):
        return wanted
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    suffixes = {name.rsplit(".", 1)[-1] for name in linears}
    present = [name for name in wanted if name in suffixes]
    return present or "all-linear"


def _optimizer_steps(
    n: int, steps: int, epochs: int | None, batch_size: int, accumulation: int, rng: random.Random
) -> list[list[list[int]]]:
    """Row indices of each micro-batch of each optimizer step. With `epochs`: a fresh permutation per epoch cut into
    micro-batches of `batch_size` (the last one shorter), `accumulation` of them per step (the last step of an epoch
    takes what is left). Without: `steps` steps of `accumulation` micro-batches drawn without replacement, the
    order refilled with a new permutation when it runs short (the original behaviour for `accumulation=1`)."""
    if epochs is not None:
        plan = []
        for _ in range(epochs):
            order = rng.sample(range(n), n)
            micro = [order[i : i + batch_size] for i in range(0, n, batch_size)]
            plan += [micro[i : i + accumulation] for i in range(0, len(micro), accumulation)]
        return plan
    plan, order = [], []
    for _ in range(steps):
        step = []
        for _ in range(accumulation):
            if len(order) < batch_size:
                order += rng.sample(range(n), n)
            rows, order = order[:batch_size], order[batch_size:]
            step.append(rows)
        plan.append(step)
    return plan


def relearning_attack(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    relearn_dataset: Any,
    eval_dataset: Any,
    *,
    steps: int = 10,
    learning_rate: float = 1e-4,
    batch_size: int = 4,
    lora: bool = False,
    lora_rank: int = 8,
    seed: int = 0,
    use_chat_template: bool | None = None,
    progress: bool = False,
    epochs: int | None = None,
    gradient_accumulation_steps: int = 1,
    scheduler: str = "constant",
    warmup_steps: int | None = None,
    warmup_ratio: float = 0.0,
    weight_decay: float = 0.0,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
    lora_target_modules: str | Sequence[str] = "all-linear",
    text_key: str | None = None,
    max_length: int | None = None,
    optimizer: str = "adamw",
) -> RelearningAttackResult:
    """Fine-tune a copy of `model` on `relearn_dataset` and measure TOFU's answer probability on `eval_dataset`
    before and after. The input model is not changed.

    Defaults (the attack as it always ran): `steps` AdamW steps of `batch_size` question/answer rows (loss on the
    answer tokens only), constant learning rate, all weights or, with `lora=True`, a LoRA adapter of rank
    `lora_rank` (alpha 2 * rank) on every linear layer.

    The settings a published protocol needs (see [`~hf_unlearn.evaluation.robustness.presets`]):
    - `epochs`: that many passes over `relearn_dataset` instead of `steps` (optimizer steps per epoch:
      ceil(ceil(n / batch_size) / gradient_accumulation_steps));
    - `gradient_accumulation_steps`: micro-batches per optimizer step (their losses averaged);
    - `scheduler` ("constant", "constant_with_warmup", "linear" or "cosine", transformers' `get_scheduler`), with
      `warmup_steps` (or `warmup_ratio` of the steps; warmup_steps wins when both are given);
    - `scheduler="constant_after_linear_warmup"`: lr * min(1, k / warmup_steps) on the k-th step (k = 1, 2, ...),
      as Deeb and Roger's `finetune_corpus.py` sets it: the first step already takes lr / warmup_steps, and the warmup
      is not shortened to the run (transformers' `constant_with_warmup` starts at 0 and is capped to the run here);
    - `optimizer`: "adamw" (default) or "lion" ([`~hf_unlearn.evaluation.robustness.lion.Lion`], lion-pytorch's
      defaults: betas (0.9, 0.99));
    - `weight_decay` (decoupled: AdamW's, or Lion's scaled by the learning rate);
    - `lora_alpha`, `lora_dropout`, `lora_target_modules` (a list of module names, as peft matches them; the names
      the model lacks are dropped, and none left means every linear layer, "all-linear");
    - `text_key`: `relearn_dataset` is a plain-text corpus (strings, or rows with this column), trained on with the
      loss on every token, each text cut to `max_length` tokens."""
    if (steps < 1 and epochs is None) or learning_rate <= 0 or batch_size < 1:
        raise ValueError(
            f"steps and batch_size must be >= 1 and learning_rate > 0, got steps={steps}, batch_size={batch_size}, "
            f"learning_rate={learning_rate}."
        )
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1 (or None to run `steps` steps), got {epochs}.")
    if gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}.")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown learning-rate scheduler {scheduler!r}; choose one of {list(SCHEDULERS)}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}.")
    if text_key is not None:
        train_pairs = encode_texts(tokenizer, relearn_dataset, text_key, max_length)
    else:
        train_pairs = encode_qa(
            tokenizer, relearn_dataset, use_chat_template=use_chat_template, what="relearn dataset"
        )
    eval_pairs = encode_qa(tokenizer, eval_dataset, use_chat_template=use_chat_template, what="evaluation dataset")
    before = float(answer_probabilities(model, tokenizer, eval_pairs).mean())
    attacked = independent_copy(model)
    targets = None
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = _lora_targets(attacked, lora_target_modules)
        attacked = get_peft_model(
            attacked,
            LoraConfig(
                r=lora_rank,
                lora_alpha=2 * lora_rank if lora_alpha is None else lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=targets,
            ),
        )
    else:
        attacked.requires_grad_(True)
    params = [p for p in attacked.parameters() if p.requires_grad]
    optimizer_name = optimizer
    if optimizer == "lion":
        from .lion import Lion

        optimizer = Lion(params, lr=learning_rate, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    plan = _optimizer_steps(
        len(train_pairs), steps, epochs, batch_size, gradient_accumulation_steps, random.Random(seed)
    )
    if scheduler == "constant_after_linear_warmup":
        warmup = warmup_steps if warmup_steps is not None else math.ceil(warmup_ratio * len(plan))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / max(1, warmup)))
    else:
        warmup = min(warmup_steps if warmup_steps is not None else math.ceil(warmup_ratio * len(plan)), len(plan))
        schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=len(plan))
    pad = resolve_pad_token_id(tokenizer, owner="The relearning attack")
    device = model_device(model)
    attacked.train()
    for micro_batches in tqdm(plan, desc="Relearning", disable=not progress, leave=False):
        for rows in micro_batches:
            batch = {k: v.to(device) for k, v in pad_examples([train_pairs[i] for i in rows], pad).items()}
            loss = attacked(**batch).loss
            (loss / len(micro_batches) if len(micro_batches) > 1 else loss).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    after = float(answer_probabilities(attacked, tokenizer, eval_pairs).mean())
    del attacked, optimizer
    custom = {
        "epochs": epochs,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "scheduler": scheduler,
        "warmup_steps": warmup,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "corpus": text_key is not None,
        "optimizer": optimizer_name,
    }
    if lora:
        custom.update(
            lora_rank=lora_rank,
            lora_alpha=2 * lora_rank if lora_alpha is None else lora_alpha,
            lora_dropout=lora_dropout,
            lora_target_modules=targets if isinstance(targets, str) else list(targets),
        )
    defaults = {"epochs": None, "gradient_accumulation_steps": 1, "scheduler": "constant", "warmup_steps": 0}
    defaults.update(weight_decay=0.0, batch_size=4, corpus=False, optimizer="adamw")
    is_default = all(custom[k] == v for k, v in defaults.items()) and (
        not lora or (lora_alpha is None and lora_dropout == 0.0 and lora_target_modules == "all-linear")
    )
    return RelearningAttackResult(len(plan), learning_rate, lora, before, after, None if is_default else custom)
