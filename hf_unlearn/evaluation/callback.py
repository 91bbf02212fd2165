"""TOFU evaluation during training: a `TrainerCallback` that evaluates every N steps, data-parallel across ranks."""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from ..constants import EVAL_HISTORY_FILE, TRAJECTORY_FILE
from .logs import (
    load_retain_truth_ratio_stats,
    per_question_probability,
    per_question_rouge_l_recall,
    split_truth_ratio_stats,
    summarize_tofu_logs,
    write_tofu_logs,
)
from .record import RECORD_KEY
from .targets import GENERATION_METRICS, TRUTH_RATIO_METRICS, Target, benchmark_of, parse_targets
from .tofu import TOFUEvaluator

__all__ = [
    "DEFAULT_TOFU_LOG_KEYS",
    "TRAJECTORY_FILE",
    "StopAtTargetCallback",
    "TOFUEvalCallback",
    "merge_tofu_logs",
    "target_logs",
    "target_metrics",
]

logger = logging.get_logger(__name__)

#: What [`StopAtTargetCallback`] writes beside a target's checkpoint: the target, the step and the metrics there.
TARGET_FILE = "target.json"

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


# ----------------------------------------------------------------------------------------------------------------
# stopping at a forgetting target
# ----------------------------------------------------------------------------------------------------------------


def _splits_needed(metrics: Iterable[str]) -> list[str]:
    metrics = set(metrics)
    if "model_utility" in metrics:
        return ["retain", "real_authors", "world_facts", "forget"]
    return (["retain"] if "retain_probability" in metrics else []) + ["forget"]


def target_logs(
    evaluator: TOFUEvaluator, metrics: Iterable[str], shard: tuple[int, int] = (0, 1)
) -> dict[str, dict[str, Any]]:
    """The per-question TOFU logs of one shard of the questions, holding only what `metrics` (target metrics) need:
    the answers' losses (`avg_gt_loss`) always, the paraphrased and perturbed answers' (`avg_paraphrased_loss`,
    `average_perturb_loss`) only for the truth ratio and forget quality, greedy generations (`rougeL_recall`) only
    for ROUGE-L recall. Scored by the evaluator's own [`~TOFUEvaluator.score`] (the one scoring path); the model
    utility needs everything, so it is the evaluator's full [`~TOFUEvaluator.compute_logs`]."""
    metrics = set(metrics)
    if "model_utility" in metrics:
        return evaluator.compute_logs(shard=shard)
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    truth = bool(metrics & set(TRUTH_RATIO_METRICS))
    rouge = bool(metrics & set(GENERATION_METRICS))
    splits = _splits_needed(metrics)
    missing = [split for split in splits if split not in evaluator.splits]
    if missing:
        raise ValueError(f"The targets {sorted(metrics)} need the TOFU split(s) {missing}; the evaluator has none.")
    questions = {split: evaluator.questions[split][index::count] for split in splits}
    pairs: list[tuple[list[int], list[int]]] = []
    slots: dict[str, list[tuple[int, int | None, list[int]]]] = {}
    for split in splits:
        slots[split] = []
        for q in questions[split]:
            answer = len(pairs)
            pairs.append((q.prompt_ids, q.answer_ids))
            para, perts = None, []
            if truth and split == "forget":
                para = len(pairs)
                pairs.append((q.prompt_ids, q.paraphrased_ids))
                perts = list(range(len(pairs), len(pairs) + len(q.perturbed_ids)))
                pairs.extend((q.prompt_ids, p) for p in q.perturbed_ids)
            slots[split].append((answer, para, perts))
    model = evaluator.model
    was_training = model.training
    model.eval()
    try:
        sums, counts = evaluator.score(pairs, desc="targets: scoring")
        generations = None
        if rouge:
            generations = evaluator.generate([q.prompt_ids for q in questions["forget"]], desc="targets: generating")
    finally:
        model.train(was_training)
    means = sums / np.maximum(counts, 1)
    logs: dict[str, dict[str, Any]] = {}
    for split in splits:
        log: dict[str, dict[str, Any]] = {"avg_gt_loss": {}}
        for q, (answer, para, perts) in zip(questions[split], slots[split]):
            log["avg_gt_loss"][q.index] = float(means[answer])
            if para is not None:
                log.setdefault("avg_paraphrased_loss", {})[q.index] = float(means[para])
                log.setdefault("average_perturb_loss", {})[q.index] = [float(means[s]) for s in perts]
        if split == "forget" and generations is not None:
            from .metrics import rouge_l_recall

            recall = rouge_l_recall(generations, [q.answer for q in questions[split]]) if questions[split] else []
            log["rougeL_recall"] = {q.index: float(r) for q, r in zip(questions[split], recall)}
        logs[split] = log
    return logs


def target_metrics(
    logs: Mapping[str, Mapping[str, Any]], metrics: Iterable[str], retain_stats: np.ndarray | None = None
) -> dict[str, float | None]:
    """The target metrics from (merged) [`target_logs`], with the formulas of
    [`~hf_unlearn.evaluation.logs.summarize_tofu_logs`], so that they equal a full TOFU evaluation's."""
    from .metrics import forget_quality, truth_ratio_forget

    metrics = list(metrics)
    if "model_utility" in metrics:
        summary = summarize_tofu_logs(logs, retain_stats)
        return {m: None if summary.get(m) is None else float(summary[m]) for m in metrics}
    point: dict[str, float | None] = {}
    for metric in metrics:
        if metric in ("forget_probability", "retain_probability"):
            split = metric.removesuffix("_probability")
            point[metric] = float(np.mean(per_question_probability(logs[split], split)))
        elif metric == "forget_rougeL_recall":
            point[metric] = float(np.mean(per_question_rouge_l_recall(logs["forget"], "forget")))
        elif metric == "forget_truth_ratio":
            point[metric] = float(truth_ratio_forget(split_truth_ratio_stats(logs["forget"], "forget")))
        elif metric == "forget_quality":
            stats = split_truth_ratio_stats(logs["forget"], "forget")
            point[metric] = None if retain_stats is None else float(forget_quality(stats, retain_stats))
    return point


class StopAtTargetCallback(TOFUEvalCallback):
    """Evaluate cheaply every `every_n_steps` optimizer steps (and at the last step), save a checkpoint where each
    forgetting target is first met and stop training once every target is met.

    Only what the targets need is scored ([`target_logs`]): the forget answers for `forget_probability`, the
    paraphrased and perturbed answers too for `forget_truth_ratio` / `forget_quality`, greedy generation only for
    `forget_rougeL_recall` (costly: opt in by asking for it), every split for `model_utility`.

    At the first evaluation that meets a target, the trainer's own `save_model` writes the model (weights,
    `unlearning.json`, the losses' state) into `<output_dir>/target-<metric>-<threshold>/`, with hf_unlearn's model
    card and `target.json` (the target, the step and the metrics there) and the trainer's `trainer_state.json` of
    that step. Every evaluation is a line of `<output_dir>/trajectory.jsonl` (`step`, the metrics and the targets
    met there). When the last target is met, `control.should_training_stop` ends the run; when training ends with
    targets unmet, a warning says so.

    MUSE targets (`knowmem_forget_rougeL_f1`, `verbmem_forget_rougeL_f1`, `knowmem_retain_rougeL_f1`:
    [`~hf_unlearn.evaluation.MUSEEvaluator`]'s summary keys) are evaluated with a `MUSEEvaluator` built from
    `muse_kwargs` that computes only the MUSE metrics the targets need (`"knowmem"` and/or `"verbmem"`; both are
    greedy generation); the trajectory, the checkpoints and the stop are as for TOFU targets. TOFU and MUSE targets in
    one callback are an error (one evaluator evaluates a run).

    Under several processes the TOFU evaluation is sharded as in [`TOFUEvalCallback`] (every rank evaluates its share
    of the questions, the logs are gathered and merged): every rank computes the same numbers and so takes the same
    decision, which is checked (`all_gather_object` of the decisions; a mismatch raises). Rank 0 writes the files.
    The MUSE evaluation is not sharded: every rank evaluates every item with its replica (the same numbers, at the
    cost of one full evaluation per rank), and the decisions are gathered and checked as for TOFU.

    Args:
        targets: [`~hf_unlearn.evaluation.targets.Target`]s or strings such as `"forget_probability<=0.1"` (a list,
            or one comma-separated string).
        every_n_steps: evaluate when `state.global_step` is a multiple of this (and at the last step).
        evaluator_kwargs: keyword arguments of [`TOFUEvaluator`] (`forget_split`, `data_dir`, `max_questions`,
            `batch_size`, `max_new_tokens`, `datasets`, ...); `splits` defaults to those the targets need.
        evaluator_factory: instead of `evaluator_kwargs`: `(model, tokenizer) -> TOFUEvaluator`.
        output_dir: where the checkpoints and `trajectory.jsonl` go (None: the trainer's `args.output_dir`).
        retain_logs: the retain model's TOFU logs, needed by a `forget_quality` target.
        log_prefix: prefix of the metrics logged through the trainer (`"target/forget_probability"`, ...).
        trainer: the trainer (an `UnlearningTrainer` binds itself); needed to save the checkpoints.
        eval_steps: evaluate at exactly these optimizer steps instead of every `every_n_steps` (a comparison's
            refinement replays a run and evaluates every step between the two evaluations that bracket a target).
        evaluate_at_start: also evaluate before the first step (step 0 of the trajectory; a target the model
            already meets is saved there).
        muse_kwargs: for MUSE targets: keyword arguments of [`~hf_unlearn.evaluation.MUSEEvaluator`] (`data_dir`,
            `dataset`, `datasets`, `max_items`, `batch_size`, `knowmem_max_new_tokens`, `verbmem_max_new_tokens`,
            ...); `metrics` is set from the targets, `progress` defaults to False. With MUSE targets
            `evaluator_factory` may instead return a `MUSEEvaluator`.
        stop: False: training goes on to its budget when every target is met (the trajectory, the step where each
            target was first met and its checkpoint are recorded as with a stop): a fixed-budget run that still
            says when it reached each target.

    `self.trajectory` holds the points; `self.met` target name -> step where it was first met; `self.seconds` the
    time spent evaluating. A run resumed from a checkpoint reads the trajectory and the targets met up to that
    step back from `trajectory.jsonl`, so a target met before the interruption is not saved again.
    """

    def __init__(
        self,
        targets: str | Target | Iterable[str | Target],
        every_n_steps: int,
        evaluator_kwargs: Mapping[str, Any] | None = None,
        evaluator_factory: Callable[[torch.nn.Module, PreTrainedTokenizerBase], TOFUEvaluator] | None = None,
        output_dir: str | Path | None = None,
        retain_logs: str | Path | None = None,
        log_prefix: str = "target/",
        trainer: Any | None = None,
        eval_steps: Iterable[int] | None = None,
        evaluate_at_start: bool = False,
        muse_kwargs: Mapping[str, Any] | None = None,
        stop: bool = True,
    ):
        self.targets = parse_targets(targets)
        if not self.targets:
            raise ValueError("StopAtTargetCallback needs at least one target, e.g. 'forget_probability<=0.1'.")
        self.metrics = list(dict.fromkeys(t.metric for t in self.targets))
        try:
            #: `"tofu"` or `"muse"`: the evaluator of the targets
            self.benchmark = benchmark_of(self.targets)
        except ValueError as err:
            raise ValueError(f"StopAtTargetCallback: {err}") from None
        self.muse_kwargs: dict[str, Any] = {}
        if self.benchmark == "muse":
            if evaluator_kwargs is not None or retain_logs is not None:
                raise ValueError(
                    f"The targets {[str(t) for t in self.targets]} are MUSE metrics: give the MUSE evaluator's "
                    "arguments as muse_kwargs (evaluator_kwargs and retain_logs are the TOFU evaluator's)."
                )
            muse_kwargs = dict(muse_kwargs or {})
            if "metrics" in muse_kwargs:
                raise ValueError("muse_kwargs may not set 'metrics': the targets choose the MUSE metrics evaluated.")
            needed = ["knowmem" if m.startswith("knowmem") else "verbmem" for m in self.metrics]
            self.muse_kwargs = {"progress": False, **muse_kwargs, "metrics": list(dict.fromkeys(needed))}
        elif muse_kwargs is not None:
            raise ValueError(
                f"muse_kwargs is for MUSE targets; the targets {[str(t) for t in self.targets]} are TOFU metrics "
                "(give the TOFU evaluator's arguments as evaluator_kwargs)."
            )
        if "forget_quality" in self.metrics and retain_logs is None:
            raise ValueError(
                "A forget_quality target needs the retain model's TOFU logs (retain_logs; in UnlearningConfig "
                "target_eval_kwargs={'retain_logs': DIR})."
            )
        if evaluator_factory is None and self.benchmark == "tofu":
            evaluator_kwargs = {"splits": _splits_needed(self.metrics), **dict(evaluator_kwargs or {})}
        super().__init__(
            every_n_steps,
            evaluator_kwargs=evaluator_kwargs,
            evaluator_factory=evaluator_factory,
            retain_logs=retain_logs,
            log_keys=self.metrics,
            log_prefix=log_prefix,
            trainer=trainer,
        )
        self.save_dir = Path(output_dir) if output_dir is not None else None
        self.eval_steps = None if eval_steps is None else sorted({int(s) for s in eval_steps})
        if self.eval_steps is not None and any(s < 1 for s in self.eval_steps):
            raise ValueError(f"eval_steps must be optimizer steps >= 1, got {self.eval_steps[:5]}.")
        self.evaluate_at_start = bool(evaluate_at_start)
        self.stop = bool(stop)
        self.trajectory: list[dict[str, Any]] = []
        self.met: dict[str, int] = {}
        #: Wall-clock seconds spent in the target evaluations (the cost a comparison reports beside training).
        self.seconds = 0.0

    def _build_evaluator(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> Any:
        if self.benchmark == "tofu":
            return super()._build_evaluator(model, tokenizer)
        from .muse import MUSEEvaluator

        if model is None:
            raise ValueError("StopAtTargetCallback received no model from the trainer.")
        if self.evaluator_factory is not None:
            evaluator = self.evaluator_factory(model, tokenizer)
            if not isinstance(evaluator, MUSEEvaluator):
                raise TypeError(
                    f"The targets are MUSE metrics: evaluator_factory must return a MUSEEvaluator, got "
                    f"{type(evaluator).__name__}"
                )
            missing = [m for m in self.muse_kwargs["metrics"] if m not in evaluator.metrics]
            if missing:
                raise ValueError(f"The targets need the MUSE metric(s) {missing}; the evaluator computes none.")
            return evaluator
        if tokenizer is None:
            raise ValueError(
                "StopAtTargetCallback needs the tokenizer: pass `processing_class=tokenizer` to the trainer, or build "
                "the evaluator yourself with `evaluator_factory`."
            )
        return MUSEEvaluator(model, tokenizer, **self.muse_kwargs)

    def _folder(self, args: TrainingArguments) -> Path:
        return self.save_dir if self.save_dir is not None else Path(args.output_dir)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        folder = self._folder(args)
        if state.global_step > 0:
            self._restore(folder / TRAJECTORY_FILE, state.global_step)
        elif state.is_world_process_zero:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / TRAJECTORY_FILE).write_text("", encoding="utf-8")  # a fresh run's trajectory
        if self.evaluate_at_start and state.global_step == 0:
            self.evaluate(args, state, kwargs.get("model"), kwargs.get("processing_class"))
            if self.stop and len(self.met) == len(self.targets):
                control.should_training_stop = True

    def _restore(self, path: Path, step: int) -> None:
        """A resumed run: the trajectory up to the checkpoint's `step` and the targets met there, from
        `trajectory.jsonl`, so that a target met before the interruption is not saved (or reported) again."""
        if not path.is_file():
            return
        by_name = {str(t): t.name for t in self.targets}
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if int(record.get("step", -1)) > step:
                continue  # evaluated after the checkpoint: it will be evaluated again
            self.trajectory.append(record)
            for text in record.get("met", []):
                if text in by_name:
                    self.met.setdefault(by_name[text], int(record["step"]))

    def _due(self, step: int, max_steps: int) -> bool:
        if step <= 0:
            return False
        if self.eval_steps is not None:
            return step in self.eval_steps
        return step % self.every_n_steps == 0 or step >= max_steps

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        step = state.global_step
        if self._due(step, state.max_steps):
            self.evaluate(args, state, kwargs.get("model"), kwargs.get("processing_class"))
            if self.stop and len(self.met) == len(self.targets):
                logger.info(f"stop_at_targets: every target is met ({self._met_text()}); training stops.")
                control.should_training_stop = True
            elif self.eval_steps is not None and step >= self.eval_steps[-1]:
                control.should_training_stop = True  # nothing is evaluated after the last of the given steps
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        unmet = [str(t) for t in self.targets if t.name not in self.met]
        if unmet:
            message = f"stop_at_targets: training ended at step {state.global_step} without meeting {unmet}"
            if self.trajectory:
                last = self.trajectory[-1]
                values = ", ".join(f"{m}={last[m]:.4g}" for m in self.metrics if last.get(m) is not None)
                message += f" (last evaluation, step {last['step']}: {values})"
            if self.met:
                message += f"; met: {self._met_text()}"
            logger.warning(message + ".")

    def _met_text(self) -> str:
        return ", ".join(f"{t} at step {self.met[t.name]}" for t in self.targets if t.name in self.met)

    def evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        model: torch.nn.Module | None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> dict[str, Any]:
        """Evaluate the target metrics now (every rank must call this at the same step), record the point, save a
        checkpoint for each target first met; returns the point."""
        tic = time.perf_counter()
        if self.evaluator is None:
            self.evaluator = self._build_evaluator(model, tokenizer)
        if model is not None:
            self.evaluator.model = model
        rank, world_size = _distributed()
        if self.benchmark == "muse":  # not sharded: every rank evaluates every item (the same numbers)
            summary = self.evaluator.evaluate()
            point = {m: None if summary.get(m) is None else float(summary[m]) for m in self.metrics}
        else:
            logs = target_logs(self.evaluator, self.metrics, shard=(rank, world_size))
            if world_size > 1:
                gathered: list[Any] = [None] * world_size
                dist.all_gather_object(gathered, logs)
                logs = merge_tofu_logs(gathered)
            point = target_metrics(logs, self.metrics, self.retain_stats)
        step = int(state.global_step)
        self._last_step = step
        newly = [t for t in self.targets if t.name not in self.met and t.met(point)]
        decision = (step, [t.name for t in newly])
        if world_size > 1:
            decisions: list[Any] = [None] * world_size
            dist.all_gather_object(decisions, decision)
            if any(d != decision for d in decisions):
                raise RuntimeError(f"stop_at_targets: the ranks took different decisions at step {step}: {decisions}")
        self.seconds += time.perf_counter() - tic
        record = {"step": step, **point, "met": [str(t) for t in newly]}
        self.trajectory.append(record)
        for target in newly:
            self.met[target.name] = step
            self._save(args, state, target, point)
        if rank == 0:
            folder = self._folder(args)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / TRAJECTORY_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        metrics = {f"{self.log_prefix}{k}": float(v) for k, v in point.items() if v is not None and math.isfinite(v)}
        if self.trainer is not None:
            self.trainer.log(metrics)
        else:
            state.log_history.append({**metrics, "step": step})
        return point

    def _save(self, args: TrainingArguments, state: TrainerState, target: Target, point: Mapping[str, Any]) -> None:
        if self.trainer is None:
            raise ValueError(
                "StopAtTargetCallback saves checkpoints through the trainer: pass trainer=, or call bind(trainer)."
            )
        folder = self._folder(args) / target.name
        logger.info(f"stop_at_targets: {target} met at step {state.global_step}; saving the model to {folder}.")
        self.trainer.save_model(str(folder))  # every rank: the trainer gathers and writes on the main process
        if state.is_world_process_zero:
            create_card = getattr(self.trainer, "create_model_card", None)
            if create_card is not None and "output_dir" in inspect.signature(create_card).parameters:
                create_card(output_dir=str(folder))  # hf_unlearn's card (another trainer's writes elsewhere)
            state.save_to_json(str(folder / "trainer_state.json"))
            info = {
                "target": str(target),
                "metric": target.metric,
                "threshold": target.threshold,
                "direction": target.direction,
                "step": int(state.global_step),
                "metrics": dict(point),
            }
            (folder / TARGET_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
