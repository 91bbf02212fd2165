"""Every registered forget loss trains the tiny model, fully and with LoRA, and does what it is for."""

from __future__ import annotations

import pytest
import torch
from helpers import make_trainer, mean_answer_nll
from peft import LoraConfig

from hf_unlearn.data import PromptEncoder, pad_examples

BUILTIN_FORGET_LOSSES = ["ceu", "dpo", "ga", "idk", "npo", "rmu", "satimp", "simnpo", "tnpo", "undial", "wga", "wtnpo"]
# The tiny test model has 2 decoder layers: RMU steers the first one.
LOSS_KWARGS = {"rmu": {"layer": 0, "steering_coeff": 4.0}, "satimp": {"b1": 1.0, "b2": 0.0}}


def test_the_list_covers_the_registry():
    from hf_unlearn import get_loss, list_losses

    # Other tests and the examples register their own losses: only the library's own modules count here.
    builtin = {name for name in list_losses("forget") if get_loss(name).__module__.startswith("hf_unlearn.losses.")}
    assert builtin == set(BUILTIN_FORGET_LOSSES)


@torch.no_grad()
def rmu_distance(model, tokenizer, dataset, rmu) -> float:
    """Mean squared distance of the steered layer's answer-token states to c * u."""
    encoder = PromptEncoder(tokenizer)
    pairs = [
        encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(dataset["question"], dataset["answer"])
    ]
    batch = pad_examples(pairs, tokenizer.pad_token_id)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    hidden = out.hidden_states[rmu.layer + 1]
    mask = batch["labels"] != -100
    return (hidden - rmu.steering_coeff * rmu.direction)[mask].pow(2).mean().item()


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("forget_loss", BUILTIN_FORGET_LOSSES)
def test_forget_loss_trains(forget_loss, use_lora, target_model, tokenizer, small_forget, small_retain, tmp_path):
    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0) if use_lora else None
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        None,
        tmp_path,
        peft_config=peft_config,
        forget_loss=forget_loss,
        forget_loss_kwargs=LOSS_KWARGS.get(forget_loss),
        retain_loss="none",
        learning_rate=1e-2 if use_lora else 2e-3,
        max_steps=5,
    )
    model = trainer.model
    if forget_loss == "rmu":
        before = rmu_distance(model, tokenizer, small_forget, trainer.forget_loss_fn)
        trainer.train()
        after = rmu_distance(model, tokenizer, small_forget, trainer.forget_loss_fn)
        assert after < 0.9 * before, f"RMU should steer the states toward c*u: {before:.4f} -> {after:.4f}"
        return
    before = mean_answer_nll(model, tokenizer, small_forget)
    trainer.train()
    after = mean_answer_nll(model, tokenizer, small_forget)
    if forget_loss == "idk":  # IDK teaches refusals; the true answers become less likely as a side effect
        assert after > before, f"{forget_loss}: {before:.3f} -> {after:.3f}"
    else:
        assert after > before + 0.05, (
            f"{forget_loss} should lower the forget answers' likelihood: {before:.3f} -> {after:.3f}"
        )
