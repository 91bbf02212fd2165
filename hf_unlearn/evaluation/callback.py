"""TOFU evaluation during training: a `TrainerCallback` that evaluates every N steps, data-parallel across ranks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..constants import EVAL_HISTORY_FILE
from .logs import load_retain_truth_ratio_stats, summarize_tofu_logs, write_tofu_logs
from .record import RECORD_KEY
from .tofu import TOFUEvaluator

__all__ = ["DEFAULT_TOFU_LOG_KEYS", "TOFUEvalCallback", "merge_tofu_logs"]

#: The summary numbers [`TOFUEvalCallback`] logs by default (each under `log_prefix`).
DEFAULT_TOFU_LOG_KEYS: tuple[str, ...] = (
    "model_utility",
    "forget_quality",
    "forget_probability",
    "forget_rougeL_recall",
    "forget_truth_ratio",
)


def _index_key(key: str) -> tuple[int, str]:
    return (int(key), key) if str(key).lstrip("-").isdigit() else (2**63, str(key))


def merge_tofu_logs(shards: Sequence[Mapping[str, Mapping[str, Mapping[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Merge per-question TOFU logs of disjoint question shards (split -> metric -> {index: value}) into one.

    Question indices are kept and put back in numeric order, so the merged logs equal those of evaluating all the
    questions in one process. The same index in two shards is an error (the shards overlapped).
    """
    merged: dict[str, dict[str, dict[str, Any]]] = {}
    for shard in shards:
        for split, log in shard.items():
            target = merged.setdefault(split, {})
            for metric, values in log.items():
                into = target.setdefault(metric, {})
                overlap = set(into) & set(values)
                if overlap:
                    raise ValueError(
                        f"TOFU log shards overlap: question(s) {sorted(overlap, key=_index_key)[:5]} of the {split} "
                        f"split ({metric}) appear in two shards."
                    )
                into.update(values)

    def ordered(values: dict[str, Any]) -> dict[str, Any]:
        return dict(sorted(values.items(), key=lambda item: _index_key(item[0])))

    return {split: {metric: ordered(values) for metric, values in log.items()} for split, log in merged.items()}


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TOFUEvalCallback(TrainerCallback):
    """Run the TOFU evaluation every `every_n_steps` optimizer steps and log a few summary numbers.

    Under multi-process (DDP) training every rank takes part: rank r evaluates questions r, r + W, r + 2W, ... of each
    split (W the world size) with its own replica of the model, the per-question logs are gathered
    (`all_gather_object`) and merged, and every rank computes the same summary from them, so the numbers equal a
    single-process evaluation of the same weights. Rank 0 alone writes files. Evaluation runs on the trainer's
    unwrapped model (no collective inside a forward pass), so ranks may take different times without deadlock; the
    one collective, the gather, is reached by every rank at the same step. Sharded-parameter training (FSDP,
    DeepSpeed ZeRO-3) is not supported: a rank's replica holds only part of the weights there.

    Args:
        every_n_steps: evaluate when `state.global_step` is a multiple of this.
        evaluator_kwargs: keyword arguments of [`~hf_unlearn.evaluation.TOFUEvaluator`] (`forget_split`,
            `data_dir`, `max_questions`, `max_new_tokens`, `batch_size`, `datasets`, ...). The evaluator is
            built once, at the first evaluation, on the trainer's model and tokenizer; `progress` defaults to False.
        evaluator_factory: instead of `evaluator_kwargs`: `(model, tokenizer) -> TOFUEvaluator`.
        output_dir: where rank 0 writes the logs of each evaluation (`step-<N>/`, TOFU's layout plus
            `summary.json`) and `eval_history.jsonl` (one summary per line, with its `step`, readable by
            [`~hf_unlearn.evaluation.plot_metrics_over_steps`]). None writes nothing.
        retain_logs: the retain model's TOFU logs, for forget quality (read once, at construction).
        log_keys: the summary numbers to log (those that are None, e.g. forget quality without retain logs, are left
            out).
        log_prefix: prefix of the logged names (`"tofu/model_utility"`, ...).
        eval_on_train_end: also evaluate after the last step when it is not a multiple of `every_n_steps`.
        trainer: the trainer, whose `log` then reports the numbers (to `state.log_history` and to every
            reporting integration, as the losses are). Without it, the numbers are appended to
            `state.log_history` only. An `UnlearningTrainer` binds itself to the callbacks it is given; with
            another trainer pass it here or call [`bind`].

    `self.history` holds every summary computed (with its `step`).
    """

    def __init__(
        self,
        every_n_steps: int,
        evaluator_kwargs: Mapping[str, Any] | None = None,
        evaluator_factory: Callable[[torch.nn.Module, PreTrainedTokenizerBase], TOFUEvaluator] | None = None,
        output_dir: str | Path | None = None,
        retain_logs: str | Path | None = None,
        log_keys: Sequence[str] = DEFAULT_TOFU_LOG_KEYS,
        log_prefix: str = "tofu/",
        eval_on_train_end: bool = False,
        trainer: Any | None = None,
    ):
        if int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if evaluator_kwargs is not None and evaluator_factory is not None:
            raise ValueError("Pass either evaluator_kwargs or evaluator_factory, not both.")
        self.every_n_steps = int(every_n_steps)
        self.evaluator_kwargs = {"progress": False, **dict(evaluator_kwargs or {})}
        self.evaluator_factory = evaluator_factory
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.retain_stats = load_retain_truth_ratio_stats(retain_logs) if retain_logs is not None else None
        self.log_keys = [log_keys] if isinstance(log_keys, str) else list(log_keys)
        self.log_prefix = log_prefix
        self.eval_on_train_end = eval_on_train_end
        self.trainer = trainer
        self.evaluator: TOFUEvaluator | None = None
        self.history: list[dict[str, Any]] = []
        self._last_step: int | None = None

    def bind(self, trainer: Any) -> TOFUEvalCallback:
        """Report through `trainer.log` (returns self, for `trainer.add_callback(cb.bind(trainer))`). An
        `UnlearningTrainer` binds the callbacks it is given itself, as it does `GEffectCallback`."""
        self.trainer = trainer
        return self

    def attach(self, trainer: Any) -> TOFUEvalCallback:
        """[`bind`] and `trainer.add_callback(self)` in one call."""
        trainer.add_callback(self.bind(trainer))
        return self

    # ------------------------------------------------------------------------------------------------------------
    # events
    # ------------------------------------------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if getattr(args, "fsdp", None) or _zero3(args) or _has_sharded_parameters(kwargs.get("model")):
            raise ValueError(
                "TOFUEvalCallback evaluates each rank's replica of the model, which FSDP and DeepSpeed ZeRO-3 shard; "
                "evaluate the saved checkpoints with TOFUEvaluator instead."
            )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step > 0 and state.global_step % self.every_n_steps == 0:
            self.evaluate(args, state, kwargs.get("model"), kwargs.get("processing_class"))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.eval_on_train_end and state.global_step > 0 and self._last_step != state.global_step:
            self.evaluate(args, state, kwargs.get("model"), kwargs.get("processing_class"))

    # ------------------------------------------------------------------------------------------------------------

    def _build_evaluator(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> TOFUEvaluator:
        if model is None:
            raise ValueError("TOFUEvalCallback received no model from the trainer.")
        if tokenizer is None:
            raise ValueError(
                "TOFUEvalCallback needs the tokenizer: pass `processing_class=tokenizer` to the trainer, or build the "
                "evaluator yourself with `evaluator_factory`."
            )
        if self.evaluator_factory is not None:
            evaluator = self.evaluator_factory(model, tokenizer)
            if not isinstance(evaluator, TOFUEvaluator):
                raise TypeError(f"evaluator_factory must return a TOFUEvaluator, got {type(evaluator).__name__}")
            return evaluator
        return TOFUEvaluator(model, tokenizer, **self.evaluator_kwargs)

    def evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        model: torch.nn.Module | None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> dict[str, Any]:
        """Evaluate now (every rank must call this at the same point), log and write; returns the summary."""
        if self.evaluator is None:
            self.evaluator = self._build_evaluator(model, tokenizer)
        if model is not None:
            self.evaluator.model = model  # the trainer's current model object
        if self.retain_stats is not None and "forget" not in self.evaluator.splits:
            raise ValueError("Forget quality (retain_logs given) needs the 'forget' split among the evaluator splits.")
        rank, world_size = _distributed()
        logs = self.evaluator.compute_logs(shard=(rank, world_size))
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, logs)
            logs = merge_tofu_logs(gathered)
        self.evaluator.logs = logs
        summary = summarize_tofu_logs(logs, self.retain_stats, split=self.evaluator.forget_split)
        step = int(state.global_step)
        self._last_step = step
        self.history.append({**summary, "step": step})
        if self.output_dir is not None and rank == 0:
            # the step's logs say how they were made; the history stays one line of numbers per evaluation
            write_tofu_logs(logs, self.output_dir / f"step-{step}", {**summary, RECORD_KEY: self.evaluator.record})
            with open(self.output_dir / EVAL_HISTORY_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps({**summary, "step": step}) + "\n")
        metrics = {
            f"{self.log_prefix}{key}": float(summary[key]) for key in self.log_keys if summary.get(key) is not None
        }
        if self.trainer is not None:
            self.trainer.log(metrics)
        else:
            state.log_history.append({**metrics, "step": step})
        return summary


def _zero3(args: TrainingArguments) -> bool:
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover - depends on the transformers build
        return False
    return bool(getattr(args, "deepspeed", None)) and is_deepspeed_zero3_enabled()


def _has_sharded_parameters(model: Any) -> bool:
    """FSDP (1 or 2) set up from an accelerate config, where `args.fsdp` stays empty: DTensor parameters (FSDP2) or a
    FullyShardedDataParallel wrapper (FSDP1)."""
    if model is None:
        return False
    if any(hasattr(param, "device_mesh") for param in model.parameters()):
        return True
    return any(type(module).__name__ == "FullyShardedDataParallel" for module in model.modules())
