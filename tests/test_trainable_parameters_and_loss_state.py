"""`trainable_parameters` (train only matching modules, as RMU does) and the losses' saved state (RMU's direction)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_trainer
from safetensors.torch import load_file

from hf_unlearn import UnlearningConfig

# RMU at layer 0 of the tiny model, with its retain term (the distance to the original model's activations there)
RMU_RUN = {
    "forget_loss": "rmu",
    "forget_loss_kwargs": {"layer": 0, "steering_coeff": 4.0},
    "retain_loss": "embed_diff",
    "retain_loss_kwargs": {"layer": 0},
}


def test_only_matching_parameters_train(target_model, tokenizer, small_forget, small_retain, tmp_path):
    before = {name: p.detach().clone() for name, p in target_model.named_parameters()}
    pattern = r"layers\.0\.mlp\."
    trainer = make_trainer(
        target_model, tokenizer, small_forget, small_retain, tmp_path, trainable_parameters=pattern, **RMU_RUN
    )
    trainer.train()
    changed = {name for name, p in target_model.named_parameters() if not torch.equal(p, before[name])}
    assert changed, "the matching MLP parameters should have trained"
    assert all("layers.0.mlp." in name for name in changed), sorted(changed)
    assert {name for name, p in target_model.named_parameters() if p.requires_grad} == changed


def test_a_pattern_matching_nothing_is_refused(target_model, tokenizer, small_forget, small_retain, tmp_path):
    with pytest.raises(ValueError, match="matches none of the model's trainable parameters"):
        make_trainer(
            target_model, tokenizer, small_forget, small_retain, tmp_path, trainable_parameters=r"no_such_module"
        )


def test_an_invalid_regex_is_refused_by_the_config(tmp_path):
    with pytest.raises(ValueError, match="regular expression"):
        UnlearningConfig(output_dir=str(tmp_path), trainable_parameters="layers.(5", bf16=False)


def test_rmu_direction_is_saved_with_the_model_and_checkpoints(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    trainer = make_trainer(
        target_model, tokenizer, small_forget, small_retain, tmp_path, save_strategy="steps", save_steps=2, **RMU_RUN
    )
    trainer.train()
    trainer.save_model()
    direction = trainer.forget_loss_fn.direction
    for folder in (tmp_path, tmp_path / "checkpoint-2", tmp_path / "checkpoint-4"):
        saved = load_file(folder / "loss_state.safetensors")
        assert torch.equal(saved["forget.direction"], direction)


def test_resuming_restores_the_saved_direction(target_model, tokenizer, small_forget, small_retain, tmp_path):
    first = make_trainer(
        target_model, tokenizer, small_forget, small_retain, tmp_path, save_strategy="steps", save_steps=2, **RMU_RUN
    )
    first.train()
    saved_direction = first.forget_loss_fn.direction.clone()
    # A different seed draws another direction; resuming must bring back the one the run was trained with.
    resumed = make_trainer(
        target_model, tokenizer, small_forget, small_retain, tmp_path, seed=1, max_steps=6, **RMU_RUN
    )
    assert not torch.allclose(resumed.forget_loss_fn.direction, saved_direction)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert torch.equal(resumed.forget_loss_fn.direction, saved_direction)


def test_resuming_with_another_forget_loss_is_refused(target_model, tokenizer, small_forget, small_retain, tmp_path):
    first = make_trainer(
        target_model, tokenizer, small_forget, small_retain, tmp_path, save_strategy="steps", save_steps=4, **RMU_RUN
    )
    first.train()
    other = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        forget_loss="ga",
        retain_loss="embed_diff",
        retain_loss_kwargs={"layer": 0},
        max_steps=6,
    )
    assert other.save_loss_state(str(tmp_path / "ga_state")) is None, "GA has no state to save"
    with pytest.raises(ValueError, match="same forget_loss"):
        other.load_loss_state(str(tmp_path / "checkpoint-4"))
