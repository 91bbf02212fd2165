"""Launched by tests/test_distributed.py on 2 CPU processes: unlearn a few steps, record what each rank saw."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from helpers import make_trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import UnlearningTrainer, load_tofu


class RecordingTrainer(UnlearningTrainer):
    """Remembers the forget and retain rows of every batch this rank trained on."""

    seen: dict[str, list[int]] = {"forget": [], "retain": []}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        for split in ("forget", "retain"):
            self.seen[split].extend(inputs[split]["row_index"].tolist())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def main(model_dir: str, out_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget = load_tofu("forget01", "bundled").select(range(16))
    retain = load_tofu("retain99", "bundled")
    trainer = make_trainer(
        model,
        tokenizer,
        forget,
        retain,
        out_dir,
        trainer_cls=RecordingTrainer,
        forget_loss="npo",
        retain_loss="nll",
        per_device_train_batch_size=2,
        max_steps=3,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    report = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "seen": trainer.seen,
        "param_checksum": params.double().sum().item(),
        "param_norm": params.norm().item(),
        "logged": [e for e in trainer.state.log_history if "loss/forget" in e],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
