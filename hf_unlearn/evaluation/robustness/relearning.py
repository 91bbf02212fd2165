"""Relearning attack: how fast does an unlearned model relearn what it forgot?

Lynch et al. 2024 (arXiv 2402.16835) and Hu et al. 2024 ("Jogging the memory of unlearned LLMs", arXiv 2406.13356):
a few fine-tuning steps on part of the forget data bring the rest back when the knowledge was suppressed rather than
removed. The attack fine-tunes a copy of the model (all weights, or a LoRA adapter) on `relearn_dataset` and measures
the answers' probability on the held-out `eval_dataset` before and after. The relearning score compares that change
with the change of a model that never knew the data (the retain model) under the same attack:
R = 1 - |d_unlearned - d_retain| / (|d_unlearned| + |d_retain|).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ...data import pad_examples
from ...reference import independent_copy
from ..model_io import model_device, resolve_pad_token_id
from .scoring import answer_probabilities, encode_qa, robustness_score


@dataclass
class RelearningAttackResult:
    """The held-out forget answers' mean probability before and after relearning, and its change."""

    steps: int
    learning_rate: float
    lora: bool
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after - self.before

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "change": self.change}


def relearning_score(attacked: RelearningAttackResult, reference: RelearningAttackResult) -> float:
    """R = 1 - |d_unl - d_ret| / (|d_unl| + |d_ret|) from the attack on the unlearned and on the retain model."""
    return robustness_score(attacked.change, reference.change)


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
) -> RelearningAttackResult:
    """Fine-tune a copy of `model` for `steps` AdamW steps on `relearn_dataset` (answer tokens only; all weights, or a
    LoRA adapter of rank `lora_rank` on every linear layer with `lora=True`) and measure TOFU's answer probability
    on `eval_dataset` before and after. The input model is not changed."""
    if steps < 1 or learning_rate <= 0 or batch_size < 1:
        raise ValueError(
            f"steps and batch_size must be >= 1 and learning_rate > 0, got steps={steps}, batch_size={batch_size}, "
            f"learning_rate={learning_rate}."
        )
    train_pairs = encode_qa(tokenizer, relearn_dataset, use_chat_template=use_chat_template, what="relearn dataset")
    eval_pairs = encode_qa(tokenizer, eval_dataset, use_chat_template=use_chat_template, what="evaluation dataset")
    before = float(answer_probabilities(model, tokenizer, eval_pairs).mean())
    attacked = independent_copy(model)
    if lora:
        from peft import LoraConfig, get_peft_model

        attacked = get_peft_model(
            attacked, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules="all-linear")
        )
    else:
        attacked.requires_grad_(True)
    params = [p for p in attacked.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    pad = resolve_pad_token_id(tokenizer, owner="The relearning attack")
    device = model_device(model)
    rng = random.Random(seed)
    order: list[int] = []
    attacked.train()
    for _ in tqdm(range(steps), desc="Relearning", disable=not progress, leave=False):
        if len(order) < batch_size:
            order += rng.sample(range(len(train_pairs)), len(train_pairs))
        rows, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in pad_examples([train_pairs[i] for i in rows], pad).items()}
        loss = attacked(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    after = float(answer_probabilities(attacked, tokenizer, eval_pairs).mean())
    del attacked, optimizer
    return RelearningAttackResult(steps, learning_rate, lora, before, after)
