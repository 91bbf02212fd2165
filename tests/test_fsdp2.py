"""Unlearning losses under FSDP2 on 2 CPU processes equal one process with the same global batch: the frozen
reference model (NPO, KL) is sharded by accelerate too, and hidden states (RMU) come through the sharded model."""

from __future__ import annotations

import pytest
import torch
from launch import REPO, load_script, run_accelerate
from transformers import AutoModelForCausalLM

SCRIPT = REPO / "tests" / "scripts" / "fsdp2_losses.py"


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("objective", ["npo_kl", "rmu"])
def test_losses_under_fsdp2_equal_one_process(objective, target_model_dir, tmp_path):
    run_accelerate(SCRIPT, target_model_dir, tmp_path / "fsdp2", objective, timeout=600)
    sharded = torch.load(tmp_path / "fsdp2" / "report-2.pt")
    single = load_script(SCRIPT).run(str(target_model_dir), str(tmp_path / "single"), objective, per_device_batch=4)
    assert sharded["sharded"] and not single["sharded"]
    initial = torch.cat(
        [p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(target_model_dir).parameters()]
    )
    assert (single["params"] - initial).norm() > 1e-3
    torch.testing.assert_close(sharded["params"], single["params"], rtol=1e-4, atol=1e-6)
    assert sharded["losses"] == pytest.approx(single["losses"], rel=1e-4)
