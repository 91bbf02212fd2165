"""The training log in the output folder: `training_log.jsonl`, the trainer's `log_history` one entry a line.

transformers keeps `log_history` in `trainer_state.json`, which only checkpoints hold: with `save_strategy="no"` (the
recipes' setting) the losses, GRU's and GRUN's metrics were lost with the process. This callback writes each entry
as it is logged, so that a crashed run keeps what it logged too.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from ..constants import TRAINING_LOG_FILE
from ..io import write_text_atomic

__all__ = ["TrainingLogCallback"]


class TrainingLogCallback(TrainerCallback):
    """Write `log_history` to `<output_dir>/training_log.jsonl` (main process only): a new run starts the file
    afresh, a resumed one keeps the entries up to its checkpoint's step and appends."""

    @staticmethod
    def _path(args) -> Path:
        return Path(args.output_dir) / TRAINING_LOG_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        path = self._path(args)
        kept = []
        if state.global_step > 0 and path.is_file():  # resumed: what the checkpoint's run logged until then
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if isinstance(entry, dict) and entry.get("step", 0) <= state.global_step:
                    kept.append(line + "\n")
        write_text_atomic(path, "".join(kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not args.should_save or not state.log_history:
            return
        path = self._path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(state.log_history[-1], default=str) + "\n")
