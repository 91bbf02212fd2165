"""GRU (gradient rectified unlearning): the projection math, its state, and its integration in the trainer."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from helpers import make_trainer
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_unlearn import (
    ForgetLoss,
    NonFiniteLossError,
    UnlearningConfig,
    list_losses,
    load_tofu,
    register_loss,
)
from hf_unlearn.constants import GRU_STATE_FILE, GRU_WEIGHTS_FILE
from hf_unlearn.gru import GradientRectifier, rectified, stats_to_logs

# ---------------------------------------------------------------------------------------------------- projection math


@st.composite
def gradient_pairs(draw):
    """A forget gradient g and a retain direction r, each split into several tensors of various shapes."""
    sizes = draw(st.lists(st.integers(1, 48), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**31 - 1))
    mix = draw(st.floats(-4.0, 4.0))  # g = noise + mix * r: the sign and size of <g, r>
    scale_g, scale_r = (10.0 ** draw(st.integers(-3, 3)) for _ in range(2))
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    r = torch.randn(n, generator=gen, dtype=torch.float64)
    g = torch.randn(n, generator=gen, dtype=torch.float64) + mix * r

    def split(v):
        parts = torch.split(v.float(), sizes)
        return [p.reshape(2, -1) if p.numel() % 2 == 0 else p for p in parts]

    return split(g * scale_g), split(r * scale_r)


def _flat64(tensors):
    return torch.cat([t.reshape(-1).double() for t in tensors])


@settings(max_examples=150, deadline=None)
@given(gradient_pairs())
def test_projection_matches_a_float64_reference(pair):
    grads, retain = pair
    out, stats = rectified(grads, retain)
    g, r, g_out = _flat64(grads), _flat64(retain), _flat64(out)
    d = g @ r
    scale = g.norm() * r.norm()
    tol = 1e-5 * scale
    assert stats[0].item() == pytest.approx(d.item(), abs=tol.item())
    assert stats[1].item() == pytest.approx((g @ g).item(), rel=1e-5)
    assert stats[2].item() == pytest.approx((r @ r).item(), rel=1e-5)
    # never longer than before
    assert g_out.norm() <= g.norm() * (1 + 1e-6)
    if d < -tol:  # conflicting: projected onto the orthogonal complement of r, as the float64 closed form
        assert stats[3].item() == 1.0
        assert abs(g_out @ r) <= tol
        reference = g - d / (r @ r) * r
        assert (g_out - reference).norm() <= 1e-5 * g.norm()
    elif d > tol:  # not conflicting: left exactly as it was
        assert stats[3].item() == 0.0
        for before, after in zip(grads, out):
            assert torch.equal(before, after)
    # the input lists are not modified by the out-of-place version
    assert torch.equal(_flat64(grads), g)


def test_projection_treats_missing_gradients_as_zero():
    g = [torch.tensor([1.0, 0.0]), None, torch.tensor([2.0])]
    r = [torch.tensor([-1.0, 1.0]), torch.tensor([5.0]), None]
    out, stats = rectified(g, r)
    # d = -1 (the None entries contribute nothing), ||r||^2 = 27: g - (-1/27) r on the tensors that exist
    assert stats.tolist() == pytest.approx([-1.0, 5.0, 27.0, 1.0])
    torch.testing.assert_close(out[0], torch.tensor([1.0 - 1 / 27, 1 / 27]))
    assert out[1] is None and torch.equal(out[2], g[2])
    logs = stats_to_logs(stats.tolist())
    assert logs["gru/cosine"] == pytest.approx(-1 / (5**0.5 * 27**0.5))
    assert logs["gru/projected"] == 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_sums_over_slices_equal_whole_tensor_sums(dtype, monkeypatch):
    """Low-precision gradients are upcast slice by slice (each slice once for the three sums): the statistics and
    the projection equal those of whole tensors upcast at once, and a float64 computation to float32 accuracy."""
    import hf_unlearn.gru as gru

    gen = torch.Generator().manual_seed(0)
    r = [torch.randn(1000, generator=gen).to(dtype), torch.randn(37, 5, generator=gen).to(dtype), None]
    g = [(-0.5 * x.float() + torch.randn(x.shape, generator=gen)).to(dtype) if x is not None else None for x in r]
    g[2] = torch.randn(3, generator=gen).to(dtype)
    monkeypatch.setitem(gru.UPCAST_CHUNK, "cpu", 64)  # many slices, a ragged last one
    sliced_out, sliced = rectified(g, r)
    monkeypatch.setitem(gru.UPCAST_CHUNK, "cpu", 1 << 30)
    whole_out, whole = rectified(g, r)
    torch.testing.assert_close(sliced, whole, rtol=1e-6, atol=0)
    for a, b in zip(sliced_out, whole_out):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    g64, r64 = _flat64(g[:2]), _flat64(r[:2])
    expected = [float(g64 @ r64), float(_flat64(g) @ _flat64(g)), float(r64 @ r64), 1.0]
    assert sliced.tolist() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- rectifier state


def _simulate(rectifier, params, micro_batches, reference):
    """Backpropagate linear losses <p, a> (forget) and <p, b> (retain) per micro-batch; rectify; compare p.grad
    with a float64 reference of GRU."""
    for a, b in micro_batches:
        sum((p * x).sum() for p, x in zip(params, a)).backward()
        with rectifier.retain_gradients():
            sum((p * x).sum() for p, x in zip(params, b)).backward()
    stats = rectifier.rectify()
    g_f = sum(_flat64(a) for a, _ in micro_batches)
    g_r = sum(_flat64(b) for _, b in micro_batches)
    m, lam = rectifier.ema, rectifier.retain_weight
    reference["ema"] = m * g_r + (1 - m) * reference["ema"]
    d = g_f @ reference["ema"]
    expected = g_f - (d / (reference["ema"] @ reference["ema"])) * reference["ema"] if d < 0 else g_f
    expected = expected + lam * g_r
    torch.testing.assert_close(_flat64([p.grad for p in params]), expected, rtol=1e-5, atol=1e-5)
    assert stats[3].item() == float(d < 0)
    for p in params:  # as the Trainer does after the optimizer step
        p.grad = None
    return d


@pytest.mark.parametrize("ema,retain_weight", [(0.8, 0.0), (1.0, 0.0), (0.3, 0.5)])
def test_rectifier_moving_average_projection_and_checkpoint(ema, retain_weight, tmp_path):
    gen = torch.Generator().manual_seed(1)
    shapes = [(3, 4), (5,), (2, 2)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    names = [f"p{i}" for i in range(len(params))]
    rectifier = GradientRectifier(list(zip(names, params)), ema=ema, retain_weight=retain_weight)
    reference = {"ema": torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)}
    dots = []
    for step in range(4):
        micro = []
        for _ in range(2):
            b = [torch.randn(s, generator=gen) for s in shapes]
            micro.append(([-0.7 * x + 0.5 * torch.randn(s, generator=gen) for x, s in zip(b, shapes)], b))
        dots.append(_simulate(rectifier, params, micro, reference))
        if step == 1:  # checkpoint round trip into a fresh rectifier
            rectifier.save(tmp_path)
            assert (tmp_path / GRU_WEIGHTS_FILE).is_file() and (tmp_path / GRU_STATE_FILE).is_file()
            rectifier = GradientRectifier(list(zip(names, params)), ema=ema, retain_weight=retain_weight)
            assert rectifier.load(tmp_path) and rectifier.step == 2
    assert any(d < 0 for d in dots), "the data should make GRU project at least once"
    assert rectifier.step == 4


def test_rectifier_refuses_a_foreign_state(tmp_path):
    a = GradientRectifier([("w", torch.nn.Parameter(torch.ones(3)))])
    a.params[0].grad = torch.ones(3)
    with a.retain_gradients():
        a.params[0].grad = torch.ones(3)
    a.rectify()
    a.save(tmp_path)
    b = GradientRectifier([("v", torch.nn.Parameter(torch.ones(3)))])
    with pytest.raises(ValueError, match=r"does not train: \['w'\].*same model and peft"):
        b.load(tmp_path)
    assert not GradientRectifier([("w", torch.nn.Parameter(torch.ones(3)))]).load(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------- configuration


def test_config_validation(tmp_path):
    def config(**kw):
        return UnlearningConfig(output_dir=str(tmp_path), bf16=False, report_to="none", **kw)

    with pytest.raises(ValueError, match=r"rectification must be one of \[None, 'gru'\], got 'pcgrad'"):
        config(rectification="pcgrad")
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"gru_ema .* must be in \(0, 1\]"):
            config(rectification="gru", gru_ema=bad)
    with pytest.raises(ValueError, match="gru_retain_weight must be >= 0"):
        config(rectification="gru", gru_retain_weight=-1.0)
    with pytest.raises(ValueError, match="does not support fp16.*bf16"):
        config(rectification="gru", fp16=True)
    assert config(rectification="gru", gru_ema=1.0).gru_ema == 1.0


def test_gru_needs_retain_data_and_refuses_deepspeed_and_fsdp1(
    target_model, tokenizer, small_forget, tmp_path, monkeypatch
):
    with pytest.raises(ValueError, match="needs retain data even with retain_loss='none'"):
        make_trainer(target_model, tokenizer, small_forget, None, tmp_path, rectification="gru", retain_loss="none")
    with pytest.raises(ValueError, match="retain_loss='none' has none.*gru_projected='objective'"):
        make_trainer(
            target_model,
            tokenizer,
            small_forget,
            small_forget,
            tmp_path,
            rectification="gru",
            retain_loss="none",
            gru_projected="forget",
        )
    trainer = make_trainer(target_model, tokenizer, small_forget, small_forget, tmp_path, rectification="gru")
    for flag, name in [("is_fsdp_enabled", "FSDP1 \\(set `fsdp_version: 2`"), ("is_deepspeed_enabled", "DeepSpeed")]:
        setattr(trainer, flag, True)  # what accelerate sets under `accelerate launch` with an FSDP/DeepSpeed config
        with pytest.raises(ValueError, match=rf"supports single-device training, multi-process DDP .* not {name}"):
            trainer._check_gru_supported()
        setattr(trainer, flag, False)
    # FSDP2 is supported: sharded gradients, FSDP's own reduce-scatter instead of no_sync.
    monkeypatch.setattr(type(trainer.accelerator), "is_fsdp2", property(lambda self: True))
    trainer.is_fsdp_enabled = True
    trainer._check_gru_supported()
    assert trainer._gru_sharded


# ---------------------------------------------------------------------------------------------------- training


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def update(model, before):
    return torch.cat([(p.detach() - before[n]).flatten() for n, p in model.named_parameters() if n in before])


def retain_gradient(trainer):
    """Gradient of the retain NLL (GRU's direction) at the current parameters on the trainer's retain batch (a
    one-row retain set, so every batch is that row)."""
    model = trainer.model
    batch = trainer.unlearning_collator([trainer.train_dataset[0]])
    model.zero_grad()
    trainer.gru_direction_loss_fn(trainer.loss_context(model, batch)).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    model.zero_grad(set_to_none=True)
    return grad


def gru_logs(trainer):
    return [e for e in trainer.state.log_history if "gru/cosine" in e]


SGD_STEP = dict(optim="sgd", learning_rate=0.05, max_grad_norm=0.0, max_steps=1, lr_scheduler_type="constant")


@pytest.fixture(scope="module")
def conflicting_pair(tofu):
    """Forget: four questions about one author; retain: one of them (a fact to keep that the forget set also holds,
    so that the two gradients conflict)."""
    return tofu["forget01"].select([0, 1, 2, 3]), tofu["forget01"].select([1])


def test_one_gru_step_does_not_raise_the_retain_loss_to_first_order(
    target_model_dir, tokenizer, conflicting_pair, tmp_path
):
    forget, retain = conflicting_pair
    updates = {}
    # GA alone, projected against the retain NLL: the reference's `ga_gru` (retain_loss="none")
    for name, overrides in {
        "ga": dict(rectification=None, retain_loss="none"),
        "gru": dict(rectification="gru", retain_loss="none"),
        "gru+ce": dict(rectification="gru", retain_loss="none", gru_retain_weight=0.5),
    }.items():
        model = AutoModelForCausalLM.from_pretrained(target_model_dir)
        trainer = make_trainer(
            model, tokenizer, forget, retain, tmp_path / name, forget_loss="ga", **SGD_STEP, **overrides
        )
        if name == "gru":
            g_r = retain_gradient(trainer)  # at the starting point, which all three runs share
        before = trainable(model)
        trainer.train()
        updates[name] = update(model, before)
        if name == "gru":
            assert gru_logs(trainer)[0]["gru/projected"] == 1.0 and gru_logs(trainer)[0]["gru/cosine"] < -0.05
    cos = torch.nn.functional.cosine_similarity
    # first-order change of the retain loss: <g_r, update>
    assert cos(updates["ga"], g_r, dim=0) > 0.05, "plain GA raises the retain loss on this pair"
    assert abs(cos(updates["gru"], g_r, dim=0)) < 1e-4, "GRU's update is orthogonal to the retain gradient"
    assert updates["gru"].norm() > 0.1 * updates["ga"].norm()
    # "+ce": the optimizer steps on g_f' + lambda * g_r
    torch.testing.assert_close(
        updates["gru+ce"] - updates["gru"], -0.05 * 0.5 * g_r, rtol=1e-3, atol=1e-6 * g_r.abs().max().item()
    )


# hyperparameters that the 2-layer test model needs (the defaults target 7B models)
TINY_MODEL_KWARGS = {"rmu": {"layer": 1}}


def _registered_forget_losses():
    return [n for n in list_losses("forget") if not n.endswith("_test") and n != "explodes_at_step_3"]


class CaptureGradients(TrainerCallback):
    """Records the gradient the optimizer steps on (after GRU, before the optimizer) at each step."""

    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = [p for p in model.parameters() if p.requires_grad]
        self.grads.append(
            torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        )


@pytest.mark.parametrize("forget_loss", _registered_forget_losses())
def test_gru_wraps_every_registered_forget_loss(forget_loss, target_model_dir, tokenizer, small_forget, tmp_path):
    retain = load_tofu("retain99", "bundled").select([0])
    model = AutoModelForCausalLM.from_pretrained(target_model_dir)
    trainer = make_trainer(
        model,
        tokenizer,
        small_forget,
        retain,
        tmp_path,
        forget_loss=forget_loss,
        forget_loss_kwargs=TINY_MODEL_KWARGS.get(forget_loss),
        rectification="gru",
        **SGD_STEP,
    )
    capture = CaptureGradients()
    trainer.add_callback(capture)
    g_r = retain_gradient(trainer)
    before = trainable(model)
    trainer.train()
    (log,) = gru_logs(trainer)
    (step_grad,) = capture.grads
    assert torch.isfinite(step_grad).all() and step_grad.norm() > 0
    torch.testing.assert_close(update(model, before), -0.05 * step_grad)  # SGD stepped on it
    assert log["gru/retain_grad_norm"] == pytest.approx(0.8 * g_r.norm().item(), rel=1e-4)
    cos = torch.nn.functional.cosine_similarity(step_grad, g_r, dim=0).item()
    if log["gru/projected"]:
        assert log["gru/cosine"] < 0 and abs(cos) < 1e-4
        assert step_grad.norm().item() < log["gru/objective_grad_norm"]
    else:  # the step is on the forget gradient, whose cosine with the (smoothed) retain gradient was logged
        assert log["gru/cosine"] >= 0 and cos == pytest.approx(log["gru/cosine"], abs=1e-4)
        assert step_grad.norm().item() == pytest.approx(log["gru/objective_grad_norm"], rel=1e-4)


def test_gru_with_lora_rectifies_the_adapter_only(target_model, tokenizer, small_forget, small_retain, tmp_path):
    base = {n: p.detach().clone() for n, p in target_model.named_parameters()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        peft_config=lora,
        forget_loss="npo",
        rectification="gru",
        learning_rate=1e-2,
        max_steps=2,
    )
    trainer.train()
    rectifier = trainer._rectifier
    assert rectifier.names and all("lora_" in n for n in rectifier.names)
    assert {n for n, p in trainer.model.named_parameters() if p.requires_grad} == set(rectifier.names)
    assert all(b is None or b.shape == p.shape for b, p in zip(rectifier.retain_ema, rectifier.params))
    assert len(gru_logs(trainer)) == 2
    for name, param in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(param.detach(), base[name.replace("base_layer.", "")]), name
    assert any(n.endswith("lora_B.default.weight") and p.abs().sum() > 0 for n, p in trainer.model.named_parameters())


def test_gru_gradient_accumulation_matches_the_larger_batch(target_model_dir, tokenizer, small_forget, tmp_path):
    # retain examples drawn from the forget set itself conflict with it, so that the projection fires
    updates, logs = {}, {}
    for name, batch, accumulation in [("big", 2, 1), ("accumulated", 1, 2)]:
        model = AutoModelForCausalLM.from_pretrained(target_model_dir)
        trainer = make_trainer(
            model,
            tokenizer,
            small_forget,
            small_forget,
            tmp_path / name,
            forget_loss="npo",
            rectification="gru",
            alpha=0.1,  # the objective NPO + 0.1 * NLL, whose gradient conflicts with the retain NLL's here
            # per-answer averaging: then two micro-batches of one are one batch of two (pooled tokens are pooled per
            # micro-batch, as in the reference codes; the golden tests check that case)
            token_average="answer",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=2,
            optim="sgd",
            learning_rate=0.1,
            max_grad_norm=0.0,
        )
        before = trainable(model)
        trainer.train()
        updates[name], logs[name] = update(model, before), gru_logs(trainer)
    assert updates["big"].norm() > 1e-3
    assert [e["gru/projected"] for e in logs["big"]] == [e["gru/projected"] for e in logs["accumulated"]]
    assert 1.0 in [e["gru/projected"] for e in logs["big"]], "the test should exercise the projection"
    for big, acc in zip(logs["big"], logs["accumulated"]):
        assert acc["gru/cosine"] == pytest.approx(big["gru/cosine"], abs=1e-4)
    torch.testing.assert_close(updates["accumulated"], updates["big"], rtol=1e-4, atol=1e-6)


def test_resumed_run_ends_where_the_uninterrupted_run_does(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path, caplog
):
    settings = dict(
        forget_loss="ga",
        rectification="gru",
        alpha=0.1,  # small enough for the objective GA + 0.1 * NLL to conflict with the retain NLL
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=2,
    )

    def run(out, resume=None):
        model = AutoModelForCausalLM.from_pretrained(target_model_dir)
        trainer = make_trainer(model, tokenizer, small_forget, small_retain, out, **settings)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        return trainer, torch.cat([p.detach().flatten() for p in model.parameters()])

    full, params_full = run(tmp_path / "full")
    assert 1.0 in [e["gru/projected"] for e in gru_logs(full)[2:]], "steps 3-4 should use the restored average"
    checkpoint = tmp_path / "full" / "checkpoint-2"
    assert (checkpoint / GRU_WEIGHTS_FILE).is_file() and (checkpoint / GRU_STATE_FILE).is_file()
    resumed, params_resumed = run(tmp_path / "resumed", resume=checkpoint)
    assert resumed._rectifier.step == 4
    torch.testing.assert_close(params_resumed, params_full, rtol=0, atol=1e-6)
    # without the GRU state the moving average restarts: the run differs (and says so)
    bare = tmp_path / "bare" / "checkpoint-2"
    shutil.copytree(checkpoint, bare)
    (bare / GRU_WEIGHTS_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        _, params_bare = run(tmp_path / "bare", resume=bare)
    assert "holds no GRU state" in caplog.text
    assert (params_bare - params_full).abs().max() > 1e-5


@register_loss("nan_at_step_2_test", override=True)
class NaNAtStep2(ForgetLoss):
    def __init__(self):
        self.calls = 0

    def __call__(self, ctx):
        self.calls += 1
        loss = -ctx.mean_nll("forget").mean()
        return loss * float("nan") if self.calls > 1 else loss


def test_nonfinite_guard_under_gru(target_model, tokenizer, small_forget, small_retain, tmp_path):
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        forget_loss="nan_at_step_2_test",
        rectification="gru",
        max_steps=2,
        per_device_train_batch_size=2,
    )
    with pytest.raises(NonFiniteLossError, match="optimizer step 2"):
        trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
