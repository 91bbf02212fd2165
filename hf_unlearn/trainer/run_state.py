"""The state of an `UnlearningTrainer` run on disk: its output folder, what a checkpoint and the saved model hold
beyond transformers' own files (`unlearning.json`, the losses' tensors, GRU's state), and resuming from a checkpoint
with the checks that keep a resumed run the same method."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from ..constants import LOSS_STATE_FILE, RUN_ARTIFACTS, RUN_MARKERS, UNLEARNING_STATE_FILE
from ..io import check_readable_files
from ..reference import is_peft_model
from ..unlearning_state import UnlearningState

__all__ = ["RESUME_METHOD_KEYS", "RESUME_SETTING_KEYS", "RunStateMixin", "earlier_run_files"]

logger = logging.get_logger(__name__)

#: `unlearning.json` keys that make the method: a checkpoint cannot be resumed with other values.
RESUME_METHOD_KEYS = ("forget_loss", "retain_loss", "rectification", "method", "peft")
#: Keys whose change on resume is warned about and recorded.
RESUME_SETTING_KEYS = (
    "forget_loss_kwargs",
    "retain_loss_kwargs",
    "gamma",
    "alpha",
    "learning_rate",
    "token_average",
    "gru_ema",
    "gru_retain_weight",
    "gru_projected",
    "smoothing",
    "smoothing_kwargs",
    "trainable_parameters",
)


def earlier_run_files(output_dir: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The entries of `output_dir` (not recursive) that match `patterns` (glob), sorted."""
    if not output_dir.is_dir():
        return []
    return sorted({path for pattern in patterns for path in output_dir.glob(pattern)})


class RunStateMixin:
    """The run-state part of [`UnlearningTrainer`]: claims the output folder, saves and restores the losses' state
    and GRU's in checkpoints, checks a resumed run against its checkpoint's `unlearning.json`, and writes that file
    beside the saved model. The host trainer provides `args`, the losses, `_gru_rectifier` / `_rectifier`, the Hub
    push (`_push_checkpoint`) and transformers' Trainer; it sets `_resumed` to None in its setup."""

    #: The checkpoint this run resumed from and the settings that changed (see `check_resumed_settings`).
    _resumed: dict[str, Any] | None

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """transformers' checkpoint, then GRU's and the losses' state, then its push (which must see them all)."""
        super()._save_checkpoint(model, trial)
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        checkpoint = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        if self._rectifier is not None and (self.args.should_save or self._rectifier.reduce_sums is not None):
            # Sharded GRU buffers are gathered on every rank; the ranks that save write them.
            self._rectifier.save(checkpoint, write=self.args.should_save)
        if not self.args.should_save:
            return
        self.save_loss_state(checkpoint)
        if getattr(self, "_checkpoint_to_push", None) is not None:
            self._checkpoint_to_push = None
            self._push_checkpoint(checkpoint)

    # ------------------------------------------------------------------ loss state (e.g. RMU's random direction)
    def _stateful_losses(self) -> dict[str, Any]:
        """The losses whose state is saved, by role (the prefix of their tensors' names)."""
        return {"forget": self.forget_loss_fn, "retain": self.retain_loss_fn}

    def save_loss_state(self, directory: str) -> str | None:
        """Save the losses' tensors (e.g. RMU's direction) as `loss_state.safetensors`; None if they have none."""
        from safetensors.torch import save_file

        tensors = {}
        for role, loss in self._stateful_losses().items():
            for key, value in loss.state_dict().items():
                tensors[f"{role}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        if not tensors:
            return None
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, LOSS_STATE_FILE)
        save_file(tensors, path, metadata={"forget_loss": self.args.forget_loss, "retain_loss": self.args.retain_loss})
        return path

    def load_loss_state(self, directory: str) -> bool:
        """Restore what [`save_loss_state`] wrote in `directory`; False when there is no such file."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = os.path.join(directory, LOSS_STATE_FILE)
        if not os.path.isfile(path):
            return False
        with safe_open(path, framework="pt") as f:
            saved_for = f.metadata() or {}
        if saved_for.get("forget_loss", self.args.forget_loss) != self.args.forget_loss:
            raise ValueError(
                f"{path} holds the state of forget loss {saved_for['forget_loss']!r}, but this run trains "
                f"{self.args.forget_loss!r}. Resume with the same forget_loss, or from another checkpoint."
            )
        tensors = load_file(path)
        for role, loss in self._stateful_losses().items():
            prefix = f"{role}."
            state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
            if state:
                loss.load_state_dict(state)
        return True

    # ------------------------------------------------------------------ the output folder
    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        if not resume_from_checkpoint:
            self._claim_output_dir()
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    def _claim_output_dir(self) -> None:
        """Refuse an output_dir holding an earlier run, or (overwrite_output_dir) move that run's files aside."""
        output_dir = Path(self.args.output_dir)
        earlier = earlier_run_files(output_dir, RUN_MARKERS)
        if not earlier:
            return
        if not self.args.overwrite_output_dir:
            raise ValueError(
                f"{output_dir} holds an earlier run ({', '.join(p.name for p in earlier[:4])}"
                f"{', ...' if len(earlier) > 4 else ''}). Set overwrite_output_dir=True to replace it (its files are "
                "moved aside first), resume_from_checkpoint=True to continue it, or choose another output_dir."
            )
        if self.args.should_save:
            aside = output_dir.with_name(f"{output_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            moved = earlier_run_files(output_dir, RUN_ARTIFACTS)
            aside.mkdir(parents=True, exist_ok=True)
            for path in moved:
                shutil.move(str(path), str(aside / path.name))
            logger.warning(
                f"overwrite_output_dir: moved the earlier run's {len(moved)} files and folders from {output_dir} to "
                f"{aside}, so that none of them labels the new model."
            )
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ resuming
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        self.check_resumed_settings(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def check_resumed_settings(self, checkpoint: str) -> None:
        """Compare the unlearning settings a checkpoint recorded (its `unlearning.json`) with this run's: a change of
        method (`RESUME_METHOD_KEYS`) is refused; other changes are warned about and recorded in `unlearning.json`
        (`changed_on_resume`), and the learning rate recorded is the checkpoint's, which the restored scheduler
        keeps."""
        if self._resumed is not None and self._resumed["from"] == str(checkpoint):
            return
        check_readable_files(checkpoint, what=f"the checkpoint {checkpoint}")
        recorded = UnlearningState.read(checkpoint)
        if recorded is None:
            logger.warning(f"{checkpoint} has no {UNLEARNING_STATE_FILE}: its unlearning settings cannot be compared.")
            return
        # Compared key by key as written, so that a key only one side records counts as a change.
        saved = recorded.to_dict()
        current = self.unlearning_state().to_dict()
        method = [
            key
            for key in RESUME_METHOD_KEYS
            if (key in saved or key in current) and saved.get(key) != current.get(key)
        ]
        if method:
            changes = ", ".join(f"{key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in method)
            raise ValueError(
                f"{checkpoint} was trained with another unlearning method ({changes}). A resumed run keeps its "
                "method: resume with the checkpoint's settings, or start a new run in another output_dir."
            )
        changed = {
            key: {"checkpoint": saved[key], "resumed": current.get(key)}
            for key in RESUME_SETTING_KEYS
            if key in saved and saved[key] != current.get(key)
        }
        if changed:
            listed = ", ".join(
                f"{key} {value['checkpoint']!r} -> {value['resumed']!r}" for key, value in changed.items()
            )
            logger.warning(
                f"Resuming {checkpoint} with changed settings ({listed}). They apply from here on, except the "
                "learning rate: the restored scheduler keeps the checkpoint's. unlearning.json records both."
            )
        self._resumed = {"from": str(checkpoint), "changed": changed, "learning_rate": saved.get("learning_rate")}

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is not None:  # FSDP / DeepSpeed resume without _load_from_checkpoint
            self.check_resumed_settings(checkpoint)
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.load_loss_state(checkpoint)
        if checkpoint is not None and self.args.rectification == "gru" and not self._gru_rectifier().load(checkpoint):
            logger.warning(
                f"{checkpoint} holds no GRU state (gru_state.safetensors): the moving average of the retain "
                "gradient restarts from zero, so the resumed run will differ from an uninterrupted one."
            )

    # ------------------------------------------------------------------ saving
    def unlearning_state(self) -> UnlearningState:
        """What was unlearned and how: saved as `unlearning.json` beside the model (read by model cards). A subclass
        adds its own fields with `dataclasses.replace(super().unlearning_state(), ...)`."""
        args = self.args
        gru = args.rectification == "gru"
        state = UnlearningState(
            forget_loss=args.forget_loss,
            forget_loss_kwargs=args.forget_loss_kwargs,
            retain_loss=args.retain_loss,
            retain_loss_kwargs=args.retain_loss_kwargs,
            gamma=args.gamma,
            alpha=args.alpha,
            learning_rate=args.learning_rate,
            seed=args.seed,
            peft=is_peft_model(self.accelerator.unwrap_model(self.model)),
            rectification=args.rectification,
            trainable_parameters=args.trainable_parameters,
            token_average=args.token_average,
            gru_ema=args.gru_ema if gru else None,
            gru_retain_weight=args.gru_retain_weight if gru else None,
            gru_projected=args.gru_projected if gru else None,
            smoothing=args.smoothing,
            smoothing_kwargs=args.smoothing_kwargs,
            base_model=self._base_model_name(),
            use_chat_template=self.encoder.use_chat_template,
            forget_data=self.data_sources.get("forget"),
            retain_data=self.data_sources.get("retain") if self.retain_loss_fn.uses_retain_data else None,
            training=self._training_schedule(),
        )
        resumed = getattr(self, "_resumed", None)
        if resumed is not None:
            state.resumed_from = os.path.basename(os.path.normpath(resumed["from"]))
            state.changed_on_resume = resumed["changed"] or None
            if "learning_rate" in resumed["changed"]:
                state.learning_rate = resumed["learning_rate"]  # what the restored scheduler ran with
        return state

    def _base_model_name(self) -> str | None:
        """The model before unlearning, as its config names it (the base model of an adapter or GRUN modules)."""
        model = self.accelerator.unwrap_model(self.model)
        base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        return getattr(getattr(base, "config", None), "_name_or_path", None) or None

    def _training_schedule(self) -> dict[str, Any]:
        """How long and in what batches the run trained (the model card's training rows)."""
        args = self.args
        by_steps = args.max_steps is not None and args.max_steps > 0
        schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
        return {
            "steps": int(self.state.global_step),
            "max_steps": args.max_steps if by_steps else None,
            "num_train_epochs": None if by_steps else args.num_train_epochs,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "world_size": args.world_size,
            "lr_scheduler_type": str(schedule),
            "warmup_steps": args.warmup_steps,  # a float below 1: a fraction of the steps
            "optim": str(getattr(args.optim, "value", args.optim)),
            "max_length": args.max_length,
        }

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model, `unlearning.json` and the losses' state; the final save (into `output_dir` itself) also
        writes hf_unlearn's model card, whatever the save strategy (a peft adapter's folder would otherwise keep
        peft's empty template)."""
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            self.unlearning_state().write(output_dir)
            self.save_loss_state(output_dir)
            if Path(output_dir).resolve() == Path(self.args.output_dir).resolve():
                self.create_model_card()
