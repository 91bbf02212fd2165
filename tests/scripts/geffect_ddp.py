"""Launched by tests/test_geffect.py on 2 CPU processes: unlearn with a GEffectCallback, record what each rank did.

Each rank writes `rank<r>.json` (its callback history, its G-effect log entries, how often it wrote geffect.json)
and, at every step the callback records, `weights_rank<r>_step<s>.pt` (its model's parameters at that moment), so
that the test can recompute the G-effect from the exact weights and check that the replicas agree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from helpers import make_trainer, tiny_config
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

import hf_unlearn.analysis.callback as callback_module
from hf_unlearn import load_tofu
from hf_unlearn.analysis import GEffectCallback

EVERY, MAX_STEPS, NUM_SAMPLES, SEED = 2, 3, 4, 3


class WeightSaver(TrainerCallback):
    """Saves this rank's parameters at each step the G-effect callback (registered before it) records."""

    def __init__(self, out_dir: str, geffect: GEffectCallback):
        self.out_dir, self.geffect, self.trainer = Path(out_dir), geffect, None

    def bind(self, trainer) -> WeightSaver:
        self.trainer = trainer
        return self

    def _save(self, step: int) -> None:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        rank = self.trainer.accelerator.process_index
        state = {name: p.detach().clone() for name, p in model.named_parameters()}
        torch.save(state, self.out_dir / f"weights_rank{rank}_step{step}.pt")

    def on_train_begin(self, args, state, control, **kwargs):
        self._save(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % EVERY == 0 or state.global_step == state.max_steps:
            self._save(state.global_step)


def main(model_dir: str, out_dir: str) -> None:
    writes: list[str] = []
    original_write = callback_module.write_json_atomic

    def counting_write(path, data):
        writes.append(str(path))
        original_write(path, data)

    callback_module.write_json_atomic = counting_write

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    forget = load_tofu("forget01", "bundled")
    retain = load_tofu("retain99", "bundled")
    args = tiny_config(
        out_dir,
        forget_loss="npo",
        retain_loss="nll",
        per_device_train_batch_size=2,
        max_steps=MAX_STEPS,
        logging_steps=1,
    )
    geffect = GEffectCallback(forget, retain, every_n_steps=EVERY, num_samples=NUM_SAMPLES, seed=SEED)
    trainer = make_trainer(
        model,
        tokenizer,
        forget.select(range(16)),
        retain,
        args=args,
        callbacks=[geffect, WeightSaver(out_dir, geffect)],
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    report = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "history_steps": [r.step for r in geffect.history],
        "logged": [e for e in trainer.state.log_history if "geffect/forget" in e],
        "json_writes": writes,
        "max_length": args.max_length,
        "num_samples": NUM_SAMPLES,
        "seed": SEED,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
