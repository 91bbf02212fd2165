"""Smoothness-enhanced unlearning (`smoothing="sam"` / `"rs"`, hf_unlearn.trainer.smoothing): its configuration, the
perturbation, exact restoring of the weights, the composition with GRU (GRU projects the smoothed objective's
gradient, so it comes last), gradient accumulation (one perturbation per micro-batch), LoRA, what the run records, the
command line, and 2-process DDP against one process (slow). The step itself against the reference code is
`test_golden_smoothing.py`.

Run as a script (`accelerate launch tests/test_smoothing.py MODEL_DIR OUT_DIR PER_DEVICE_BATCH SMOOTHING`), this file
is the DDP run of `test_ddp_equals_one_process_with_the_global_batch`.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_trainer

from hf_unlearn import UnlearningConfig
from hf_unlearn.trainer.smoothing import noise_seed, sam_perturbation_

LR = 0.1
EMA = 0.8
RHO = 0.5
#: Forget losses with a stop-gradient inside (CE-U's target, the token weights of SatImp, WGA, TNPO, WTNPO).
STOP_GRADIENT_LOSSES = {"ceu", "satimp", "tnpo", "wga", "wtnpo"}


# ------------------------------------------------------------------ configuration
def _config(tmp_path, **kwargs):
    return UnlearningConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none", **kwargs)


def test_config_resolves_the_reference_defaults_and_json(tmp_path):
    assert _config(tmp_path).smoothing is None and _config(tmp_path).smoothing_kwargs is None
    assert _config(tmp_path, smoothing="sam").smoothing_kwargs == {"rho": 0.1}
    assert _config(tmp_path, smoothing="rs").smoothing_kwargs == {"sigma": 0.1, "num_samples": 3}
    config = _config(tmp_path, smoothing="rs", smoothing_kwargs='{"sigma": 1, "num_samples": 5}')
    assert config.smoothing_kwargs == {"sigma": 1.0, "num_samples": 5}
    # "none" switches a recipe's smoothing off, with its settings
    off = _config(tmp_path, smoothing="none", smoothing_kwargs={"rho": 0.3})
    assert off.smoothing is None and off.smoothing_kwargs is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(smoothing="sharp"), r"smoothing must be one of \[None, 'sam', 'rs'\], got 'sharp'"),
        (
            dict(smoothing="sam", smoothing_kwargs={"sigma": 0.1}),
            r"unknown smoothing_kwargs \['sigma'\]; it accepts \['rho'\]",
        ),
        (dict(smoothing="rs", smoothing_kwargs={"rho": 0.1}), r"it accepts \['num_samples', 'sigma'\]"),
        (dict(smoothing="sam", smoothing_kwargs={"rho": -1}), r"smoothing_kwargs\['rho'\] must be >= 0"),
        (dict(smoothing="sam", smoothing_kwargs={"rho": "0.1"}), r"must be a number"),
        (dict(smoothing="rs", smoothing_kwargs={"num_samples": 0}), r"num_samples'\] must be an integer >= 1"),
        (dict(smoothing="rs", smoothing_kwargs={"num_samples": 2.0}), r"num_samples'\] must be an integer >= 1"),
        (dict(smoothing="sam", gamma=0.0), r"gamma=0 leaves out"),
    ],
)
def test_config_errors_name_the_valid_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **kwargs)


def test_sharded_and_weight_updating_parallelisms_are_refused(target_model, tokenizer, small_forget, tmp_path):
    trainer = make_trainer(target_model, tokenizer, small_forget, small_forget, tmp_path, smoothing="sam")
    trainer._check_smoothing_supported()  # one device: supported
    for flag, name in [
        ("is_fsdp_enabled", r"FSDP \(the weights are sharded\)"),
        ("is_deepspeed_enabled", "DeepSpeed"),
    ]:
        setattr(trainer, flag, True)  # what accelerate sets under `accelerate launch` with an FSDP/DeepSpeed config
        with pytest.raises(ValueError, match=rf"smoothing='sam' supports single-device training .* not {name}"):
            trainer._check_smoothing_supported()
        setattr(trainer, flag, False)
    trainer.args.optim = "lomo"
    with pytest.raises(ValueError, match="LOMO updates the weights during the backward pass"):
        trainer._check_smoothing_supported()


# ------------------------------------------------------------------ the perturbation
def test_the_perturbation_has_norm_rho_over_all_tensors_and_is_zero_for_a_zero_gradient():
    grads = [torch.tensor([3.0, 0.0]), None, torch.tensor([[4.0]])]
    norm = sam_perturbation_(grads, 0.5)
    assert norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(grads[0], torch.tensor([0.3, 0.0]))
    torch.testing.assert_close(grads[2], torch.tensor([[0.4]]))
    assert grads[1] is None
    zeros = [torch.zeros(3)]
    assert sam_perturbation_(zeros, 0.5).item() == 0.0 and torch.equal(zeros[0], torch.zeros(3))
    doubles = [torch.tensor([1.0, 1.0], dtype=torch.float64)]
    sam_perturbation_(doubles, 1.0)
    assert doubles[0].dtype == torch.float64 and doubles[0][0].item() == pytest.approx(2**-0.5, abs=1e-15)


def test_noise_seeds_differ_by_step_and_micro_batch():
    seeds = {noise_seed(0, step, micro) for step in range(50) for micro in range(4)}
    assert len(seeds) == 200
    assert noise_seed(1, 0, 0) != noise_seed(0, 0, 0)


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def data(tofu, tokenizer):
    """A float64 tiny Llama fine-tuned a little on six forget answers; retain rows that the forget set also holds make
    the objective's gradient (with alpha 0.1) conflict with the retain NLL's, so that GRU projects."""
    from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama

    forget = tofu["forget01"].select(range(6))
    retain = tofu["forget01"].select([0, 1, 2])
    initial = tiny_llama(len(tokenizer), num_layers=2, hidden_size=32, seed=0).double()
    finetune_on_qa(
        initial, tokenizer, forget["question"], forget["answer"], epochs=20, learning_rate=1e-2, progress=False
    )
    return initial, forget, retain


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _run(initial, tokenizer, forget, retain, out, steps=3, batch=3, **overrides):
    """`steps` SGD steps of the trainer on a copy of `initial`: the trained copy, the batches drawn, the logs."""
    model = copy.deepcopy(initial)
    overrides.setdefault("learning_rate", LR)
    trainer = make_trainer(
        model,
        tokenizer,
        forget,
        retain,
        out,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        max_steps=steps,
        per_device_train_batch_size=batch,
        **overrides,
    )
    recorded = []
    collate = trainer.data_collator

    def recording_collator(features):
        drawn = collate(features)
        recorded.append({split: {k: v.clone() for k, v in sub.items()} for split, sub in drawn.items()})
        return drawn

    trainer.data_collator = recording_collator
    trainer.train()
    return trainer, recorded


@pytest.mark.parametrize("smoothing", ["sam", "rs"])
def test_the_weights_are_restored_exactly_after_each_perturbation(data, tokenizer, tmp_path, smoothing):
    """With a zero learning rate the run ends on the initial weights bit for bit (a copy restores them)."""
    initial, forget, retain = data
    trainer, _ = _run(
        initial, tokenizer, forget, retain, tmp_path, steps=2, smoothing=smoothing, learning_rate=0.0,
        smoothing_kwargs={"rho": RHO} if smoothing == "sam" else {"sigma": 0.5},
    )  # fmt: skip
    assert torch.equal(_flat(trainer.model), _flat(initial))
    assert all(torch.isfinite(torch.tensor(e["loss/forget"])) for e in trainer.state.log_history if "loss/forget" in e)


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def _sam_forget_grad(model, batch, params, rho):
    """The forget (GA: -NLL) gradient at theta + rho g / ||g||, theta restored after (as the reference)."""
    from test_golden_losses import hf_loss

    g = _grads(-hf_loss(model, batch["forget"]), params)
    eps = g * (rho / g.norm())
    _add_flat(params, eps)
    perturbed = _grads(-hf_loss(model, batch["forget"]), params)
    _add_flat(params, -eps)
    return perturbed


@torch.no_grad()
def _add_flat(params, flat):
    offset = 0
    for p in params:
        p.add_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def _rs_forget_grad(model, batch, params, step, micro):
    """RS's forget (GA) gradient: the mean over 3 draws of N(0, 0.05^2) weight noise, drawn as the reference does from
    the generator seeded for this step and micro-batch (`test_golden_smoothing.reference_rs_forget_grad`)."""
    from test_golden_smoothing import forget_ga, reference_rs_forget_grad

    grads = reference_rs_forget_grad(model, None, batch, params, forget_ga, 0.05, 3, noise_seed(0, step, micro))
    return torch.cat([g.reshape(-1) for g in grads])


def sam_gru_reference(initial, micro_batches, *, steps, accumulation, alpha, gru, rho=RHO, smoothing="sam"):
    """Independent SAM (or RS) (+ GRU) SGD steps: per micro-batch g_o += (g_f(theta + eps) + alpha g_r(theta)) / A and
    g_r += grad NLL_r / A; with GRU the moving average m g_r + (1 - m) gbar_r and the projection of g_o when
    <g_o, gbar_r> < 0 (tmlr-group/GRU), then theta -= lr g_o. Returns the parameters, the projections and the
    moving averages."""
    from test_golden_losses import hf_loss

    model = copy.deepcopy(initial).train()
    params = list(model.parameters())
    memory = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    projected, memories = [], []
    for step in range(steps):
        objective = torch.zeros_like(memory)
        retain = torch.zeros_like(memory)
        for micro, batch in enumerate(micro_batches[step * accumulation : (step + 1) * accumulation]):
            g_r = _grads(hf_loss(model, batch["retain"]), params)
            if smoothing == "sam":
                g_f = _sam_forget_grad(model, batch, params, rho)
            else:
                g_f = _rs_forget_grad(model, batch, params, step, micro)
            objective += (g_f + alpha * g_r) / accumulation
            retain += g_r / accumulation
        if gru:
            memory = EMA * retain + (1 - EMA) * memory
            memories.append(memory.clone())
            dot = objective @ memory
            projected.append(bool(dot < 0))
            if dot < 0:
                objective = objective - dot / (memory @ memory) * memory
        _add_flat(params, -LR * objective)
    return _flat(model), projected, memories


def test_sam_with_gru_smooths_the_forget_term_then_gru_projects_the_update(data, tokenizer, tmp_path):
    """The order: SAM gives the forget gradient at theta + eps, which enters the objective's gradient; GRU projects
    that against the retain NLL's moving-average gradient at theta, last, so the update the optimizer applies has no
    component against it (what GRU guarantees), whatever SAM did."""
    initial, forget, retain = data
    trainer, batches = _run(
        initial, tokenizer, forget, retain, tmp_path, forget_loss="ga", retain_loss="nll", alpha=0.1,
        rectification="gru", smoothing="sam", smoothing_kwargs={"rho": RHO},
    )  # fmt: skip
    expected, projected, memories = sam_gru_reference(initial, batches, steps=3, accumulation=1, alpha=0.1, gru=True)
    before = _flat(initial)
    assert (expected - before).norm() > 1e-3
    torch.testing.assert_close(_flat(trainer.model), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_flat(trainer.model) - before, expected - before, rtol=1e-5, atol=1e-9)
    logged = [bool(e["gru/projected"]) for e in trainer.state.log_history if "gru/projected" in e]
    assert logged == projected and projected[0], "the data must make GRU project (at the first step at least)"
    # the first update is orthogonal to the moving average: GRU acted on the smoothed gradient, after SAM
    first, _ = _run(
        initial, tokenizer, forget, retain, tmp_path / "one", steps=1, forget_loss="ga", retain_loss="nll",
        alpha=0.1, rectification="gru", smoothing="sam", smoothing_kwargs={"rho": RHO},
    )  # fmt: skip
    update = (before - _flat(first.model)) / LR
    assert abs(float(update @ memories[0])) < 1e-9 * float(update.norm() * memories[0].norm())
    # and SAM changed what GRU projected: GRU alone ends elsewhere
    plain = sam_gru_reference(initial, batches, steps=3, accumulation=1, alpha=0.1, gru=True, rho=0.0)[0]
    assert (plain - expected).norm() > 1e-3 * (expected - before).norm()


@pytest.mark.parametrize("smoothing", ["sam", "rs"])
def test_with_accumulation_each_micro_batch_is_smoothed_on_its_own(data, tokenizer, tmp_path, smoothing):
    """SAM: each micro-batch is perturbed along its own forget gradient; RS: each draws its own noise (seeded by the
    step and the micro-batch); the micro-batches' gradients then add up as usual."""
    initial, forget, retain = data
    trainer, batches = _run(
        initial, tokenizer, forget, retain, tmp_path, steps=1, batch=3, gradient_accumulation_steps=2,
        forget_loss="ga", retain_loss="nll", smoothing=smoothing,
        smoothing_kwargs={"rho": RHO} if smoothing == "sam" else {"sigma": 0.05},
    )  # fmt: skip
    assert len(batches) == 2, "one optimizer step of two micro-batches (the six forget rows)"
    expected, _, _ = sam_gru_reference(
        initial, batches, steps=1, accumulation=2, alpha=1.0, gru=False, smoothing=smoothing
    )
    torch.testing.assert_close(_flat(trainer.model), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_flat(trainer.model) - _flat(initial), expected - _flat(initial), rtol=1e-5, atol=1e-9)


def test_lora_perturbs_and_trains_only_the_adapter(target_model, tokenizer, small_forget, small_retain, tmp_path):
    from peft import LoraConfig

    base = {n: p.detach().clone() for n, p in target_model.named_parameters()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian")
    runs = {}
    for smoothing in (None, "sam"):
        model = copy.deepcopy(target_model)
        trainer = make_trainer(
            model, tokenizer, small_forget, small_retain, tmp_path / str(smoothing), peft_config=lora, max_steps=2,
            smoothing=smoothing, smoothing_kwargs={"rho": 1.0} if smoothing else None,
        )  # fmt: skip
        trainer.train()
        merged = trainer.model
        adapters = {n: p.detach().clone() for n, p in merged.named_parameters() if "lora_" in n}
        frozen = {n: p for n, p in merged.named_parameters() if "lora_" not in n}
        assert adapters and all(not p.requires_grad for p in frozen.values())
        for name, p in frozen.items():  # the base weights are never perturbed for good
            original = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base[original]), name
        runs[smoothing] = (adapters, trainer.state.log_history)
    plain, sam = runs[None][0], runs["sam"][0]
    assert any(not torch.equal(plain[n], sam[n]) for n in plain), "SAM must change the adapter's update"
    norms = [e["smoothing/forget_grad_norm"] for e in runs["sam"][1] if "smoothing/forget_grad_norm" in e]
    assert len(norms) == 2 and all(n > 0 for n in norms)


def test_every_forget_loss_is_smoothed_by_sam(target_model, tokenizer, small_forget, small_retain, tmp_path):
    """Any registered forget loss composes with SAM: the perturbation climbs the loss the method minimises, so the
    forget loss at theta + eps (logged as `loss/forget`) exceeds the one at theta by rho ||g|| to first order (not
    for losses whose gradient is not their value's: detached targets or token weights)."""
    from test_loss_catalog_training import BUILTIN_FORGET_LOSSES, LOSS_KWARGS

    for forget_loss in BUILTIN_FORGET_LOSSES:
        trainer = make_trainer(
            copy.deepcopy(target_model), tokenizer, small_forget, small_retain, tmp_path / forget_loss, max_steps=1,
            forget_loss=forget_loss, forget_loss_kwargs=LOSS_KWARGS.get(forget_loss), smoothing="sam",
            smoothing_kwargs={"rho": 1e-3},
        )  # fmt: skip
        trainer.train()
        (logs,) = [e for e in trainer.state.log_history if "loss/forget" in e]
        assert logs["smoothing/forget_grad_norm"] > 0 and torch.isfinite(torch.tensor(logs["loss/forget"]))
        if forget_loss in STOP_GRADIENT_LOSSES:
            continue
        rise = logs["loss/forget"] - logs["smoothing/forget_loss_unperturbed"]
        assert rise == pytest.approx(1e-3 * logs["smoothing/forget_grad_norm"], rel=0.2), forget_loss


def test_the_run_records_smoothing_for_resumes_and_cards(data, tokenizer, tmp_path):
    from hf_unlearn.hub.facts import method_rows
    from hf_unlearn.unlearning_state import UnlearningState

    initial, forget, retain = data
    trainer, _ = _run(
        initial, tokenizer, forget, retain, tmp_path, steps=1, smoothing="rs", smoothing_kwargs={"num_samples": 2}
    )
    trainer.save_model()
    state = UnlearningState.read(tmp_path)
    assert state.smoothing == "rs" and state.smoothing_kwargs == {"sigma": 0.1, "num_samples": 2}
    rows = dict(method_rows(state.to_dict(), []))
    assert rows["Smoothing"].startswith("randomized smoothing") and "num_samples=2" in rows["Smoothing"]
    plain = UnlearningState(forget_loss="ga").to_dict()
    assert "smoothing" not in plain and "Smoothing" not in dict(method_rows(plain, []))


def test_command_line_flags(tmp_path):
    from hf_unlearn.commands.train import make_parser

    argv = ["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--bf16", "false"]
    _, args, _ = make_parser().parse_args_and_config(
        args=[*argv, "--smoothing", "sam", "--smoothing_kwargs", '{"rho": 0.05}']
    )
    assert args.smoothing == "sam" and args.smoothing_kwargs == {"rho": 0.05}
    _, args, _ = make_parser().parse_args_and_config(
        args=[*argv, "--smoothing", "rs", "--smoothing-kwargs", '{"num_samples": 4}']
    )
    assert args.smoothing_kwargs == {"sigma": 0.1, "num_samples": 4}


# ------------------------------------------------------------------ DDP
DDP_OBJECTIVE = dict(forget_loss="npo", retain_loss="nll", token_average="answer")


def ddp_run(model_dir: str, out_dir: str, per_device_batch: int, smoothing: str) -> dict:
    """3 SGD steps (2 micro-batches each) on 24 forget rows; every rank draws its retain rows as rank 0 would (the
    draws depend on the rank), so that 2 ranks see the examples of one process with twice the batch. `sam+gru`: SAM
    inside GRU's step."""
    gru = smoothing.endswith("+gru")
    smoothing = smoothing.removesuffix("+gru")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn import load_tofu

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget = load_tofu("forget01", "bundled").select(range(24))
    retain = load_tofu("retain99", "bundled").select(range(64))
    trainer = make_trainer(
        model, tokenizer, forget, retain, out_dir, **DDP_OBJECTIVE, smoothing=smoothing,
        smoothing_kwargs={"rho": 0.5} if smoothing == "sam" else {"sigma": 0.02},
        per_device_train_batch_size=per_device_batch, gradient_accumulation_steps=2, max_steps=3, optim="sgd",
        learning_rate=0.1, lr_scheduler_type="constant", rectification="gru" if gru else None,
    )  # fmt: skip
    trainer.unlearning_collator.process_index = 0
    trainer.train()
    report = {
        "world_size": trainer.accelerator.num_processes,
        "params": torch.cat([p.detach().flatten() for p in trainer.model.parameters()]),
        "logs": [e for e in trainer.state.log_history if "loss/forget" in e],
    }
    torch.save(report, Path(out_dir) / f"rank{trainer.accelerator.process_index}-of-{report['world_size']}.pt")
    return report


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("smoothing", ["sam", "rs", "sam+gru"])
def test_ddp_equals_one_process_with_the_global_batch(target_model_dir, tmp_path, smoothing):
    """Every rank perturbs by the eps of the averaged forget gradient (SAM) or the same noise (RS), and the
    gradients are averaged once at the optimizer step: 2 processes of 2 rows = 1 process of 4."""
    from launch import REPO, run_accelerate
    from transformers import AutoModelForCausalLM

    run_accelerate(REPO / "tests" / "test_smoothing.py", target_model_dir, tmp_path / "ddp", 2, smoothing, timeout=600)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}-of-2.pt") for r in (0, 1)]
    single = ddp_run(str(target_model_dir), str(tmp_path / "single"), 4, smoothing)
    local = ddp_run(str(target_model_dir), str(tmp_path / "local"), 2, smoothing)
    assert single["world_size"] == 1 and ranks[0]["world_size"] == 2
    initial = torch.cat(
        [p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(target_model_dir).parameters()]
    )
    assert torch.equal(ranks[0]["params"], ranks[1]["params"]), "the replicas must stay identical"
    ddp_update, single_update = ranks[0]["params"] - initial, single["params"] - initial
    assert single_update.norm() > 1e-2
    torch.testing.assert_close(ddp_update, single_update, rtol=1e-4, atol=1e-6)
    assert (local["params"] - single["params"]).abs().max() > 100 * 1e-6, "half the batch ends elsewhere"
    if smoothing.endswith("+gru"):  # GRU's decisions are those of the global (smoothed) gradients
        key = "gru/cosine"
        assert [e[key] for e in ranks[0]["logs"]] == pytest.approx([e[key] for e in single["logs"]], rel=1e-4)
    if smoothing.startswith("sam"):
        key = "smoothing/forget_grad_norm"
        assert [e[key] for e in ranks[0]["logs"]] == pytest.approx([e[key] for e in single["logs"]], rel=1e-4)


if __name__ == "__main__":
    model_dir, out_dir, per_device_batch, smoothing = sys.argv[1:]
    ddp_run(model_dir, out_dir, int(per_device_batch), smoothing)


def test_card_cites_the_smoothing_paper():
    from hf_unlearn.hub.facts import papers_for

    cited = [p.arxiv_id for p in papers_for({"forget_loss": "npo", "smoothing": "sam"}, "full")]
    assert "2502.05374" in cited
    assert "2502.05374" not in [p.arxiv_id for p in papers_for({"forget_loss": "npo"}, "full")]
