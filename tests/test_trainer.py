"""UnlearningTrainer: the objectives do what they claim on a tiny model that memorised the bundled TOFU subset."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import make_trainer, mean_answer_nll, tiny_config
from peft import LoraConfig

from hf_unlearn import UnlearningTrainer
from hf_unlearn.losses import get_loss


@pytest.mark.parametrize("forget_loss", ["ga", "npo"])
def test_forget_losses_lower_forget_likelihood(
    forget_loss, target_model, tokenizer, small_forget, small_retain, tmp_path
):
    before = mean_answer_nll(target_model, tokenizer, small_forget)
    trainer = make_trainer(
        target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss=forget_loss, retain_loss="none"
    )
    trainer.train()
    after = mean_answer_nll(target_model, tokenizer, small_forget)
    assert after > before + 0.2, f"{forget_loss} should raise the forget NLL: {before:.3f} -> {after:.3f}"


def test_retain_nll_limits_retain_damage(
    target_model_dir, target_model, tokenizer, small_forget, small_retain, tmp_path
):
    from transformers import AutoModelForCausalLM

    retain_before = mean_answer_nll(target_model, tokenizer, small_retain)
    damage = {}
    for retain_loss in ["none", "nll"]:
        model = AutoModelForCausalLM.from_pretrained(target_model_dir)
        trainer = make_trainer(
            model,
            tokenizer,
            small_forget,
            small_retain,
            tmp_path / retain_loss,
            forget_loss="ga",
            retain_loss=retain_loss,
        )
        trainer.train()
        damage[retain_loss] = mean_answer_nll(model, tokenizer, small_retain) - retain_before
    assert damage["none"] > 0.1, damage
    assert damage["nll"] < 0.5 * damage["none"], damage


def test_raw_text_corpora_unlearn_like_question_answer_data(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    """MUSE- or WMDP-style data: a `text` column, every token trained on, long texts chunked to max_length."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    def as_text(data):  # the answers: facts about each author (the questions share one phrasing across authors)
        return Dataset.from_dict({"text": list(data["answer"])})

    forget, retain = as_text(small_forget), as_text(small_retain)
    rises = {}
    for retain_loss in ("none", "nll"):
        model = AutoModelForCausalLM.from_pretrained(target_model_dir)
        before = mean_answer_nll(model, tokenizer, forget), mean_answer_nll(model, tokenizer, retain)
        trainer = make_trainer(
            model,
            tokenizer,
            forget,
            retain,
            tmp_path / retain_loss,
            forget_loss="npo",
            retain_loss=retain_loss,
            max_length=24,
        )
        trainer.train()
        assert len(trainer.train_dataset) > len(forget)  # long answers were chunked
        after = mean_answer_nll(model, tokenizer, forget), mean_answer_nll(model, tokenizer, retain)
        rises[retain_loss] = (after[0] - before[0], after[1] - before[1])
    assert rises["nll"][0] > 0.2, rises  # forgets
    assert rises["nll"][1] < 0.6 * rises["none"][1], rises  # the retain term protects the retain texts


def test_losses_are_logged_separately(target_model, tokenizer, small_forget, small_retain, tmp_path):
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        forget_loss="npo",
        retain_loss="nll",
        max_steps=2,
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss/forget" in entry]
    assert len(logs) == 2
    # At step 0 the model is its own reference: NPO's loss is (2 / beta) ln 2.
    assert logs[0]["loss/forget"] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-4)
    assert logs[0]["loss"] == pytest.approx(logs[0]["loss/forget"] + logs[0]["loss/retain"], rel=1e-3)


def test_the_trained_model_keeps_its_own_forward(target_model, tokenizer, small_forget, small_retain, tmp_path):
    """trl 1.12-1.14's default loss_type ("chunked_nll") makes SFTTrainer replace the model's forward by one that
    returns no logits when given labels; UnlearningConfig asks for "nll", so the model still gives its logits."""
    trainer = make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, max_steps=1)
    trainer.train()
    assert trainer.args.loss_type == "nll"
    assert tiny_config(tmp_path, loss_type="chunked_nll").loss_type == "nll"
    ids = torch.tensor([[1, 5, 6, 7]])
    assert target_model(input_ids=ids, labels=ids).logits.shape == (1, 4, len(tokenizer))


def test_lora_trains_only_the_adapter_and_uses_it_as_reference(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    base_before = {n: p.detach().clone() for n, p in target_model.named_parameters()}
    nll_before = mean_answer_nll(target_model, tokenizer, small_forget)
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        forget_loss="npo",
        retain_loss="nll",
        learning_rate=1e-2,
        max_steps=6,
    )
    assert trainer.ref_model is None, "with peft the reference is the model with its adapter off, not a copy"
    trainer.train()
    peft_model = trainer.model
    changed = [n for n, p in peft_model.named_parameters() if "lora_" in n and p.requires_grad]
    assert changed
    for name, param in peft_model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        original = base_before[name.replace("base_layer.", "")]
        assert torch.equal(param.detach(), original), f"base weight {name} changed"
    assert mean_answer_nll(peft_model, tokenizer, small_forget) > nll_before + 0.05
    with peft_model.disable_adapter():
        assert mean_answer_nll(peft_model, tokenizer, small_forget) == pytest.approx(nll_before, abs=1e-5)


def test_gradient_accumulation_matches_the_larger_batch(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    from transformers import AutoModelForCausalLM

    params = {}
    for name, batch, accumulation in [("big", 4, 1), ("accumulated", 2, 2)]:
        model = AutoModelForCausalLM.from_pretrained(target_model_dir)
        trainer = make_trainer(
            model,
            tokenizer,
            small_forget,
            small_retain,
            tmp_path / name,
            forget_loss="npo",
            retain_loss="nll",
            # exact only per answer: a pooled token mean pools per micro-batch, as the reference codes do
            token_average="answer",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=2,
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
        )
        trainer.train()
        params[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    initial = torch.cat(
        [p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(target_model_dir).parameters()]
    )
    update_big = params["big"] - initial
    update_acc = params["accumulated"] - initial
    assert update_big.norm() > 1e-3
    torch.testing.assert_close(update_acc, update_big, rtol=1e-4, atol=1e-6)


def test_npo_at_the_reference_has_ga_gradient(target_model, tokenizer, small_forget, small_retain, tmp_path):
    """Sign check of NPO (Zhang et al. 2024, arXiv 2404.05868): its gradient is GA's weighted by
    2 pi^beta / (pi^beta + pi_ref^beta), so at theta = ref its loss is (2/beta) ln 2 and its gradient is GA's
    (GA on the sequence NLL, as in the NPO paper)."""
    trainer = make_trainer(
        target_model, tokenizer, small_forget, None, tmp_path, forget_loss="npo", retain_loss="none"
    )
    batch = trainer.unlearning_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model

    def grads(loss_fn):
        model.zero_grad()
        ctx = trainer.loss_context(model, batch)
        loss = loss_fn(ctx)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    npo_loss, npo_grad = grads(get_loss("npo")(beta=0.1))
    _, ga_grad = grads(lambda ctx: -ctx.nll("forget").mean())
    assert npo_loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)
    torch.testing.assert_close(npo_grad, ga_grad, rtol=1e-4, atol=1e-7)
    # and the registry's GA (per-token mean) is the same direction with per-example weights 1/|y|
    _, ga_mean_grad = grads(get_loss("ga")())
    cos = torch.nn.functional.cosine_similarity(npo_grad, ga_mean_grad, dim=0)
    assert cos > 0.9


def test_reference_model_is_built_only_when_needed(target_model, tokenizer, small_forget, small_retain, tmp_path):
    ga = make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path / "ga", forget_loss="ga")
    assert ga.ref_model is None
    npo = make_trainer(
        copy.deepcopy(target_model), tokenizer, small_forget, small_retain, tmp_path / "npo", forget_loss="npo"
    )
    assert npo.ref_model is not None and npo.ref_model is not npo.model
    assert not any(p.requires_grad for p in npo.ref_model.parameters())
    mine = copy.deepcopy(target_model)
    given = make_trainer(
        copy.deepcopy(target_model),
        tokenizer,
        small_forget,
        small_retain,
        tmp_path / "own",
        ref_model=mine,
        forget_loss="npo",
    )
    assert given.ref_model is mine


def test_refusal_batches_only_for_losses_that_need_them(target_model, tokenizer, small_forget, small_retain, tmp_path):
    idk = make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, forget_loss="idk")
    batch = idk.unlearning_collator([idk.train_dataset[i] for i in range(3)])
    assert set(batch) == {"forget", "retain", "idk"}
    # the refusal follows the same forget prompt
    for row in range(3):
        prompt_len = int(
            (batch["forget"]["labels"][row] == -100).sum() - (batch["forget"]["attention_mask"][row] == 0).sum()
        )
        assert torch.equal(batch["idk"]["input_ids"][row, :prompt_len], batch["forget"]["input_ids"][row, :prompt_len])
    refusals = {tokenizer.decode(ids[ids != -100], skip_special_tokens=True).strip() for ids in batch["idk"]["labels"]}
    from hf_unlearn.data import load_refusal_answers

    assert refusals <= set(load_refusal_answers())
    ga = make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path / "ga", forget_loss="ga")
    assert set(ga.unlearning_collator([ga.train_dataset[0]])) == {"forget", "retain"}


def test_save_model_writes_the_method(target_model, tokenizer, small_forget, small_retain, tmp_path):
    import json

    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        forget_loss="npo",
        forget_loss_kwargs={"beta": 0.2},
        max_steps=1,
    )
    trainer.train()
    trainer.save_model()
    state = json.loads((tmp_path / "unlearning.json").read_text())
    assert state["forget_loss"] == "npo" and state["forget_loss_kwargs"] == {"beta": 0.2}
    assert (tmp_path / "model.safetensors").is_file()


def test_create_trainer_chooses_grun_or_the_plain_trainer(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from hf_unlearn import create_trainer

    data = dict(forget_dataset=small_forget, retain_dataset=small_retain, processing_class=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(target_model_dir)
    plain = create_trainer(model, tiny_config(tmp_path / "plain"), **data)
    assert type(plain) is UnlearningTrainer
    pytest.importorskip("pyreft")
    from hf_unlearn.grun import GRUNConfig, GRUNModel, GRUNTrainer

    grun = create_trainer(model, tiny_config(tmp_path / "grun"), grun_config=GRUNConfig(layers=[1]), **data)
    assert isinstance(grun, GRUNTrainer) and isinstance(grun.model, GRUNModel)
    with pytest.raises(ValueError, match="cannot be combined with a peft adapter"):
        create_trainer(
            model, tiny_config(tmp_path), grun_config=GRUNConfig(layers=[1]), peft_config=LoraConfig(), **data
        )
