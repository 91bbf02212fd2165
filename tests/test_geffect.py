"""G-effect analysis: definition, decompositions, first-order meaning, LoRA, the callback, the CLI and the plots."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_trainer
from launch import REPO, run_accelerate
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn.analysis import (
    GEffect,
    GEffectCallback,
    accumulated,
    build_geffect_batch,
    compute_g_effect,
    load_geffect_records,
    parameter_groups,
    plot_geffect_comparison,
    plot_geffect_heatmap,
    write_json_atomic,
)
from hf_unlearn.cli import main
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama
from hf_unlearn.losses import LossContext, get_loss, mean_nll


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tofu, tokenizer):
    """A small Llama that learned the forget answers and some retain answers, saved once (seconds, unlike the
    session's `target_model_dir`, whose 12 epochs on 200 questions take minutes on a shared CPU)."""
    forget, retain = tofu["forget01"], tofu["retain99"].select(range(24))
    model = tiny_llama(len(tokenizer), num_layers=2, hidden_size=32, seed=0)
    questions = list(forget["question"]) + list(retain["question"])
    answers = list(forget["answer"]) + list(retain["answer"])
    finetune_on_qa(model, tokenizer, questions, answers, epochs=4, learning_rate=3e-3, progress=False)
    path = tmp_path_factory.mktemp("geffect_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def batch(tofu, tokenizer):
    return build_geffect_batch(tokenizer, tofu["forget01"], tofu["retain99"], num_samples=4, seed=0)


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _pooled_nll(logits, labels):
    """HF's outputs.loss: the cross-entropy pooled over all answer tokens of the batch."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def _risk_grad(model, split_batch):
    out = model(input_ids=split_batch["input_ids"], attention_mask=split_batch["attention_mask"])
    risk = _pooled_nll(out.logits, split_batch["labels"])
    return torch.autograd.grad(risk, _params(model), allow_unused=True)


def _dot(a, b):
    return sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b) if x is not None and y is not None)


@torch.no_grad()
def _risk64(model, split_batch) -> float:
    """The pooled NLL risk computed in float64 throughout (the library's log-softmax runs in float32)."""
    logits = model(input_ids=split_batch["input_ids"], attention_mask=split_batch["attention_mask"]).logits.double()
    labels = split_batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float((-logp * mask).sum() / mask.sum())


def _objective_grad(model, name, batch, **kwargs):
    loss_fn = get_loss(name, "forget").from_kwargs(kwargs)
    ref = None
    if loss_fn.needs_ref_model:
        import copy

        frozen = copy.deepcopy(model).eval()
        ref = lambda inputs: frozen(**inputs)  # noqa: E731
    loss = loss_fn(LossContext(model, batch, ref))
    return torch.autograd.grad(loss, _params(model), allow_unused=True)


# ---------------------------------------------------------------------------------------------- definition
def test_ga_forget_geffect_is_minus_squared_norm_of_forget_risk_gradient(model, batch):
    result = compute_g_effect(model, "ga", batch)
    grad_f = _risk_grad(model, batch["forget"])
    grad_r = _risk_grad(model, batch["retain"])
    squared_norm = _dot(grad_f, grad_f)
    assert squared_norm > 0
    assert result.forget == pytest.approx(-squared_norm, rel=1e-5)
    assert result.forget < 0  # GA raises the forget risk
    # GA's gradient is -grad R_f, so e_r = -<grad R_r, grad R_f>
    assert result.retain == pytest.approx(-_dot(grad_r, grad_f), rel=1e-5)
    assert result.grad_norms["forget_risk"] == pytest.approx(squared_norm**0.5, rel=1e-5)
    assert result.grad_norms["objective"] == pytest.approx(squared_norm**0.5, rel=1e-5)
    with torch.no_grad():
        logits = model(input_ids=batch["forget"]["input_ids"], attention_mask=batch["forget"]["attention_mask"])
    assert result.forget_risk == pytest.approx(float(_pooled_nll(logits.logits, batch["forget"]["labels"])))
    # per-answer averaging, the variant
    per_answer = compute_g_effect(model, "ga", batch, token_average="answer")
    assert per_answer.forget_risk == pytest.approx(float(mean_nll(logits.logits, batch["forget"]["labels"]).mean()))
    assert per_answer.forget != pytest.approx(result.forget, rel=1e-3)


@pytest.mark.parametrize("name, kwargs", [("npo", {"beta": 0.1}), ("wga", {"beta": 5.0}), ("tnpo", {})])
def test_other_objectives_match_direct_autograd(model, batch, name, kwargs):
    result = compute_g_effect(model, name, batch, objective_kwargs=kwargs)
    grad_obj = _objective_grad(model, name, batch, **kwargs)
    assert result.forget == pytest.approx(_dot(_risk_grad(model, batch["forget"]), grad_obj), rel=1e-5)
    assert result.retain == pytest.approx(_dot(_risk_grad(model, batch["retain"]), grad_obj), rel=1e-5)
    assert result.forget < 0, f"{name} must raise the forget risk on a model that knows the forget set"


def test_groups_cover_every_parameter_once_and_sum_to_the_total(model, batch):
    groups = parameter_groups(model)
    n_layers = model.config.num_hidden_layers
    assert list(groups) == ["embeddings", *[f"layer.{i}" for i in range(n_layers)], "head", "other"]
    seen = [id(p) for members in groups.values() for _, p in members]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(set(seen)) == len(seen)
    assert any("norm" in name for name, _ in groups["other"])

    result = compute_g_effect(model, "npo", batch)
    assert list(result.per_group) == list(groups)
    assert sum(f for f, _ in result.per_group.values()) == pytest.approx(result.forget, rel=1e-9)
    assert sum(r for _, r in result.per_group.values()) == pytest.approx(result.retain, rel=1e-9)
    # and each group is the dot product restricted to that group's parameters
    grad_obj = dict(zip(_params(model), _objective_grad(model, "npo", batch)))
    grad_f = dict(zip(_params(model), _risk_grad(model, batch["forget"])))
    head = [p for _, p in groups["head"]]
    assert result.per_group["head"][0] == pytest.approx(
        _dot([grad_f[p] for p in head], [grad_obj[p] for p in head]), rel=1e-5
    )


def test_per_instance_values_average_to_the_batch_value(model, batch):
    whole = compute_g_effect(model, "wga", batch)
    result = compute_g_effect(model, "wga", batch, per_instance=True)
    assert len(result.per_instance["forget"]) == 4 and len(result.per_instance["retain"]) == 4
    for split in ("forget", "retain"):
        values = result.per_instance[split]
        # pooled risk: each answer weighs its share of the answer tokens
        tokens = (batch[split]["labels"][:, 1:] != -100).sum(-1).double()
        weighted = sum(v * float(n) for v, n in zip(values, tokens)) / float(tokens.sum())
        assert weighted == pytest.approx(getattr(result, split), rel=1e-6)
        assert getattr(result, split) == pytest.approx(getattr(whole, split), rel=1e-5)
        assert len(set(values)) == len(values), "instances differ"
    per_answer = compute_g_effect(model, "wga", batch, per_instance=True, token_average="answer")
    values = per_answer.per_instance["forget"]
    assert sum(values) / len(values) == pytest.approx(per_answer.forget, rel=1e-6)
    # instance 2 of the forget split: its own mean-NLL gradient against the whole objective's gradient
    one = {k: v[2:3] for k, v in batch["forget"].items()}
    expected = _dot(_risk_grad(model, one), _objective_grad(model, "wga", batch))
    assert result.per_instance["forget"][2] == pytest.approx(expected, rel=1e-5)


def test_micro_batches_give_the_same_values(model, batch):
    whole = compute_g_effect(model, "npo", batch)
    chunked = compute_g_effect(model, "npo", batch, batch_size=3)
    assert chunked.forget == pytest.approx(whole.forget, rel=1e-5)
    assert chunked.retain == pytest.approx(whole.retain, rel=1e-5)
    # Over micro-batches the objective is the example-weighted mean of the micro-batch objectives: exact for
    # per-answer averages (a pooled token mean is pooled per micro-batch, as under gradient accumulation).
    answer = {"token_average": "answer"}
    with_retain = compute_g_effect(model, "ga", batch, retain_objective="nll", batch_size=3, **answer)
    expected = compute_g_effect(model, "ga", batch, retain_objective="nll", **answer)
    assert with_retain.retain == pytest.approx(expected.retain, rel=1e-5)
    assert with_retain.retain - compute_g_effect(model, "ga", batch, **answer).retain == pytest.approx(
        expected.grad_norms["retain_risk"] ** 2, rel=1e-4
    ), "adding alpha * R_r adds alpha * ||grad R_r||^2 to the retain G-effect"


@pytest.mark.parametrize("name", ["ga", "wga"])
def test_sign_and_size_match_the_first_order_change_of_the_risks(model, batch, name):
    """A step theta - eta * grad L changes R by -eta * e (finite differences, float64 model)."""
    model = model.double()
    result = compute_g_effect(model, name, batch)
    grad_obj = _objective_grad(model, name, batch)

    def risks():
        return [_risk64(model, batch[split]) for split in ("forget", "retain")]

    before = risks()
    eta = 1e-4 / abs(result.forget)  # a forget-risk change of about 1e-4
    with torch.no_grad():
        for p, g in zip(_params(model), grad_obj):
            p -= eta * g
    after = risks()
    change_f, change_r = after[0] - before[0], after[1] - before[1]
    assert change_f > 0 and result.forget < 0  # the risk rises: a negative G-effect
    assert change_f == pytest.approx(-eta * result.forget, rel=0.02)
    assert change_r == pytest.approx(-eta * result.retain, rel=0.05, abs=2e-6)
    assert (change_r > 0) == (result.retain < 0)


def test_one_group_step_moves_the_risk_by_that_groups_share(model, batch):
    model = model.double()
    result = compute_g_effect(model, "ga", batch)
    groups = parameter_groups(model)
    group = "layer.1"
    members = {id(p) for _, p in groups[group]}
    grad_obj = _objective_grad(model, "ga", batch)

    def forget_risk():
        return _risk64(model, batch["forget"])

    before = forget_risk()
    e_group = result.per_group[group][0]
    eta = 1e-4 / abs(e_group)
    with torch.no_grad():
        for p, g in zip(_params(model), grad_obj):
            if id(p) in members:
                p -= eta * g
    assert forget_risk() - before == pytest.approx(-eta * e_group, rel=0.02)


def test_model_state_grads_and_mode_are_restored(model, batch):
    model.train()
    params = _params(model)
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(i)) if i % 2 else None
    before = [p.detach().clone() for p in params]
    compute_g_effect(model, "ga", batch, per_instance=True)
    assert model.training
    for i, (p, old) in enumerate(zip(params, before)):
        assert torch.equal(p, old)
        if i % 2:
            assert torch.equal(p.grad, torch.full_like(p, float(i)))
        else:
            assert p.grad is None


def test_lora_model_uses_only_the_adapter_parameters(model, batch):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    groups = parameter_groups(model)
    assert list(groups) == ["layer.0", "layer.1"]
    assert all("lora_" in name for members in groups.values() for name, _ in members)
    result = compute_g_effect(model, "ga", batch)
    grad_f = _risk_grad(model, batch["forget"])
    assert result.forget == pytest.approx(-_dot(grad_f, grad_f), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())
    # NPO's reference is the model with its adapter off (no copy); with init_lora_weights=False theta != ref
    npo = compute_g_effect(model, "npo", batch)
    assert npo.forget < 0 and npo.forget != pytest.approx(result.forget, rel=1e-3)


# ---------------------------------------------------------------------------------------------- bad input
def test_unknown_objective_lists_the_choices(model, batch):
    with pytest.raises(ValueError, match="Unknown loss 'gaa'.*Did you mean 'ga'.*npo.*wga"):
        compute_g_effect(model, "gaa", batch)
    with pytest.raises(ValueError, match="retain loss"):
        compute_g_effect(model, "nll", batch)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        compute_g_effect(model, "npo", batch, objective_kwargs={"betta": 1})


def test_empty_or_malformed_batches_are_rejected(model, batch, tokenizer, tofu):
    empty = {k: v[:0] for k, v in batch["forget"].items()}
    with pytest.raises(ValueError, match="forget batch is empty"):
        compute_g_effect(model, "ga", empty, batch["retain"])
    with pytest.raises(ValueError, match="retain batch is required"):
        compute_g_effect(model, "ga", batch["forget"])
    no_answer = {k: v.clone() for k, v in batch["retain"].items()}
    no_answer["labels"][1] = -100
    with pytest.raises(ValueError, match=r"Example\(s\) \[1\] of the retain batch have no answer"):
        compute_g_effect(model, "ga", batch["forget"], no_answer)
    with pytest.raises(ValueError, match="lacks"):
        compute_g_effect(model, "ga", {"input_ids": batch["forget"]["input_ids"]}, batch["retain"])
    with pytest.raises(ValueError, match="idk_batch"):
        compute_g_effect(model, "idk", batch)
    with pytest.raises(ValueError, match="retain dataset is empty"):
        build_geffect_batch(tokenizer, tofu["forget01"], tofu["retain99"].select([]))
    frozen = model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        compute_g_effect(frozen, "ga", batch)


def test_refusal_objectives_get_an_idk_split(model, tofu, tokenizer):
    batch = build_geffect_batch(tokenizer, tofu["forget01"], tofu["retain99"], num_samples=3, refusals=True)
    assert batch["idk"]["input_ids"].shape[0] == 3
    result = compute_g_effect(model, "idk", batch)
    # the objective is the refusals' NLL: its gradient is not the forget risk's (the paper finds IDK's forget
    # G-effect weak, even positive early on, at this point it need not be negative)
    ga = compute_g_effect(model, "ga", batch)
    assert result.objective == "IDK()" and abs(result.forget - ga.forget) > 1e-3 * abs(ga.forget)


# ---------------------------------------------------------------------------------------------- callback
@pytest.fixture(scope="module")
def train_data(tofu):
    """The forget and retain data of the callback's training runs: 8 forget and 16 retain questions."""
    return tofu["forget01"].select(range(8)), tofu["retain99"].select(range(16))


def test_callback_logs_and_writes_json_without_perturbing_training(model_dir, tofu, train_data, tokenizer, tmp_path):
    load = lambda: AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)  # noqa: E731
    callback = GEffectCallback(tofu["forget01"], tofu["retain99"], every_n_steps=2, num_samples=3)
    settings = dict(forget_loss="npo", max_steps=3, logging_steps=2)
    trainer = make_trainer(load(), tokenizer, *train_data, tmp_path / "with", callbacks=[callback], **settings)
    trainer.train()
    plain = make_trainer(load(), tokenizer, *train_data, tmp_path / "without", **settings)
    plain.train()

    for p, q in zip(trainer.model.parameters(), plain.model.parameters()):
        assert torch.equal(p, q), "the callback changed training"
    logged = [e for e in trainer.state.log_history if "geffect/forget" in e]
    assert [e["step"] for e in logged] == [0, 2, 3]  # at the start, every 2 steps, at the end
    assert all("geffect/retain" in e and "geffect/forget/layer.0" in e for e in logged)
    assert logged[0]["geffect/forget"] < 0
    # the trainer's own log of a step where the callback also logged still happens (on_log clears should_log)
    own = [e["step"] for e in trainer.state.log_history if "loss/forget" in e]
    assert own == [e["step"] for e in plain.state.log_history if "loss/forget" in e] and 2 in own

    saved = json.loads((tmp_path / "with" / "geffect.json").read_text())
    assert saved["forget_loss"] == "npo" and [r["step"] for r in saved["records"]] == [0, 2, 3]
    records = load_geffect_records(tmp_path / "with" / "geffect.json")
    assert records[1].forget == pytest.approx(logged[1]["geffect/forget"])
    assert [r.step for r in callback.history] == [0, 2, 3]
    assert not list((tmp_path / "with").glob(".geffect.json.*")), "no temporary file left"


def test_bound_callback_on_a_peft_trainer(model, tofu, train_data, tokenizer, tmp_path):
    from peft import LoraConfig

    trainer = make_trainer(
        model,
        tokenizer,
        *train_data,
        tmp_path,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
        max_steps=1,
        forget_loss="tnpo",
        logging_steps=1,
    )
    callback = GEffectCallback(
        tofu["forget01"], tofu["retain99"], every_n_steps=1, num_samples=2, per_instance=True, include_retain_loss=True
    )
    trainer.add_callback(callback.bind(trainer))
    trainer.train()
    assert [r.step for r in callback.history] == [0, 1]
    assert list(callback.history[0].per_group) == ["layer.0", "layer.1"]
    assert len(callback.history[-1].per_instance["forget"]) == 2
    assert "nll" in callback.history[0].objective or "RetainNLL" in callback.history[0].objective


def test_resume_drops_the_records_after_the_checkpoint(model_dir, tofu, train_data, tokenizer, tmp_path):
    """A run recorded steps 0..4 and saved checkpoint-2; resuming from it (to step 3 this time) keeps the records
    before step 2 as they were, recomputes step 2 at the checkpoint's weights, and drops the old steps 3 and 4."""
    load = lambda: AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)  # noqa: E731
    path = tmp_path / "geffect.json"

    def callback():
        return GEffectCallback(tofu["forget01"], tofu["retain99"], every_n_steps=1, num_samples=2)

    first_run = make_trainer(
        load(),
        tokenizer,
        *train_data,
        tmp_path,
        callbacks=[callback()],
        max_steps=4,
        logging_steps=2,
        save_strategy="steps",
        save_steps=2,
    )
    first_run.train()
    first = json.loads(path.read_text())["records"]
    assert [r["step"] for r in first] == [0, 1, 2, 3, 4]

    resumed = callback()
    trainer = make_trainer(
        load(), tokenizer, *train_data, tmp_path, callbacks=[resumed], max_steps=3, logging_steps=2, save_strategy="no"
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    records = json.loads(path.read_text())["records"]
    assert [r["step"] for r in records] == [0, 1, 2, 3], "the old steps 3 and 4 are dropped, none is duplicated"
    assert records[:2] == first[:2], "the records before the checkpoint are kept as they were"
    assert [r.step for r in resumed.history] == [2, 3], "the resumed run computes from the checkpoint on"
    # step 2 again, at the checkpoint's weights: the same value as the first run's
    assert records[2]["forget"] == pytest.approx(first[2]["forget"], rel=1e-5)
    assert records[2]["retain"] == pytest.approx(first[2]["retain"], rel=1e-5)
    # the step-3 record is the resumed run's own (equal to the old one only if resuming is exact; at least it is new)
    assert records[3] == resumed.history[1].to_dict()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_ddp_records_the_synchronised_model_once(model_dir, tofu, tmp_path):
    """Real 2-process gloo DDP: no deadlock, only the main process computes, logs and writes geffect.json, and each
    record equals `compute_g_effect` on the same sample at the (identical on both ranks) weights of its step."""
    run_accelerate(REPO / "tests" / "scripts" / "geffect_ddp.py", model_dir, tmp_path, timeout=240)
    reports = {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert [reports[r]["world_size"] for r in (0, 1)] == [2, 2]
    expected_steps = [0, 2, 3]  # at the start, every 2 steps, at the last step (max_steps 3)
    assert reports[0]["history_steps"] == expected_steps and reports[1]["history_steps"] == []
    assert [e["step"] for e in reports[0]["logged"]] == expected_steps and reports[1]["logged"] == []
    path = tmp_path / "geffect.json"
    assert reports[0]["json_writes"] == [str(path)] * len(expected_steps), "one write per record, by rank 0"
    assert reports[1]["json_writes"] == [], "the other process never writes the file"
    assert not list(tmp_path.glob(".geffect.json.*"))
    saved = json.loads(path.read_text())
    assert [r["step"] for r in saved["records"]] == expected_steps

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = build_geffect_batch(
        tokenizer,
        tofu["forget01"],
        tofu["retain99"],
        num_samples=reports[0]["num_samples"],
        seed=reports[0]["seed"],
        max_length=reports[0]["max_length"],
    )
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    previous = None
    for record, logged in zip(saved["records"], reports[0]["logged"]):
        step = record["step"]
        weights = [torch.load(tmp_path / f"weights_rank{r}_step{step}.pt") for r in (0, 1)]
        for name, value in weights[0].items():
            assert torch.equal(value, weights[1][name]), f"the replicas differ at step {step} ({name})"
        if previous is not None:
            assert any(not torch.equal(v, previous[k]) for k, v in weights[0].items()), "training moved the model"
        previous = weights[0]
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        assert not model.load_state_dict(weights[0], strict=False).unexpected_keys
        expected = compute_g_effect(model, "npo", batch, ref_model=reference)
        assert record["objective"] == expected.objective
        for key in ("forget", "retain", "forget_risk", "retain_risk"):
            assert record[key] == pytest.approx(getattr(expected, key), rel=1e-4, abs=1e-7), (step, key)
            assert logged[f"geffect/{key}"] == pytest.approx(record[key], rel=1e-9)
        for group, (forget, retain) in expected.per_group.items():
            assert record["per_group"][group]["forget"] == pytest.approx(forget, rel=1e-4, abs=1e-7)
            assert record["per_group"][group]["retain"] == pytest.approx(retain, rel=1e-4, abs=1e-7)
    assert saved["records"][0]["forget"] < 0


def test_callback_rejects_bad_settings(tofu):
    with pytest.raises(ValueError, match="every_n_steps"):
        GEffectCallback(tofu["forget01"], tofu["retain99"], every_n_steps=0)
    with pytest.raises(ValueError, match="retain dataset of GEffectCallback is empty"):
        GEffectCallback(tofu["forget01"], tofu["retain99"].select([]))


def test_json_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "geffect.json"
    write_json_atomic(path, {"records": [1]})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    import os

    monkeypatch.setattr(os, "fsync", crash)  # interrupted with the new text half on disk
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"records": [1, 2]})
    assert json.loads(path.read_text()) == {"records": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["geffect.json"]


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_analyze_end_to_end(model_dir, tmp_path, capsys):
    out, png = tmp_path / "g.json", tmp_path / "g.png"
    argv = ["analyze", "--model", str(model_dir), "--objective", "npo", "--forget-split", "forget01"]
    argv += ["--retain-split", "retain99", "--data-dir", "bundled", "--num-samples", "4", "--no-progress"]
    assert main([*argv, "--output", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "| layer.0 |" in printed and "| head |" in printed and "**total**" in printed
    saved = json.loads(out.read_text())
    assert saved["forget"] < 0 and set(saved["per_group"]) == {"embeddings", "layer.0", "layer.1", "head", "other"}
    assert saved["num_forget"] == 4 and saved["forget_split"] == "forget01"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_analyze_bad_objective_lists_choices(model_dir, capsys):
    assert main(["analyze", "--model", str(model_dir), "--objective", "npoo", "--data-dir", "bundled"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'npo'" in err and "wga" in err and "tnpo" in err
    assert main(["analyze", "--model", "/nonexistent/model", "--objective", "ga", "--data-dir", "bundled"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _save_unlearned(model_dir, path, state: dict | None, scale: float = 1.05):
    """A copy of the model with other weights (the "unlearned" model), and its unlearning.json when `state`."""
    from hf_unlearn.unlearning_state import UnlearningState

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(scale)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(path)
    if state is not None:
        UnlearningState(**state).write(path)
    return path


def test_cli_analyze_reference_is_the_model_before_unlearning(model_dir, tmp_path, capsys):
    argv = ["analyze", "--objective", "npo", "--forget-split", "forget01", "--retain-split", "retain99"]
    argv += ["--data-dir", "bundled", "--num-samples", "4", "--no-progress"]

    def analyze(model, name, *extra):
        capsys.readouterr()  # not what saving the models printed
        status = main([*argv, "--model", str(model), "--output", str(tmp_path / name), *extra])
        out, err = capsys.readouterr()
        return status, out, err, json.loads((tmp_path / name).read_text()) if status == 0 else None

    unlearned = _save_unlearned(
        model_dir, tmp_path / "unlearned", {"forget_loss": "npo", "base_model": str(model_dir)}
    )
    status, out, _, recorded = analyze(unlearned, "recorded.json")
    assert status == 0
    assert f"reference: {model_dir} (the model before unlearning, from {unlearned}/unlearning.json)" in out
    assert recorded["reference"] == {"kind": "model", "model": str(model_dir), "source": "unlearning.json"}
    status, out, _, explicit = analyze(unlearned, "explicit.json", "--ref-model", str(model_dir))
    assert explicit["reference"]["source"] == "--ref-model" and f"reference: {model_dir}\n" in out
    assert recorded["forget"] == pytest.approx(explicit["forget"], rel=1e-6)

    # Without unlearning.json the model is the one before unlearning: its own frozen copy (another G-effect).
    plain = _save_unlearned(model_dir, tmp_path / "plain", None)
    _, out, _, itself = analyze(plain, "itself.json")
    assert itself["reference"] == {"kind": "frozen_copy"} and "a frozen copy of" in out
    assert itself["forget"] != pytest.approx(recorded["forget"], rel=1e-3)

    # An unlearned model that records no model before unlearning (or one not found here): no guess.
    for state in ({"forget_loss": "npo"}, {"forget_loss": "npo", "base_model": "./gone/target"}):
        _save_unlearned(model_dir, tmp_path / "unrecorded", state)
        status, _, err, _ = analyze(tmp_path / "unrecorded", "refused.json")
        assert status == 2 and "Pass --ref-model MODEL" in err and err.count("\n") == 1
    status, out, _, ga = analyze(tmp_path / "unrecorded", "ga.json", "--objective", "ga")
    assert status == 0 and ga["reference"] == {"kind": "none"} and "reference: none" in out


def test_cli_analyze_reference_of_an_adapter_is_the_model_with_adapters_off(model_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    argv = ["analyze", "--model", str(tmp_path / "adapter"), "--objective", "npo", "--forget-split", "forget01"]
    argv += ["--retain-split", "retain99", "--data-dir", "bundled", "--num-samples", "2", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "g.json")]) == 0
    assert "reference: the same model with its adapters/edits switched off" in capsys.readouterr().out
    assert json.loads((tmp_path / "g.json").read_text())["reference"] == {"kind": "adapters_off"}


# ---------------------------------------------------------------------------------------------- plots
def _fake_records(scale: float) -> list[GEffect]:
    return [
        GEffect(
            forget=-scale * (s + 1),
            retain=-0.1 * scale,
            per_group={"embeddings": (-scale, 0.0), "layer.0": (-scale * s, -0.1 * scale), "head": (-scale, 0.0)},
            step=s * 2,
        )
        for s in range(4)
    ]


def test_accumulated_integrates_over_the_recorded_steps():
    steps, values = accumulated(_fake_records(1.0), "forget")
    assert steps.tolist() == [0, 2, 4, 6]
    # trapezoids of -1, -2, -3, -4 with spacing 2
    assert values.tolist() == pytest.approx([0.0, -3.0, -8.0, -15.0])
    with pytest.raises(ValueError, match="split"):
        accumulated(_fake_records(1.0), "both")


def test_plots_write_pngs(tmp_path):
    runs = {"ga": _fake_records(2.0), "wga": [r.to_dict() for r in _fake_records(1.0)]}
    for path in (
        plot_geffect_comparison(runs, tmp_path / "cmp.png"),
        plot_geffect_heatmap(_fake_records(1.0), tmp_path / "heat.png"),
    ):
        assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no G-effect records"):
        plot_geffect_comparison({"ga": []}, tmp_path / "none.png")
