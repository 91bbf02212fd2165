"""GRUN under 2-process CPU DDP (gloo) equals one process with the same global batch."""

from __future__ import annotations

import pytest
import torch
from launch import REPO, load_script, run_accelerate

pytest.importorskip("pyreft")

SCRIPT = REPO / "tests" / "scripts" / "grun_ddp.py"


@pytest.mark.slow
@pytest.mark.distributed
def test_grun_under_ddp_equals_one_process_with_the_global_batch(target_model_dir, tmp_path):
    run_accelerate(SCRIPT, target_model_dir, tmp_path / "ddp", 2, timeout=600)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}-of-2.pt") for r in (0, 1)]
    single = load_script(SCRIPT).run(str(target_model_dir), str(tmp_path / "single"), per_device_batch=4)
    initial_model = load_script(SCRIPT).grun_model(str(target_model_dir))
    initial = {
        "grun_params": torch.cat([p.detach().flatten() for p in initial_model.grun_modules.parameters()]),
        "base_params": torch.cat([p.detach().flatten() for p in initial_model.model.parameters()]),
    }
    assert single["world_size"] == 1
    # Both ranks hold the same modules, stepped on the all-reduced gradient; the base model never moves.
    assert torch.equal(ranks[0]["grun_params"], ranks[1]["grun_params"])
    assert torch.equal(ranks[0]["base_params"], initial["base_params"])
    ddp_update = ranks[0]["grun_params"] - initial["grun_params"]
    single_update = single["grun_params"] - initial["grun_params"]
    assert single_update.norm() > 1e-2
    torch.testing.assert_close(ddp_update, single_update, rtol=1e-4, atol=1e-6)
    for key in ("loss/forget", "grun/gate_forget", "grun/gate_retain"):
        ddp_values = [e[key] for e in ranks[0]["logs"]]
        assert ddp_values == pytest.approx([e[key] for e in single["logs"]], rel=1e-4), key
