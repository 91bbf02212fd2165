"""The loss registry: user losses by name, clear errors."""

from __future__ import annotations

import pytest
import torch
from helpers import make_trainer, mean_answer_nll

from hf_unlearn import ForgetLoss, RetainLoss, get_loss, list_losses, register_loss


def test_builtin_losses_are_registered_by_kind():
    assert {"ga", "npo", "idk"} <= set(list_losses("forget"))
    assert {"nll", "kl", "none"} <= set(list_losses("retain"))
    assert set(list_losses()) == set(list_losses("forget")) | set(list_losses("retain"))
    assert get_loss("npo").needs_ref_model and not get_loss("ga").needs_ref_model
    assert get_loss("idk").needs_refusals


def test_registering_twice_needs_override():
    @register_loss("twice_test", override=True)
    class First(ForgetLoss):
        def __call__(self, ctx):
            return torch.zeros(())

    with pytest.raises(ValueError, match="already registered"):

        @register_loss("twice_test")
        class Second(ForgetLoss):
            def __call__(self, ctx):
                return torch.zeros(())

    assert get_loss("twice_test") is First


def test_only_loss_classes_can_be_registered():
    with pytest.raises(TypeError, match="ForgetLoss or RetainLoss"):
        register_loss("not_a_loss")(object)
    with pytest.raises(ValueError, match="non-empty"):
        register_loss(" padded ")


def test_a_user_loss_trains_by_name(target_model, tokenizer, small_forget, small_retain, tmp_path):
    @register_loss("scaled_ga_test", override=True)
    class ScaledGA(ForgetLoss):
        """GA on the sequence NLL, scaled: a user's own objective."""

        def __init__(self, scale: float = 1.0):
            self.scale = scale

        def __call__(self, ctx):
            return -self.scale * ctx.nll("forget").mean()

    before = mean_answer_nll(target_model, tokenizer, small_forget)
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        None,
        tmp_path,
        forget_loss="scaled_ga_test",
        forget_loss_kwargs={"scale": 0.1},
        retain_loss="none",
    )
    assert trainer.forget_loss_fn.scale == 0.1
    trainer.train()
    assert mean_answer_nll(target_model, tokenizer, small_forget) > before + 0.1


def test_a_user_retain_loss_with_a_reference(target_model, tokenizer, small_forget, small_retain, tmp_path):
    seen = {}

    @register_loss("ref_reader_test", override=True)
    class ReadsReference(RetainLoss):
        needs_ref_model = True

        def __call__(self, ctx):
            seen["ref_logits"] = ctx.ref_logits("retain").shape
            return (ctx.nll("retain") - ctx.ref_nll("retain")).abs().mean()

    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        forget_loss="ga",
        retain_loss="ref_reader_test",
        max_steps=1,
    )
    assert trainer.ref_model is not None  # the retain loss declared it
    trainer.train()
    assert seen["ref_logits"][-1] == len(tokenizer)


def test_context_without_declared_needs_explains(target_model, tokenizer, small_forget, small_retain, tmp_path):
    trainer = make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss="ga")
    batch = trainer.unlearning_collator([trainer.train_dataset[0]])
    ctx = trainer.loss_context(trainer.model, batch)
    with pytest.raises(RuntimeError, match="needs_ref_model = True"):
        ctx.ref_logits("forget")
    with pytest.raises(KeyError, match="needs_refusals = True"):
        ctx.batch("idk")
    with pytest.raises(RuntimeError, match="needs_hidden_states = True"):
        ctx.hidden_states("forget", 1)
