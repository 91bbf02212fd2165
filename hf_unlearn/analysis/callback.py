"""`GEffectCallback`: the G-effect of the trainer's objective over the steps of an unlearning run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import transformers
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from ..constants import GEFFECT_FILE
from ..io import write_json_atomic
from .geffect import GEffect, build_geffect_batch, compute_g_effect

logger = logging.get_logger(__name__)

FILE_FORMAT = "hf_unlearn.geffect"


def load_geffect_records(path: str | Path) -> list[GEffect]:
    """The records of a `geffect.json` written by [`GEffectCallback`] (or by `hf-unlearn analyze`)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "records" in data:
        return [GEffect.from_dict(r) for r in data["records"]]
    if isinstance(data, dict) and "forget" in data:
        return [GEffect.from_dict(data)]
    raise ValueError(f"{path} is not a G-effect file (expected a 'records' list or one G-effect record).")


class GEffectCallback(TrainerCallback):
    """Computes the G-effect of the trainer's objective on a fixed sample every `every_n_steps` optimizer steps.

    The objective is the trainer's own: gamma * `trainer.forget_loss_fn` (plus alpha * `trainer.retain_loss_fn`
    with `include_retain_loss=True`), with the trainer's reference model. The risks are the mean-NLLs of
    `num_samples` forget and `num_samples` retain examples drawn once with `seed` (the same examples at every step,
    so the values are comparable over steps). See [`compute_g_effect`] for the definition and the sign convention
    (negative forget = the forget risk rises; negative retain = retention harmed).

    Each computation (at step 0 before training when `at_start`, every `every_n_steps` steps after the optimizer
    step, and at the last step):
    - is logged through the trainer (`geffect/forget`, `geffect/retain`, `geffect/forget_risk`,
      `geffect/retain_risk`, and `geffect/forget/<group>`, `geffect/retain/<group>` per parameter group with
      `log_per_group`), so tensorboard / wandb / `state.log_history` receive it at that step;
    - is appended to `history` and to `output_dir/geffect.json`, rewritten atomically each time. On resuming, the
      records of later steps than the checkpoint's are dropped.

    Training is not perturbed: the gradients are taken with hooks that free them at once, the `.grad`s and the
    train/eval mode are restored, and nothing touches the optimizer or the RNGs used for training data.

    Multi-process: computed on the main process only, with the unwrapped model and no collective operation, and
    without changing the trainer's control flow (its own logging of the step still happens on every process), so it
    cannot deadlock; the other processes wait for it at the next collective (keep `num_samples` small on large
    models). Sharded parameters (FSDP, DeepSpeed) are not supported: it raises at the start of training.

    `UnlearningTrainer` binds it to itself (`callbacks=[...]` or `add_callback`); with another trainer class, bind it
    yourself (transformers gives callbacks no handle on the trainer):
    ```python
    trainer = UnlearningTrainer(..., callbacks=[GEffectCallback(forget, retain, every_n_steps=5)])
    trainer.add_callback(GEffectCallback(forget, retain).bind(trainer))
    ```

    Args:
        forget_dataset, retain_dataset: datasets in any layout the trainer accepts (e.g. TOFU question/answer).
        every_n_steps: optimizer steps between computations.
        num_samples: examples drawn from each dataset (all when the dataset is smaller).
        seed: seed of that draw.
        per_instance: also store per-example values (one backward pass per example).
        include_retain_loss: add the trainer's retain term to the objective.
        batch_size: micro-batch size of the G-effect forwards (None: the sample in one batch).
        at_start: also compute before the first step (the G-effect at the original model).
        log_per_group: log one key per parameter group as well as the totals.
        output_file: file name under `args.output_dir` (None: no file).
        progress: show a progress bar per computation.
    """

    def __init__(
        self,
        forget_dataset: Any,
        retain_dataset: Any,
        every_n_steps: int = 10,
        num_samples: int = 16,
        seed: int = 0,
        per_instance: bool = False,
        include_retain_loss: bool = False,
        batch_size: int | None = None,
        at_start: bool = True,
        log_per_group: bool = True,
        output_file: str | None = GEFFECT_FILE,
        progress: bool = False,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        for name, dataset in (("forget", forget_dataset), ("retain", retain_dataset)):
            if dataset is None or len(dataset) == 0:
                raise ValueError(f"The {name} dataset of GEffectCallback is empty; it needs at least one example.")
        self.forget_dataset, self.retain_dataset = forget_dataset, retain_dataset
        self.every_n_steps, self.num_samples, self.seed = every_n_steps, num_samples, seed
        self.per_instance, self.include_retain_loss, self.batch_size = per_instance, include_retain_loss, batch_size
        self.at_start, self.log_per_group = at_start, log_per_group
        self.output_file, self.progress = output_file, progress
        self.trainer: Any | None = None
        self.history: list[GEffect] = []
        self._batch: dict | None = None
        self._records: list[dict[str, Any]] = []
        self._last_step: int | None = None

    # ------------------------------------------------------------------ trainer handle
    def bind(self, trainer: Any) -> GEffectCallback:
        """Attach to an `UnlearningTrainer` (returns self, for `trainer.add_callback(cb.bind(trainer))`)."""
        if not hasattr(trainer, "forget_loss_fn"):
            raise TypeError(f"GEffectCallback needs an UnlearningTrainer, got {type(trainer).__name__}.")
        self.trainer = trainer
        return self

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.trainer is None:
            raise RuntimeError(
                "GEffectCallback has no trainer: UnlearningTrainer binds the callbacks it is given (callbacks=[...] "
                "or add_callback); with another trainer call `GEffectCallback(...).bind(trainer)`."
            )
        trainer = self.trainer
        if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
            raise ValueError(
                "GEffectCallback needs the full (unsharded) parameters on one process; FSDP and DeepSpeed shard "
                "them. Run the G-effect analysis without sharding, or afterwards with `hf-unlearn analyze`."
            )
        self._batch = build_geffect_batch(
            trainer.processing_class,
            self.forget_dataset,
            self.retain_dataset,
            num_samples=self.num_samples,
            seed=self.seed,
            refusals=trainer.forget_loss_fn.needs_refusals,
            question_key=args.question_key,
            answer_key=args.answer_key,
            max_length=args.max_length,
            encoder=trainer.encoder,
        )
        self.history = []
        self._records = self._previous_records(args, state)
        self._last_step = None
        if self.at_start:
            self._record(args, state)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step % self.every_n_steps == 0:
            self._record(args, state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._batch is not None and self._last_step != state.global_step:
            self._record(args, state)

    # ------------------------------------------------------------------ work
    def _previous_records(self, args: TrainingArguments, state: TrainerState) -> list[dict[str, Any]]:
        """Records of an earlier run in the same output_dir, up to the step training resumes from."""
        path = self._path(args)
        if path is None or not path.is_file() or state.global_step == 0:
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            records = list(data.get("records", []))
        except (ValueError, AttributeError):
            logger.warning(f"{path} is not a G-effect file; it will be overwritten.")
            return []
        limit = state.global_step - 1 if self.at_start else state.global_step
        return [r for r in records if isinstance(r.get("step"), int) and r["step"] <= limit]

    def _path(self, args: TrainingArguments) -> Path | None:
        return Path(args.output_dir) / self.output_file if self.output_file else None

    def _record(self, args: TrainingArguments, state: TrainerState) -> None:
        self._last_step = state.global_step
        trainer = self.trainer
        if not state.is_world_process_zero:
            return
        model = trainer.accelerator.unwrap_model(trainer.model)
        result = compute_g_effect(
            model,
            trainer.forget_loss_fn,
            self._batch,
            gamma=args.gamma,
            retain_objective=trainer.retain_loss_fn if self.include_retain_loss else None,
            alpha=args.alpha,
            per_instance=self.per_instance,
            batch_size=self.batch_size,
            loss_context_fn=trainer.loss_context,
            progress=self.progress,
            token_average=args.token_average,
        )
        result.step = state.global_step
        self.history.append(result)
        self._log(trainer, result)
        self._records.append(result.to_dict())
        path = self._path(args)
        if path is not None and args.should_save:
            write_json_atomic(
                path,
                {
                    "format": FILE_FORMAT,
                    "forget_loss": args.forget_loss,
                    "forget_loss_kwargs": args.forget_loss_kwargs,
                    "retain_loss": args.retain_loss if self.include_retain_loss else None,
                    "gamma": args.gamma,
                    "alpha": args.alpha if self.include_retain_loss else None,
                    "num_samples": self.num_samples,
                    "seed": self.seed,
                    "records": self._records,
                },
            )

    def _log(self, trainer: Any, result: GEffect) -> None:
        logs = {
            "geffect/forget": result.forget,
            "geffect/retain": result.retain,
            "geffect/forget_risk": result.forget_risk,
            "geffect/retain_risk": result.retain_risk,
        }
        if self.log_per_group:
            for name, (forget, retain) in result.per_group.items():
                logs[f"geffect/forget/{name}"] = forget
                logs[f"geffect/retain/{name}"] = retain
        # The base Trainer.log: trl's SFTTrainer.log would flush (and clear) the running loss metrics into this entry.
        # Trainer.log -> CallbackHandler.on_log clears control.should_log, which DefaultFlowCallback has just set for
        # this step: left cleared, the trainer would skip its own log of the step, and under DDP only the main
        # process would skip that log's loss all-gather, a deadlock. Put the flag back.
        should_log = trainer.control.should_log
        try:
            transformers.Trainer.log(trainer, logs)
        finally:
            trainer.control.should_log = should_log
