"""Launched by tests/test_eval_callback.py on 2 CPU processes: unlearn 2 steps with TOFUEvalCallback evaluating after
each one; record what every rank evaluated and logged, and save the final model for a single-process comparison."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from helpers import make_trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import load_tofu
from hf_unlearn.evaluation import TOFUEvalCallback, TOFUEvaluator

# Reported to the test, whose single-process evaluation uses the same settings.
EVAL_KWARGS = dict(forget_split="forget01", data_dir="bundled", max_questions=5, max_new_tokens=6, batch_size=4)


def main(model_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    evaluated: list[dict[str, list[str]]] = []

    def factory(model, tokenizer):
        evaluator = TOFUEvaluator(model, tokenizer, progress=False, **EVAL_KWARGS)
        compute_logs = evaluator.compute_logs

        def recording(shard=(0, 1)):
            logs = compute_logs(shard=shard)
            evaluated.append({split: sorted(log["avg_gt_loss"]) for split, log in logs.items()})
            return logs

        evaluator.compute_logs = recording
        return evaluator

    trainer = make_trainer(
        model,
        tokenizer,
        load_tofu("forget01", "bundled").select(range(8)),
        load_tofu("retain99", "bundled").select(range(16)),
        out / "train",
        forget_loss="ga",
        retain_loss="nll",
        per_device_train_batch_size=2,
        max_steps=2,
    )
    callback = TOFUEvalCallback(every_n_steps=1, evaluator_factory=factory, output_dir=out / "eval").attach(trainer)
    trainer.train()
    trainer.save_model(str(out / "model"))
    rank = trainer.accelerator.process_index
    report = {
        "rank": rank,
        "eval_kwargs": EVAL_KWARGS,
        "world_size": trainer.accelerator.num_processes,
        "evaluated": evaluated,
        "history": callback.history,
        "logged": [e for e in trainer.state.log_history if any(k.startswith("tofu/") for k in e)],
    }
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
