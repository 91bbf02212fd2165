"""GRU under data parallelism: launched on 2 CPU processes by tests/test_gru_distributed.py, and run in-process
(one process, the same global batch) by the same test for comparison.

Both ranks draw their retain examples as rank 0 would (`process_index = 0` on the collator): a rank's retain draws
depend on (seed, rank, epoch, forget row), so this makes the 2-process run see exactly the forget and retain
examples of the single-process run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from conftest import cpu_args
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import UnlearningTrainer, load_tofu


def run(model_dir: str, out_dir: str, per_device_batch: int, max_steps: int = 3) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget = load_tofu("forget01", "bundled").select(range(16))
    retain = load_tofu("retain99", "bundled").select(range(64))
    args = cpu_args(
        out_dir,
        forget_loss="ga",
        retain_loss="nll",
        rectification="gru",
        per_device_train_batch_size=per_device_batch,
        max_steps=max_steps,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
    )
    trainer = UnlearningTrainer(
        model=model, args=args, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer
    )
    trainer.unlearning_collator.process_index = 0
    trainer.train()
    report = {
        "rank": trainer.accelerator.process_index,
        "world_size": trainer.accelerator.num_processes,
        "params": torch.cat([p.detach().flatten() for p in trainer.model.parameters()]),
        "gru_logs": [e for e in trainer.state.log_history if "gru/cosine" in e],
    }
    torch.save(report, Path(out_dir) / f"rank{report['rank']}-of-{report['world_size']}.pt")
    return report


if __name__ == "__main__":
    model_dir, out_dir, per_device_batch = sys.argv[1:4]
    run(model_dir, out_dir, int(per_device_batch))
