"""GRU under 2-process CPU DDP (gloo) equals one process with the same global batch."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from launch import REPO, run_accelerate
from transformers import AutoModelForCausalLM

SCRIPT = REPO / "tests" / "scripts" / "gru_ddp.py"


def _script():
    spec = importlib.util.spec_from_file_location("gru_ddp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.distributed
def test_gru_under_ddp_equals_one_process_with_the_global_batch(target_model_dir, tmp_path):
    run_accelerate(SCRIPT, target_model_dir, tmp_path / "ddp", 2, timeout=600)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}-of-2.pt") for r in (0, 1)]
    single = _script().run(str(target_model_dir), str(tmp_path / "single"), per_device_batch=4)
    local = _script().run(str(target_model_dir), str(tmp_path / "local"), per_device_batch=2)
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
    for key in ("gru/cosine", "gru/forget_grad_norm", "gru/retain_grad_norm"):
        assert [e[key] for e in ddp_logs] == pytest.approx([e[key] for e in single_logs], rel=1e-4, abs=1e-6)
    # a run on half the batch ends elsewhere: the tolerance above is meaningful
    assert (local["params"] - single["params"]).abs().max() > 100 * 1e-6
