"""The unlearning trainer, split by concern:

- `core`: [`UnlearningTrainer`]'s construction, the loss of a batch and the logging of its metrics;
- `gru_step`: GRU's training step (the rectifier's math is `hf_unlearn.gru`'s);
- `nonfinite`: the non-finite loss guard;
- `run_state`: the output folder, checkpoints, `unlearning.json` and the losses' state, resuming;
- `training_log`: `training_log.jsonl`, the log kept in the output folder whatever the save strategy;
- `hub`: the model card and pushes to the Hub;
- `factory`: [`create_trainer`] (plain or GRUN).
"""

from __future__ import annotations

from .core import UnlearningTrainer
from .factory import create_trainer
from .run_state import RESUME_METHOD_KEYS, RESUME_SETTING_KEYS, earlier_run_files

__all__ = ["RESUME_METHOD_KEYS", "RESUME_SETTING_KEYS", "UnlearningTrainer", "create_trainer", "earlier_run_files"]
