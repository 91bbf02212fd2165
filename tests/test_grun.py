"""GRUN (gated representation unlearning, arXiv 2502.17823) as a pyreft intervention: tests on the tiny TOFU model."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
from helpers import DEVICES, make_trainer, tiny_config
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.demo.tiny import tiny_llama
from hf_unlearn.grun import GRUNConfig
from hf_unlearn.losses import mean_nll

pytest.importorskip("pyreft")

from hf_unlearn.grun import (  # noqa: E402  (needs pyreft)
    GatedLoreftIntervention,
    GRUNModel,
    GRUNTrainer,
    get_grun_model,
    load_grun_model,
    save_grun_model,
)

# The tiny model is small enough that thread hand-offs dominate a step; one thread is several times faster on a
# shared CPU (and leaves the other cores to other work).
GRUN_STEPS, GRUN_LR = 160, 5e-2


pytestmark = pytest.mark.usefixtures("one_thread")


def qa_batch(tokenizer, questions, answers):
    encoder = PromptEncoder(tokenizer)
    pairs = [encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(questions, answers)]
    return pad_examples(pairs, tokenizer.pad_token_id)


@torch.no_grad()
def answer_nll(model, tokenizer, questions, answers) -> float:
    """Mean per-token NLL of the answers; labels tell a GRUN model where each prompt ends."""
    model.eval()
    batch = qa_batch(tokenizer, questions, answers)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).logits
    return mean_nll(logits, batch["labels"]).mean().item()


def mean_gate(model, tokenizer, questions, answers, request: int = -1) -> float:
    batch = qa_batch(tokenizer, questions, answers)
    return (
        model.gate_values(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])[request].mean().item()
    )


def train_grun(model, tokenizer, forget, retain, output_dir, steps=GRUN_STEPS, **overrides):
    """Train a GRUN model `steps` steps at GRUN_LR (constant, batches of 8, one log at the end); leave it in eval
    mode; the trainer."""
    trainer = make_trainer(
        model,
        tokenizer,
        forget,
        retain,
        output_dir,
        trainer_cls=GRUNTrainer,
        max_steps=steps,
        learning_rate=GRUN_LR,
        per_device_train_batch_size=8,
        lr_scheduler_type="constant",
        logging_steps=steps,
        **overrides,
    )
    trainer.train()
    model.eval()
    return trainer


@pytest.fixture(scope="module")
def trained(target_model_dir, tokenizer, tofu, tmp_path_factory):
    """GRUN (GA, gates at both layers) trained on forget01 (2 authors) against retain99, once for the module."""
    base = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    grun = get_grun_model(base, GRUNConfig(layers=[0, 1], forget_loss="ga"))
    trainer = train_grun(grun, tokenizer, tofu["forget01"], tofu["retain99"], tmp_path_factory.mktemp("grun"))
    return grun, trainer


# ---------------------------------------------------------------------------------------------------- the edit
def test_gated_loreft_matches_formula():
    torch.manual_seed(0)
    module = GatedLoreftIntervention(embed_dim=16, low_rank_dimension=3, gate="mlp", gate_hidden_sizes=(8, 4))
    h = torch.randn(5, 1, 16, dtype=torch.bfloat16)
    out = module(h)
    hf = h.float()
    R = module.rotate_layer.weight.T  # rows orthonormal, [r, d]
    torch.testing.assert_close(R @ R.T, torch.eye(3), atol=1e-5, rtol=0)
    s = torch.sigmoid(module.gate(hf))
    expected = hf + s * ((module.learned_source(hf) - hf @ R.T) @ R)
    assert out.dtype == torch.bfloat16 and module.learned_source.weight.dtype == torch.float32
    torch.testing.assert_close(out, expected.to(torch.bfloat16), atol=0, rtol=0)
    torch.testing.assert_close(module.last_gate_logits, module.gate(hf).squeeze(-1))


def test_edit_only_at_last_prompt_token(target_model, tokenizer, tofu):
    grun = get_grun_model(target_model, GRUNConfig(layers=[0, 1]))
    data = tofu["forget01"].select(range(4))
    batch = qa_batch(tokenizer, data["question"], data["answer"])
    out = grun(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    with grun.disable_adapter():
        ref = grun(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert "gate_logits" not in ref and out.gate_logits[0].shape == (4, 2)
    for row in range(4):
        prompt_end = int((batch["labels"][row] != -100).nonzero()[0]) - 1
        same = (out.logits[row] - ref.logits[row]).abs().amax(dim=-1) == 0
        assert same[:prompt_end].all() and not same[prompt_end]  # causal: nothing before the edit moves
    assert {n for n, p in grun.named_parameters() if p.requires_grad} <= {
        n for n, _ in grun.named_parameters() if "interventions." in n or "grun_modules." in n
    }
    assert not any(p.requires_grad for p in grun.model.parameters())


# ---------------------------------------------------------------------------------------------------- training
def test_gate_fires_on_forget_authors_only(trained, tokenizer, tofu):
    grun, trainer = trained
    forget, retain = tofu["forget01_perturbed"], tofu["retain_perturbed"]
    gates = {
        "forget": mean_gate(grun, tokenizer, forget["question"], forget["answer"]),
        "forget_paraphrased": mean_gate(grun, tokenizer, forget["paraphrased_question"], forget["answer"]),
        "retain": mean_gate(grun, tokenizer, retain["question"], retain["answer"]),
        "retain_paraphrased": mean_gate(grun, tokenizer, retain["paraphrased_question"], retain["answer"]),
    }
    assert gates["forget"] > 0.55 and gates["retain"] < 0.4, gates
    assert gates["forget"] - gates["retain"] > 0.25, gates
    assert gates["forget_paraphrased"] - gates["retain_paraphrased"] > 0.1, gates
    logged = trainer.state.log_history[0]
    assert logged["grun/gate_forget"] > logged["grun/gate_retain"]


def test_forgets_with_less_retain_damage_than_full_ga(trained, target_model, tokenizer, tofu):
    grun, _ = trained
    forget, retain = tofu["forget01"], tofu["retain99"]
    base_f = answer_nll(target_model, tokenizer, forget["question"], forget["answer"])
    base_r = answer_nll(target_model, tokenizer, retain["question"], retain["answer"])
    grun_f = answer_nll(grun, tokenizer, forget["question"], forget["answer"]) - base_f
    grun_r = answer_nll(grun, tokenizer, retain["question"], retain["answer"]) - base_r
    assert grun_f > 0.1, grun_f

    # Full-parameter GA, step by step until it removes as much: its retain loss rises far more.
    model = target_model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    batch = qa_batch(tokenizer, forget["question"], forget["answer"])
    for _ in range(200):
        loss = -mean_nll(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
        ).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if answer_nll(model, tokenizer, forget["question"], forget["answer"]) - base_f >= grun_f:
            break
        model.train()
    else:
        pytest.fail("full-parameter GA did not reach GRUN's forget loss")
    full_r = answer_nll(model, tokenizer, retain["question"], retain["answer"]) - base_r
    assert grun_r < 0.5 * full_r, (grun_r, full_r)


def test_save_load_round_trip_is_exact(trained, target_model_dir, tokenizer, tofu, tmp_path):
    grun, _ = trained
    save_grun_model(grun, tmp_path)
    config = json.loads((tmp_path / "grun_config.json").read_text())
    assert config["base_model_name_or_path"] == str(target_model_dir)
    assert config["requests"][0]["layers"] == [0, 1] and config["requests"][0]["forget_loss"] == "ga"
    assert (tmp_path / "grun_interventions.safetensors").is_file()

    loaded = load_grun_model(AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32), tmp_path)
    assert isinstance(loaded, GRUNModel) and not any(p.requires_grad for p in loaded.parameters())
    for original, restored in zip(grun.requests[0].modules.values(), loaded.requests[0].modules.values()):
        assert restored.learned_source.weight.dtype == torch.float32
        assert torch.equal(original.rotate_layer.weight, restored.rotate_layer.weight)
    data = tofu["forget01"].select(range(6))
    batch = qa_batch(tokenizer, data["question"], data["answer"])
    with torch.no_grad():
        a = grun(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        b = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.gate_logits[0], b.gate_logits[0], atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_save_load_is_exact_on_a_bfloat16_base_model(device, target_model_dir, tokenizer, tofu, tmp_path):
    """pyreft's loader puts interventions on CUDA and in the base model's dtype; ours keeps float32, on the base
    model's device, and reproduces the outputs bit for bit."""

    def base():
        return AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.bfloat16).to(device)

    torch.manual_seed(0)
    grun = get_grun_model(base(), GRUNConfig(layers=[0, 1]))
    with torch.no_grad():  # a non-trivial gate and edit, as after training
        for param in grun.grun_modules.parameters():
            param.add_(0.05 * torch.randn_like(param))
    save_grun_model(grun, tmp_path)
    loaded = load_grun_model(base(), tmp_path)
    for module in loaded.requests[0].modules.values():
        assert {(p.device.type, p.dtype) for p in module.parameters()} == {(device, torch.float32)}
    data = tofu["forget01"].select(range(6))
    batch = {k: v.to(device) for k, v in qa_batch(tokenizer, data["question"], data["answer"]).items()}
    grun.eval()
    with torch.no_grad():
        a, b = grun(**batch), loaded(**batch)
    assert a.logits.dtype == torch.bfloat16
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.gate_logits[0], b.gate_logits[0], atol=0, rtol=0)
    # Modules saved from either device load anywhere with the same values.
    on_cpu = load_grun_model(AutoModelForCausalLM.from_pretrained(target_model_dir), tmp_path)
    for name, value in grun.grun_modules.state_dict().items():
        assert torch.equal(on_cpu.grun_modules.state_dict()[name], value.cpu()), name


def test_generate_edits_prompt_with_left_padding(trained, tokenizer, tofu):
    grun, _ = trained
    encoder = PromptEncoder(tokenizer)
    prompts = [encoder.encode_prompt([{"role": "user", "content": q}]) for q in tofu["forget01"]["question"][:3]]
    width = max(map(len, prompts))
    ids = torch.full((3, width), tokenizer.pad_token_id)
    mask = torch.zeros((3, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    batched = grun.generate(input_ids=ids, attention_mask=mask, **kwargs)
    with grun.disable_adapter():
        unedited = grun.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert not torch.equal(batched, unedited)
    for row, prompt in enumerate(prompts):  # the edit lands on each row's last prompt token, whatever its padding
        single = grun.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)), **kwargs)
        assert batched[row, width:].tolist() == single[0, len(prompt) :].tolist()


def test_tofu_evaluator_scores_with_edit(trained, target_model, tokenizer, tofu):
    grun, _ = trained
    data = {"forget": tofu["forget01_perturbed"], "retain": tofu["retain_perturbed"]}
    kwargs = dict(
        forget_split="forget01",
        splits=["retain", "forget"],
        datasets=data,
        max_questions=4,
        max_new_tokens=4,
        batch_size=8,
        progress=False,
    )
    from hf_unlearn.evaluation.tofu import TOFUEvaluator

    evaluator = TOFUEvaluator(grun, tokenizer, **kwargs)
    summary = evaluator.evaluate()
    log = evaluator.logs["forget"]
    # The evaluator's teacher-forced losses equal ours, which locate the prompt from the labels.
    questions = tofu["forget01_perturbed"].select(range(4))
    ours = [answer_nll(grun, tokenizer, [q], [a]) for q, a in zip(questions["question"], questions["answer"])]
    evaluated = [log["avg_gt_loss"][key] for key in sorted(log["avg_gt_loss"], key=int)]
    torch.testing.assert_close(torch.tensor(evaluated), torch.tensor(ours), atol=1e-4, rtol=0)
    base = TOFUEvaluator(target_model, tokenizer, **kwargs)
    base_summary = base.evaluate()
    base_losses = [base.logs["forget"]["avg_gt_loss"][key] for key in sorted(log["avg_gt_loss"], key=int)]
    assert sum(evaluated) > sum(base_losses)  # the edit makes the forget answers less likely
    assert set(summary) == set(base_summary) and len(log["generated_text"]) == 4


# ---------------------------------------------------------------------------------------------------- sequential
def test_sequential_requests_each_remove_their_own_author(target_model_dir, tokenizer, tofu, tmp_path):
    forget = tofu["forget01"]
    author_a, author_b = forget.select(range(20)), forget.select(range(20, 40))
    base = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    base_nll = {
        k: answer_nll(base, tokenizer, d["question"], d["answer"]) for k, d in (("a", author_a), ("b", author_b))
    }
    first = get_grun_model(base, GRUNConfig(layers=[0, 1]))
    # Each request's retain data also holds the other author, so each gate learns its own request.
    retain_a = tofu["retain99"].select(range(120))
    train_grun(first, tokenizer, author_a, _concat(retain_a, author_b), tmp_path / "a", steps=100)
    save_grun_model(first, tmp_path / "a")
    frozen = {n: p.detach().clone() for n, p in first.grun_modules.named_parameters()}

    second = get_grun_model(first, GRUNConfig(layers=[0, 1]))
    train_grun(second, tokenizer, author_b, _concat(retain_a, author_a), tmp_path / "b", steps=100)
    for name, value in second.grun_modules["request_0"].named_parameters():
        assert torch.equal(value, frozen[f"request_0.{name}"]), f"request 0's {name} changed while request 1 trained"
    gate = {
        (r, k): mean_gate(second, tokenizer, d["question"], d["answer"], request=r)
        for r in (0, 1)
        for k, d in (("a", author_a), ("b", author_b))
    }

    assert gate[0, "a"] > gate[0, "b"] + 0.2 and gate[1, "b"] > gate[1, "a"] + 0.2, gate
    for key, data in (("a", author_a), ("b", author_b)):
        assert answer_nll(second, tokenizer, data["question"], data["answer"]) > base_nll[key] + 0.05

    save_grun_model(second, tmp_path / "ab")
    stacked = load_grun_model(
        AutoModelForCausalLM.from_pretrained(target_model_dir), [tmp_path / "a", tmp_path / "ab"]
    )
    assert len(stacked.requests) == 2  # request 0 is in both folders and loaded once
    batch = qa_batch(tokenizer, author_a["question"][:4], author_a["answer"][:4])
    with torch.no_grad():
        expected = second(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        got = stacked(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    torch.testing.assert_close(got.logits, expected.logits, atol=0, rtol=0)


def _concat(*datasets):
    from datasets import concatenate_datasets

    return concatenate_datasets([d.select_columns(["question", "answer"]) for d in datasets])


# ---------------------------------------------------------------------------------------------------- GRU, NPO
def test_grun_with_gru_updates_only_intervention_parameters(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    grun = get_grun_model(target_model, GRUNConfig(layers=[1]))
    base_before = {n: p.detach().clone() for n, p in grun.model.named_parameters()}
    edit_before = {n: p.detach().clone() for n, p in grun.grun_modules.named_parameters()}
    trainer = train_grun(grun, tokenizer, small_forget, small_retain, tmp_path, steps=1, rectification="gru")
    assert all(torch.equal(p, base_before[n]) for n, p in grun.model.named_parameters())
    assert all(not torch.equal(p, edit_before[n]) for n, p in grun.grun_modules.named_parameters())
    assert trainer._rectifier is not None
    assert "gru/cosine" in trainer.state.log_history[0]


def test_grun_under_gru_projects_the_whole_objective_gate_terms_included(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    """The step GRU takes is the gradient of GRUN's whole loss (forget, retain and both gate terms: what GRUNTrainer
    minimises without GRU) projected off the gradient of the retain NLL (gru_ema=1: that step's own)."""
    import copy

    from transformers import TrainerCallback

    grun = get_grun_model(target_model, GRUNConfig(layers=[1], forget_loss="npo"))
    initial = copy.deepcopy(grun)
    trainer = make_trainer(
        grun,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        trainer_cls=GRUNTrainer,
        rectification="gru",
        gru_ema=1.0,
        optim="sgd",
        learning_rate=0.1,
        max_grad_norm=0.0,
        max_steps=1,
    )
    recorded, stepped = [], []
    collate = trainer.data_collator
    trainer.data_collator = lambda rows: recorded.append(collate(rows)) or recorded[-1]

    class Capture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            stepped.append([p.grad.clone() for p in model.parameters() if p.requires_grad])

    trainer.add_callback(Capture())
    trainer.train()

    params = [p for p in initial.parameters() if p.requires_grad]
    objective = trainer.compute_loss(initial, recorded[0])  # forget + retain + gate terms, on the initial modules
    g_o = torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective, params)])
    direction = trainer.gru_direction_loss_fn(trainer.loss_context(initial, recorded[0]))
    g_r = torch.cat([g.reshape(-1) for g in torch.autograd.grad(direction, params)])
    dot = g_o @ g_r
    expected = g_o - min(float(dot), 0.0) / float(g_r @ g_r) * g_r
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in stepped[0]]), expected, rtol=1e-4, atol=1e-7)
    names = [n for n, p in initial.named_parameters() if p.requires_grad]
    gate = [i for i, n in enumerate(names) if "gate" in n]
    assert gate and all(stepped[0][i].abs().sum() > 0 for i in gate), "the gate terms train the gate"


def test_gradient_checkpointing_trains_the_same_without_backpropagating_below_the_edits(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    """transformers' checkpointing makes the embeddings' output require grad (for adapters inside the layers); GRUN
    undoes it, so the frozen layer below the edit never sees a backward, and the steps equal unchecked ones."""
    results = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
        grun = get_grun_model(base, GRUNConfig(layers=[1]))
        backward_calls = []
        base.model.layers[0].register_full_backward_hook(lambda *args, calls=backward_calls: calls.append(1))
        train_grun(
            grun,
            tokenizer,
            small_forget,
            small_retain,
            tmp_path / str(checkpointing),
            steps=2,
            gradient_checkpointing=checkpointing,
        )
        assert base.model.layers[0].gradient_checkpointing is checkpointing
        results[checkpointing] = ({n: p.detach() for n, p in grun.grun_modules.named_parameters()}, backward_calls)
    (unchecked, calls_unchecked), (checked, calls_checked) = results[False], results[True]
    assert calls_unchecked == [] and calls_checked == []
    for name, value in unchecked.items():
        torch.testing.assert_close(checked[name], value, atol=1e-6, rtol=1e-5)


class _RecordingGRUNTrainer(GRUNTrainer):
    """Keeps the loss of every training step and the gradients of the gated modules before the optimizer step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_losses, self.grads = [], {}
        trainer = self

        class _GradsBeforeStep(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                modules = trainer.accelerator.unwrap_model(trainer.model).grun_modules
                trainer.grads = {n: p.grad.detach().clone() for n, p in modules.named_parameters() if p.requires_grad}

        self.add_callback(_GradsBeforeStep())

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.step_losses.append(loss.detach().clone())
        return loss


@pytest.mark.parametrize(("forget_loss", "rectification"), [("ga", None), ("npo", None), ("ga", "gru")])
def test_one_step_with_gradient_checkpointing_equals_one_without(
    tokenizer, small_forget, small_retain, tmp_path, forget_loss, rectification
):
    """Edits at layers 1 and 3 of 4, with a checkpointed layer between them: the loss and the gate and edit
    gradients of a step are those of an unchecked step. Before transformers 5.23 the edited layers' checkpoints
    took GRUN's hooks in, and the backward's recompute (hooks gone) raised a CheckpointError."""
    results = {}
    for checkpointing in (False, True):
        base = tiny_llama(len(tokenizer), num_layers=4, hidden_size=64, seed=0)
        grun = get_grun_model(base, GRUNConfig(layers=[1, 3], forget_loss=forget_loss))
        backward_calls = []
        base.model.layers[0].register_full_backward_hook(lambda *args, calls=backward_calls: calls.append(1))
        trainer = make_trainer(
            grun,
            tokenizer,
            small_forget,
            small_retain,
            tmp_path / f"{checkpointing}",
            trainer_cls=_RecordingGRUNTrainer,
            max_steps=1,
            per_device_train_batch_size=4,
            gradient_checkpointing=checkpointing,
            rectification=rectification,
            max_grad_norm=0.0,
        )
        trainer.train()
        assert [layer.gradient_checkpointing for layer in base.model.layers] == [checkpointing] * 4
        assert backward_calls == [], "no backward below the lowest edit"
        assert len(trainer.step_losses) == 1 and trainer.grads
        results[checkpointing] = trainer.step_losses[0], trainer.grads
    (loss, grads), (checked_loss, checked_grads) = results[False], results[True]
    torch.testing.assert_close(checked_loss, loss, rtol=1e-5, atol=0)
    assert checked_grads.keys() == grads.keys()
    assert any("gate" in name for name in grads) and any("rotate_layer" in name for name in grads)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(checked_grads[name], grad, rtol=1e-5, atol=1e-8, msg=name)


def test_npo_reference_is_the_unedited_model_without_copy(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    grun = get_grun_model(target_model, GRUNConfig(layers=[0, 1], forget_loss="npo"))
    args = tiny_config(tmp_path, max_steps=2, learning_rate=GRUN_LR)
    trainer = make_trainer(grun, tokenizer, small_forget, small_retain, args=args, trainer_cls=GRUNTrainer)
    assert trainer.ref_model is None and trainer._reference_is_base_model
    batch = qa_batch(tokenizer, small_forget["question"][:3], small_forget["answer"][:3])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        reference = trainer._reference_forward(grun, inputs).logits
        plain = grun.model(**inputs).logits
    torch.testing.assert_close(reference, plain, atol=0, rtol=0)
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.state.log_history[-2]["loss"]))
    assert trainer.args.forget_loss == "npo" and trainer.args.alpha == 1.0
    assert args.forget_loss == "ga", "the caller's config is not changed"


# ---------------------------------------------------------------------------------------------------- errors
def test_a_run_is_reproduced_by_its_seed_whatever_the_global_random_state(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    """GRUN's modules are created before the trainer seeds everything: `create_trainer` initialises them from the
    training seed, so two runs with the same seed train the same edits, and the global random state is left alone."""

    def run(seed: int, global_seed: int) -> list[torch.Tensor]:
        torch.manual_seed(global_seed)
        base = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
        trainer = make_trainer(  # through create_trainer, given a grun_config
            base,
            tokenizer,
            small_forget,
            small_retain,
            tmp_path / f"{seed}_{global_seed}",
            grun_config=GRUNConfig(layers=[1], forget_loss="npo"),
            max_steps=2,
            learning_rate=1e-2,
            seed=seed,
        )
        initial = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
        trainer.train()
        return initial + [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]

    first, again, other = run(0, global_seed=1), run(0, global_seed=2), run(1, global_seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "same seed, same initial and trained edits"
    assert not all(torch.equal(a, b) for a, b in zip(first, other)), "another seed, other edits"
    state = torch.random.get_rng_state()
    get_grun_model(AutoModelForCausalLM.from_pretrained(target_model_dir), GRUNConfig(layers=[1]), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state), "a seeded initialisation leaves the global state alone"


def test_missing_pyreft_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyreft", None)  # `import pyreft` now raises ImportError
    for name in ("intervention", "model", "io", "trainer", "evaluation"):
        monkeypatch.delitem(sys.modules, f"hf_unlearn.grun.{name}", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'hf-unlearn\[grun\]'"):
        importlib.import_module("hf_unlearn.grun.model")
    assert GRUNConfig(layers=[0]).rank == 4  # the config needs no pyreft


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": [0, 2]}, "layer 2 is out of range: the model has 2 decoder layers"),
        ({"layers": [0, -3]}, "layer -3 is out of range"),
        ({"layers": [1, -1]}, "same layer twice"),
    ],
)
def test_bad_layers(target_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_grun_model(target_model, GRUNConfig(**kwargs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": [0], "gate": "attention"}, "Unknown GRUN gate 'attention'"),
        ({"layers": []}, "at least one decoder layer"),
        ({"layers": [0], "forget_loss": "dpo"}, "Unknown GRUN forget_loss"),
        ({"layers": [0], "position": "all"}, "last prompt token"),
        ({"layers": [0], "rank": 0}, "rank must be >= 1"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GRUNConfig(**kwargs)


def test_trainer_rejects_plain_or_frozen_models(
    target_model, tokenizer, small_forget, small_retain, tmp_path, target_model_dir
):
    with pytest.raises(TypeError, match="get_grun_model"):
        make_trainer(target_model, None, small_forget, small_retain, tmp_path, trainer_cls=GRUNTrainer)
    grun = get_grun_model(target_model, GRUNConfig(layers=[0]))
    save_grun_model(grun, tmp_path / "saved")
    loaded = load_grun_model(AutoModelForCausalLM.from_pretrained(target_model_dir), tmp_path / "saved")
    with pytest.raises(ValueError, match="no trainable parameter"):
        make_trainer(loaded, None, small_forget, small_retain, tmp_path, trainer_cls=GRUNTrainer)
    with pytest.raises(FileNotFoundError, match="grun_config.json"):
        load_grun_model(AutoModelForCausalLM.from_pretrained(target_model_dir), tmp_path)
    from datasets import Dataset

    text = Dataset.from_dict({"text": ["Some article.", "Another one."]})
    with pytest.raises(ValueError, match="the forget dataset is raw text"):
        make_trainer(grun, None, text, small_retain, tmp_path, trainer_cls=GRUNTrainer)
    # FSDP / DeepSpeed would save through their own state-dict paths and lose the GRUN modules: refused.
    trainer = make_trainer(grun, None, small_forget, small_retain, tmp_path, trainer_cls=GRUNTrainer)
    for flag in ("is_fsdp_enabled", "is_deepspeed_enabled"):
        setattr(trainer, flag, True)  # what accelerate sets under an FSDP / DeepSpeed config
        with pytest.raises(ValueError, match="not FSDP or DeepSpeed.*multi_gpu.yaml"):
            trainer._check_parallelism_supported()
        setattr(trainer, flag, False)


def test_default_retain_weights_follow_the_paper():
    assert GRUNConfig(layers=[0], forget_loss="ga").retain_weight == 2.0
    assert GRUNConfig(layers=[0], forget_loss="npo").retain_weight == 1.0
    assert GRUNConfig(layers=[0], forget_loss="idk", retain_weight=3).retain_weight == 3.0


def test_resuming_from_a_checkpoint_ends_like_an_uninterrupted_run(target_model_dir, tokenizer, tofu, tmp_path):
    def run(output_dir, resume=None):
        base = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
        torch.manual_seed(resume is not None)  # a resumed run must not depend on its fresh initialisation
        model = get_grun_model(base, GRUNConfig(layers=[0, 1], forget_loss="ga"))
        trainer = make_trainer(
            model,
            tokenizer,
            tofu["forget01"],
            tofu["retain99"],
            output_dir,
            trainer_cls=GRUNTrainer,
            max_steps=4,
            learning_rate=GRUN_LR,
            save_strategy="steps",
            save_steps=2,
        )
        trainer.train(resume_from_checkpoint=resume)
        return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    uninterrupted = run(tmp_path / "a")
    assert (tmp_path / "a" / "checkpoint-2" / "grun_interventions.safetensors").is_file()
    resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-2"))
    assert uninterrupted.keys() == resumed.keys()
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, atol=1e-6, rtol=0, msg=name)
