"""Launched by tests/test_stop_at_target.py on 2 CPU processes: unlearn with `stop_at_targets` evaluated after every
step (sharded across the ranks); record what every rank evaluated, its trajectory and its decisions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import make_trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import load_tofu
from hf_unlearn.evaluation import StopAtTargetCallback

# Reported to the test, whose single-process evaluation uses the same settings.
EVAL_KWARGS = dict(forget_split="forget01", data_dir="bundled", max_questions=5, max_new_tokens=6, batch_size=4)
MAX_STEPS = 6


def main(model_dir: str, out_dir: str, targets: str) -> None:
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainer = make_trainer(
        model,
        tokenizer,
        load_tofu("forget01", "bundled").select(range(16)),
        load_tofu("retain99", "bundled").select(range(32)),
        out / "train",
        forget_loss="ga",
        retain_loss="nll",
        per_device_train_batch_size=2,
        max_steps=MAX_STEPS,
        learning_rate=5e-3,
        stop_at_targets=[targets],
        target_eval_steps=1,
        target_eval_kwargs=EVAL_KWARGS,
    )
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, StopAtTargetCallback))
    evaluated: list[list[str]] = []
    from hf_unlearn.evaluation import callback as module

    target_logs = module.target_logs

    def recording(evaluator, metrics, shard=(0, 1)):
        logs = target_logs(evaluator, metrics, shard=shard)
        evaluated.append(sorted(logs["forget"]["avg_gt_loss"]))
        return logs

    module.target_logs = recording
    trainer.train()
    rank = trainer.accelerator.process_index
    report = {
        "rank": rank,
        "eval_kwargs": EVAL_KWARGS,
        "max_steps": MAX_STEPS,
        "world_size": trainer.accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "evaluated": evaluated,
        "trajectory": callback.trajectory,
        "met": callback.met,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
