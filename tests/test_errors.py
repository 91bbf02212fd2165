"""Bad input gets a clear error that says what to do."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from datasets import Dataset
from helpers import make_trainer

from hf_unlearn import ForgetLoss, NonFiniteLossError, UnlearningConfig, register_loss
from hf_unlearn.demo.tiny import train_tokenizer


def test_empty_forget_set(target_model, tokenizer, small_retain, tmp_path):
    empty = Dataset.from_dict({"question": [], "answer": []})
    with pytest.raises(ValueError, match="forget dataset is empty"):
        make_trainer(target_model, tokenizer, empty, small_retain, tmp_path)


def test_empty_retain_set(target_model, tokenizer, small_forget, tmp_path):
    empty = Dataset.from_dict({"question": [], "answer": []})
    with pytest.raises(ValueError, match="retain dataset is empty"):
        make_trainer(target_model, tokenizer, small_forget, empty, tmp_path)


def test_missing_retain_set_needs_retain_loss_none(target_model, tokenizer, small_forget, tmp_path):
    with pytest.raises(ValueError, match="retain_loss='none'"):
        make_trainer(target_model, tokenizer, small_forget, None, tmp_path, retain_loss="nll")


def test_missing_columns_name_expected_and_found(target_model, tokenizer, small_retain, tmp_path):
    wrong = Dataset.from_dict({"query": ["q"], "response": ["a"]})
    with pytest.raises(ValueError) as err:
        make_trainer(target_model, tokenizer, wrong, small_retain, tmp_path)
    message = str(err.value)
    assert "['query', 'response']" in message and "'question'" in message and "'answer'" in message
    assert "question_key" in message


def test_custom_column_names(target_model, tokenizer, small_retain, tmp_path):
    renamed = Dataset.from_dict({"q": ["Who?"], "a": ["Nobody."]})
    retain = small_retain.rename_columns({"question": "q", "answer": "a"})
    trainer = make_trainer(target_model, tokenizer, renamed, retain, tmp_path, question_key="q", answer_key="a")
    assert len(trainer.train_dataset) == 1


def test_tokenizer_without_pad_token_uses_eos_and_says_so(
    target_model, tofu, small_forget, small_retain, tmp_path, caplog
):
    full = tofu["full"]
    tok = train_tokenizer(
        [f"{q} {a}" for q, a in zip(full["question"], full["answer"])], vocab_size=1024, pad_token=None
    )
    assert tok.pad_token is None
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(target_model, tok, small_forget, small_retain, tmp_path)
    assert tok.pad_token == tok.eos_token
    assert trainer.unlearning_collator.pad_token_id == tok.eos_token_id
    assert "no pad token" in caplog.text


def test_tokenizer_without_pad_or_eos_token(target_model, tokenizer, small_forget, small_retain, tmp_path):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None
    tok.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an EOS token"):
        make_trainer(target_model, tok, small_forget, small_retain, tmp_path)


def test_prompt_too_long_for_any_answer_token(target_model, tokenizer, small_retain, tmp_path):
    long = Dataset.from_dict({"question": ["short?", "word " * 300], "answer": ["yes", "no"]})
    with pytest.raises(ValueError, match=r"Row 1 of the forget dataset.*max_length=64.*no answer token"):
        make_trainer(target_model, tokenizer, long, small_retain, tmp_path, max_length=64)


def test_long_answers_are_truncated_not_rejected(target_model, tokenizer, small_retain, tmp_path):
    data = Dataset.from_dict({"question": ["short?"], "answer": ["word " * 300]})
    trainer = make_trainer(target_model, tokenizer, data, small_retain, tmp_path, max_length=64)
    row = trainer.train_dataset[0]
    assert len(row["prompt_ids"]) + len(row["answer_ids"]) == 64


@pytest.mark.parametrize("forget_loss", ["idk", "dpo"])
def test_refusal_losses_need_prompts_not_raw_text(forget_loss, target_model, tokenizer, small_retain, tmp_path):
    text = Dataset.from_dict({"text": ["Some article.", "Another one."]})
    with pytest.raises(ValueError, match=rf"forget_loss='{forget_loss}' answers the forget prompts.*raw text"):
        make_trainer(target_model, tokenizer, text, small_retain, tmp_path, forget_loss=forget_loss)


def test_unknown_loss_suggests_the_closest(target_model, tokenizer, small_forget, small_retain, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown loss 'nop'. Did you mean 'npo'\?.*ga.*idk"):
        make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss="nop")


def test_retain_loss_used_as_forget_loss(target_model, tokenizer, small_forget, small_retain, tmp_path):
    with pytest.raises(ValueError, match="'nll' is a retain loss"):
        make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss="nll")


def test_unknown_hyperparameter_lists_accepted_ones(target_model, tokenizer, small_forget, small_retain, tmp_path):
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['betta'\].*beta"):
        make_trainer(
            target_model,
            tokenizer,
            small_forget,
            small_retain,
            tmp_path,
            forget_loss="npo",
            forget_loss_kwargs={"betta": 0.1},
        )


def test_reference_model_that_cannot_be_built(target_model, tokenizer, small_forget, small_retain, tmp_path):
    target_model.is_loaded_in_4bit = True  # a quantized model cannot be deep-copied into a frozen reference
    with pytest.raises(ValueError, match=r"quantized model cannot be copied.*ref_model=.*peft_config"):
        make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss="npo")
    # a loss without a reference does not need the copy
    make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss="ga")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_bf16_without_hardware_support(tmp_path):
    with pytest.raises(ValueError, match="no bf16-capable accelerator.*bf16=False"):
        UnlearningConfig(output_dir=str(tmp_path), bf16=True)
    assert UnlearningConfig(output_dir=str(tmp_path)).bf16 is False  # the default follows the hardware


def test_no_pinned_memory_without_an_accelerator(tmp_path, monkeypatch):
    """torch warns on every DataLoader when memory is pinned with no accelerator to copy to."""
    import hf_unlearn.config as config_module

    assert UnlearningConfig(output_dir=str(tmp_path), use_cpu=True).dataloader_pin_memory is False
    monkeypatch.setattr(config_module, "_accelerator_available", lambda: True)
    assert UnlearningConfig(output_dir=str(tmp_path), bf16=False).dataloader_pin_memory is True


def test_kwargs_accept_json_strings(tmp_path):
    args = UnlearningConfig(
        output_dir=str(tmp_path), bf16=False, forget_loss="npo", forget_loss_kwargs='{"beta": 0.5}'
    )
    assert args.forget_loss_kwargs == {"beta": 0.5}
    with pytest.raises(ValueError, match="forget_loss_kwargs"):
        UnlearningConfig(output_dir=str(tmp_path), bf16=False, forget_loss_kwargs="{beta: 0.5")


@register_loss("explodes_at_step_3", override=True)
class ExplodesAtStep3(ForgetLoss):
    """A test loss: GA for two optimizer steps, then NaN."""

    def __init__(self):
        self.calls = 0

    def __call__(self, ctx):
        self.calls += 1
        loss = -ctx.mean_nll("forget").mean()
        return loss * float("nan") if self.calls > 2 else loss


def test_nonfinite_loss_stops_training_and_keeps_the_last_checkpoint(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    from transformers import AutoModelForCausalLM

    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        forget_loss="explodes_at_step_3",
        max_steps=4,
        save_strategy="steps",
        save_steps=1,
    )
    with pytest.raises(NonFiniteLossError, match=r"optimizer step 3.*non-finite.*checkpoint-2"):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint-2")
    assert all(torch.isfinite(p).all() for p in saved.parameters())
    # the live model was not updated with the NaN gradient either
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    torch.testing.assert_close(dict(trainer.model.named_parameters()), dict(saved.named_parameters()))
