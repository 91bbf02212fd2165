"""Real 2-process CPU DDP runs through `accelerate launch`."""

from __future__ import annotations

import json

import pytest
import torch
from launch import REPO, run_accelerate
from transformers import AutoModelForCausalLM


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_ddp_trains_and_ranks_draw_different_retain_examples(target_model_dir, tmp_path):
    run_accelerate(REPO / "tests" / "scripts" / "ddp_unlearn.py", target_model_dir, tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    forget = [set(r["seen"]["forget"]) for r in reports]
    retain = [r["seen"]["retain"] for r in reports]
    assert forget[0].isdisjoint(forget[1]), "each rank trains on its own shard of the forget set"
    assert len(retain[0]) == len(retain[1]) == 6
    assert retain[0] != retain[1], "ranks must draw their retain examples independently"
    # DDP keeps the replicas identical, and they moved away from the starting point
    assert reports[0]["param_checksum"] == pytest.approx(reports[1]["param_checksum"], rel=1e-9)
    initial = torch.cat(
        [p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(target_model_dir).parameters()]
    )
    assert abs(initial.norm().item() - reports[0]["param_norm"]) > 1e-4
    assert len(reports[0]["logged"]) == 3 and all("loss/retain" in e for e in reports[0]["logged"])
