"""GRU under 2-process CPU DDP and FSDP2 (gloo) equals one process with the same global batch."""

from __future__ import annotations

import pytest
import torch
from launch import REPO, load_script, run_accelerate, run_torchrun
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

SCRIPT = REPO / "tests" / "scripts" / "gru_ddp.py"
FSDP2_SCRIPT = REPO / "tests" / "scripts" / "gru_fsdp2.py"


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("mode, objective", [("ddp", "gd"), ("fsdp2", "gd"), ("fsdp2", "npo_kl")])
def test_gru_under_ddp_and_fsdp2_equals_one_process_with_the_global_batch(target_model_dir, tmp_path, mode, objective):
    run_accelerate(SCRIPT, target_model_dir, tmp_path / mode, 2, mode, objective, timeout=600)
    ranks = [torch.load(tmp_path / mode / f"rank{r}-of-2.pt") for r in (0, 1)]
    assert all(rank["sharded"] == (mode == "fsdp2") for rank in ranks)
    script = load_script(SCRIPT)
    single = script.run(str(target_model_dir), str(tmp_path / "single"), per_device_batch=4, objective=objective)
    local = script.run(str(target_model_dir), str(tmp_path / "local"), per_device_batch=2, objective=objective)
    assert single["world_size"] == 1
    initial = torch.cat(
        [p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(target_model_dir).parameters()]
    )
    # the replicas stay identical: both ranks stepped on the same (all-reduced, rectified) gradient
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    ddp_update, single_update = ranks[0]["params"] - initial, single["params"] - initial
    assert single_update.norm() > 1e-2
    torch.testing.assert_close(ddp_update, single_update, rtol=1e-4, atol=1e-6)
    # the projection decisions and statistics are those of the global gradients
    ddp_logs, single_logs = ranks[0]["gru_logs"], single["gru_logs"]
    assert [e["gru/projected"] for e in ddp_logs] == [e["gru/projected"] for e in single_logs]
    assert 1.0 in [e["gru/projected"] for e in single_logs], "the run should exercise the projection"
    for key in ("gru/cosine", "gru/objective_grad_norm", "gru/retain_grad_norm"):
        assert [e[key] for e in ddp_logs] == pytest.approx([e[key] for e in single_logs], rel=1e-4, abs=1e-6)
    # a run on half the batch ends elsewhere: the tolerance above is meaningful
    assert (local["params"] - single["params"]).abs().max() > 100 * 1e-6


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("retain_weight", [0.0, 0.5])
def test_gru_on_fsdp2_sharded_gradients_equals_one_process(tmp_path, retain_weight):
    """Each rank projects its gradient shards with a coefficient from globally summed partial dot products."""
    run_torchrun(FSDP2_SCRIPT, tmp_path / "fsdp2", retain_weight, timeout=300)
    sharded = torch.load(tmp_path / "fsdp2" / "report-2.pt")
    script = load_script(FSDP2_SCRIPT)
    single = script.run(str(tmp_path / "single"), sharded=False, retain_weight=retain_weight)
    model = script.tiny_llama(script.VOCAB, num_layers=2, hidden_size=32, seed=0)
    initial = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (single["params"] - initial).norm() > 0.1
    torch.testing.assert_close(sharded["params"], single["params"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sharded["retain_ema"], single["retain_ema"], rtol=1e-5, atol=1e-7)
    assert [e["gru/projected"] for e in sharded["gru_logs"]] == [e["gru/projected"] for e in single["gru_logs"]]
    assert 1.0 in [e["gru/projected"] for e in single["gru_logs"]], "the run should exercise the projection"
    for key in ("gru/cosine", "gru/objective_grad_norm", "gru/retain_grad_norm"):
        assert [e[key] for e in sharded["gru_logs"]] == pytest.approx([e[key] for e in single["gru_logs"]], rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_gru_under_fsdp2_resumes_like_an_uninterrupted_run(target_model_dir, tmp_path):
    """The sharded moving average is gathered into the checkpoint and re-sharded on resume."""
    run_accelerate(SCRIPT, target_model_dir, tmp_path, 2, "fsdp2-resume", timeout=600)
    uninterrupted = torch.load(tmp_path / "uninterrupted" / "rank0-of-2.pt")
    resumed = torch.load(tmp_path / "resumed" / "rank0-of-2.pt")
    saved = load_file(tmp_path / "uninterrupted" / "checkpoint-2" / "gru_state.safetensors")
    model = AutoModelForCausalLM.from_pretrained(target_model_dir)
    assert {name: p.shape for name, p in model.named_parameters()} == {name: t.shape for name, t in saved.items()}
    assert resumed["sharded"] and resumed["gru_logs"][-1]["step"] == 3
    torch.testing.assert_close(resumed["params"], uninterrupted["params"], rtol=0, atol=1e-6)
