"""The paths that matter on a GPU, parametrised over devices: on `cuda` (marked `cuda`, run with `pytest -m cuda`)
in bf16 where users train in it, on the CPU in float32. Without a GPU the `cuda` cases are skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DEVICES, assert_unchanged, make_trainer, snapshot
from transformers import AutoModelForCausalLM

from hf_unlearn import load_tofu
from hf_unlearn.analysis import build_geffect_batch, compute_g_effect
from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.evaluation import TOFUEvaluator
from hf_unlearn.evaluation.model_io import greedy_generate
from hf_unlearn.evaluation.robustness import quantization_attack, relearning_attack
from hf_unlearn.gru import rectified
from hf_unlearn.losses import mean_nll

pytestmark = pytest.mark.parametrize("device", DEVICES)


def _dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device == "cuda" else torch.float32


def test_gru_projection_on_device_gradients(device):
    generator = torch.Generator().manual_seed(0)
    retain = [torch.randn(64, 32, generator=generator), torch.randn(32, generator=generator)]
    grads = [-0.8 * r + 0.3 * torch.randn(r.shape, generator=generator) for r in retain]
    to = lambda ts: [t.to(device=device, dtype=_dtype(device)) for t in ts]  # noqa: E731
    out, stats = rectified(to(grads), to(retain))
    assert stats[3].item() == 1.0 and stats.dtype == torch.float64
    dot = sum(float((g.double() * r.double()).sum()) for g, r in zip(out, to(retain)))
    scale = sum(float(r.double().norm() ** 2) for r in to(retain))
    assert abs(dot) < (1e-2 if device == "cuda" else 1e-5) * scale, "orthogonal to the retain direction"
    assert all(o.device.type == device and o.dtype == _dtype(device) for o in out)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_gru_trainer_step_on_device(device, mode, target_model_dir, tokenizer, small_forget, small_retain, tmp_path):
    """GRU around NPO on the device, in bf16 on a GPU: full fine-tuning moves the model; with a LoRA adapter only
    the adapter moves and the base stays frozen."""
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=_dtype(device))
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(model, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = make_trainer(
        model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        forget_loss="npo",
        rectification="gru",
        max_steps=2,
        learning_rate=1e-3 if mode == "full" else 1e-2,
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "gru/cosine" in e]
    assert len(logs) == 2 and all(np.isfinite(e["loss"]) for e in logs)
    assert {p.device.type for p in model.parameters()} == {device}
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.cpu(), before[n].cpu())}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable, "only trainable parameters move"
    if mode == "lora":
        assert all("lora_" in n for n in trainable), "the base model stays frozen"


def test_grun_training_on_device(device, target_model_dir, tokenizer, small_forget, small_retain, tmp_path):
    pytest.importorskip("pyreft")
    from hf_unlearn.grun import GRUNConfig, GRUNTrainer, get_grun_model

    base = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=_dtype(device)).to(device)
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    grun = get_grun_model(base, GRUNConfig(layers=[1], forget_loss="npo"))
    make_trainer(
        grun,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path,
        trainer_cls=GRUNTrainer,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        max_steps=2,
        learning_rate=5e-2,
    ).train()
    assert all(torch.equal(p, frozen[n]) for n, p in grun.model.named_parameters()), "the base model stays frozen"
    edits = [p for m in grun.trainable_modules() for p in m.parameters()]
    assert edits and all(p.device.type == device and p.dtype == torch.float32 for p in edits)
    assert all(torch.isfinite(p).all() for p in edits)


def test_batched_tofu_scoring_equals_one_at_a_time_on_device(device, target_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=_dtype(device)).to(device)
    evaluator = TOFUEvaluator(
        model,
        tokenizer,
        forget_split="forget01",
        data_dir="bundled",
        splits=["forget"],
        max_questions=4,
        max_new_tokens=4,
        batch_size=4,
        progress=False,
    )
    evaluator.evaluate()
    rows, encoder = load_tofu("forget01_perturbed", data_dir="bundled"), PromptEncoder(tokenizer)
    log = evaluator.logs["forget"]
    for i in range(4):
        prompt = [{"role": "user", "content": rows[i]["question"]}]
        batch = pad_examples([encoder.encode(prompt, rows[i]["answer"])], tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        one = mean_nll(logits.logits, batch["labels"].to(device)).item()
        assert one == pytest.approx(log["avg_gt_loss"][str(i)], abs=5e-2 if device == "cuda" else 1e-5)


def test_geffect_on_device_equals_the_cpu_value(device, target_model_dir, tokenizer, tofu):
    batch = build_geffect_batch(tokenizer, tofu["forget01"], tofu["retain99"], num_samples=4, seed=0)
    values = {}
    for where in dict.fromkeys(["cpu", device]):
        model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32).to(where)
        values[where] = compute_g_effect(model, "ga", batch)
    assert values[device].forget < 0
    assert values[device].forget == pytest.approx(values["cpu"].forget, rel=1e-3)
    assert values[device].retain == pytest.approx(values["cpu"].retain, rel=1e-3, abs=1e-6)


def test_tiny_llama_builds_in_the_dtype_on_the_device(device):
    from hf_unlearn.demo.tiny import tiny_llama

    model = tiny_llama(64, num_layers=1, hidden_size=32, dtype=torch.bfloat16, device=device)
    assert {(p.dtype, p.device.type) for p in model.parameters()} == {(torch.bfloat16, device)}
    assert torch.get_default_dtype() == torch.float32, "the default dtype is restored"
    same = tiny_llama(64, num_layers=1, hidden_size=32, device=device)
    assert next(same.parameters()).dtype == torch.float32 and next(same.parameters()).device.type == device


def test_left_padded_batched_generation_equals_one_at_a_time_on_device(device, target_model_dir, tokenizer):
    """Batched greedy generation (left padding, as the evaluators run it) gives the texts of one prompt at a time.
    float32 on both devices: what is checked is the padding, positions and masks, not bf16 rounding."""
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32).to(device)
    encoder = PromptEncoder(tokenizer)
    rows = load_tofu("forget01", data_dir="bundled").select(range(8))
    prompts = [encoder.encode_prompt([{"role": "user", "content": q}]) for q in rows["question"]]
    assert len({len(p) for p in prompts}) > 2, "prompts of different lengths, so that padding happens"
    common = dict(max_new_tokens=16, pad_token_id=tokenizer.pad_token_id, eos_token_id=[tokenizer.eos_token_id])
    batched = greedy_generate(model, tokenizer, prompts, batch_size=8, **common)
    single = greedy_generate(model, tokenizer, prompts, batch_size=1, **common)
    assert batched == single
    assert all(text.strip() for text in single) and len(set(single)) > 1, "not a comparison of empty strings"


def test_attacks_on_device_leave_the_model_alone(device, target_model_dir, tokenizer, tofu):
    """Relearning and quantization attack copies of a model on the device (bitsandbytes on CUDA when installed) and
    leave the model itself unchanged; the numbers are finite probabilities."""
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=_dtype(device)).to(device)
    before = snapshot(model)
    relearn, held_out = tofu["forget01"].select(range(0, 16, 2)), tofu["forget01"].select(range(1, 16, 2))
    relearned = relearning_attack(model, tokenizer, relearn, held_out, steps=2, learning_rate=1e-3)
    quantized = quantization_attack(model, tokenizer, held_out, bits=4)
    assert_unchanged(model, before)
    assert {p.device.type for p in model.parameters()} == {device}
    for value in (relearned.before, relearned.after, quantized.before, quantized.after):
        assert 0.0 < value <= 1.0
    assert relearned.before == pytest.approx(quantized.before, rel=1e-6 if device == "cpu" else 2e-2)
    try:
        import bitsandbytes  # noqa: F401

        expected_backend = "bitsandbytes" if device == "cuda" else "ours"
    except ImportError:
        expected_backend = "ours"
    assert quantized.backend == expected_backend
