"""Losses that read a reference model or hidden states, under FSDP2 on 2 CPU processes (accelerate's state switched
to FSDP2, see gru_ddp.use_fsdp2_on_cpu), launched by tests/test_fsdp2.py and run in one process by the same test."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from helpers import make_trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import load_tofu

sys.path.insert(0, str(Path(__file__).parent))  # gru_ddp.py, beside this file, also when imported by the test
from gru_ddp import _full, use_fsdp2_on_cpu  # noqa: E402

# Per-answer averages on the answer tokens: those equal one process with the global batch. (Pooled token means and
# the reference's all-position KL are per rank's batch, whose padding differs from the global batch's.)
OBJECTIVES = {
    "npo_kl": dict(forget_loss="npo", retain_loss="kl", retain_loss_kwargs={"positions": "answer"}),
    # RMU on an intermediate layer (layer 0 of the tiny model's 2), training that layer's MLP only.
    "rmu": dict(
        forget_loss="rmu",
        forget_loss_kwargs={"layer": 0, "steering_coeff": 2.0},
        retain_loss="embed_diff",
        retain_loss_kwargs={"layer": 0},
        trainable_parameters=r"layers\.0\.mlp\.",
    ),
}


def run(model_dir: str, out_dir: str, objective: str, per_device_batch: int) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    forget = load_tofu("forget01", "bundled").select(range(16))
    retain = load_tofu("retain99", "bundled").select(range(64))
    trainer = make_trainer(
        AutoModelForCausalLM.from_pretrained(model_dir),
        tokenizer,
        forget,
        retain,
        out_dir,
        per_device_train_batch_size=per_device_batch,
        max_steps=3,
        optim="sgd",
        learning_rate=0.05,
        lr_scheduler_type="constant",
        token_average="answer",
        **OBJECTIVES[objective],
    )
    trainer.unlearning_collator.process_index = 0  # both ranks draw the retain rows of the one-process run
    trainer.train()
    report = {
        "world_size": trainer.accelerator.num_processes,
        "sharded": trainer.is_fsdp_enabled,
        "params": torch.cat([_full(p.detach()).flatten() for p in trainer.model.parameters()]),
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
    }
    if trainer.accelerator.is_main_process:
        torch.save(report, Path(out_dir) / f"report-{report['world_size']}.pt")
    return report


if __name__ == "__main__":
    use_fsdp2_on_cpu()
    model_dir, out_dir, objective = sys.argv[1:4]
    run(model_dir, out_dir, objective, per_device_batch=2)
