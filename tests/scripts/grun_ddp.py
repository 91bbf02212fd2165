"""GRUN under data parallelism: launched on 2 CPU processes by tests/test_grun_distributed.py, and run in-process
(one process, the same global batch) by the same test for comparison.

As in gru_ddp.py, both ranks draw their retain examples as rank 0 would, so that the two runs see the same rows.
GRUN's NPO reference (the model with its edits off) runs through the DDP-wrapped model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from helpers import make_trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import load_tofu
from hf_unlearn.grun import GRUNConfig, GRUNTrainer, get_grun_model


def grun_model(model_dir: str):
    # Rank 1 starts from other random GRUN modules than rank 0 and the single-process run: DDP hands every rank
    # rank 0's parameters, and GRUNTrainer its buffers (the rotations' orthogonal bases).
    torch.manual_seed(int(os.environ.get("RANK", "0")))
    return get_grun_model(AutoModelForCausalLM.from_pretrained(model_dir), GRUNConfig(layers=[1], forget_loss="npo"))


def run(model_dir: str, out_dir: str, per_device_batch: int, max_steps: int = 3) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = grun_model(model_dir)
    forget = load_tofu("forget01", "bundled").select(range(16))
    retain = load_tofu("retain99", "bundled").select(range(64))
    trainer = make_trainer(
        model,
        tokenizer,
        forget,
        retain,
        out_dir,
        trainer_cls=GRUNTrainer,
        per_device_train_batch_size=per_device_batch,
        max_steps=max_steps,
        optim="sgd",
        learning_rate=0.05,
        lr_scheduler_type="constant",
        logging_steps=1,
    )
    trainer.unlearning_collator.process_index = 0
    trainer.train()
    grun = trainer.accelerator.unwrap_model(trainer.model)
    report = {
        "rank": trainer.accelerator.process_index,
        "world_size": trainer.accelerator.num_processes,
        "grun_params": torch.cat([p.detach().flatten() for p in grun.grun_modules.parameters()]),
        "base_params": torch.cat([p.detach().flatten() for p in grun.model.parameters()]),
        "logs": [e for e in trainer.state.log_history if "grun/gate_forget" in e],
    }
    torch.save(report, Path(out_dir) / f"rank{report['rank']}-of-{report['world_size']}.pt")
    return report


if __name__ == "__main__":
    model_dir, out_dir, per_device_batch = sys.argv[1:4]
    run(model_dir, out_dir, int(per_device_batch))
