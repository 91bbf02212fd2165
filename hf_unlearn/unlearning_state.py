"""The schema of `unlearning.json`: what was unlearned and how, beside a saved model or in a checkpoint.

One dataclass, [`UnlearningState`], is the only reader and writer of the file: the trainer writes it (`save_model`)
and compares it on resume; the Hub reads it for model cards and pushes. It imports only the standard library and
hf_unlearn's constants and I/O helpers, so that both the trainer and the Hub can use it without an import cycle (and
without importing trl).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .constants import UNLEARNING_STATE_FILE
from .io import read_json_file, write_json_atomic

__all__ = ["UnlearningState"]

# Fields that record how a file departs from the schema, not keys of it.
_BOOKKEEPING = ("absent_keys", "extra")


@dataclass
class UnlearningState:
    """The content of `unlearning.json`, key by key, in the order the trainer writes them.

    The first keys (`forget_loss` to `token_average`) are always written, `null` included; the others only when they
    apply: GRU's settings with `rectification="gru"`, `smoothing` and its settings when it is on, `resumed_from` /
    `changed_on_resume` on a resumed run, `method` and `grun` for GRUN. A file written by hand or by another version
    may lack keys or hold others: `absent_keys` names the always-written keys it lacks and `extra` keeps the keys
    this version does not know, so that `from_dict(d).to_dict() == d` for every file the trainer wrote (and every
    object without explicit `null`s in the optional keys).
    """

    forget_loss: str | None = None
    forget_loss_kwargs: dict[str, Any] | None = None
    retain_loss: str | None = None
    retain_loss_kwargs: dict[str, Any] | None = None
    gamma: float | None = None
    alpha: float | None = None
    #: What the run trained with; on a resume that changed it, the checkpoint's (the restored scheduler keeps it).
    learning_rate: float | None = None
    seed: int | None = None
    peft: bool | None = None
    rectification: str | None = None
    trainable_parameters: str | None = None
    token_average: str | None = None
    # ---- optional: written only when not None
    gru_ema: float | None = None
    gru_retain_weight: float | None = None
    gru_projected: str | None = None
    #: Smoothness-enhanced unlearning of the forget term (`"sam"`, `"rs"`) and its settings, when it was on.
    smoothing: str | None = None
    smoothing_kwargs: dict[str, Any] | None = None
    #: The checkpoint folder's name a resumed run started from.
    resumed_from: str | None = None
    #: `{key: {"checkpoint": old, "resumed": new}}` for the settings changed on resume (`RESUME_SETTING_KEYS`).
    changed_on_resume: dict[str, dict[str, Any]] | None = None
    #: The trainer's method when it is not the plain forget/retain objective (`"grun"`).
    method: str | None = None
    #: GRUN: the model's requests, a `GRUNConfig` dict each, oldest first.
    grun: list[dict[str, Any]] | None = None
    #: The model before unlearning (a Hub id or a path: its `config._name_or_path`), the reference of `analyze`.
    base_model: str | None = None
    #: The prompt format trained with: the tokenizer's chat template (True) or "Question: ...\nAnswer:" (False).
    use_chat_template: bool | None = None
    #: Where the forget and retain rows came from (`hf_unlearn.data.DataSource.to_dict()`).
    forget_data: dict[str, Any] | None = None
    retain_data: dict[str, Any] | None = None
    #: The schedule: steps done, max_steps or epochs, batch size per device, accumulation, processes, the
    #: learning-rate schedule and warmup, the optimizer.
    training: dict[str, Any] | None = None
    # ---- what a file held beyond this schema
    #: Always-written keys missing from the file read (older or hand-written files): `to_dict` leaves them out.
    absent_keys: tuple[str, ...] = ()
    #: Keys this version does not know, kept as read and written after the others.
    extra: dict[str, Any] = field(default_factory=dict)

    #: Keys written even when None; every other field of the schema is written only when not None.
    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = (
        "forget_loss",
        "forget_loss_kwargs",
        "retain_loss",
        "retain_loss_kwargs",
        "gamma",
        "alpha",
        "learning_rate",
        "seed",
        "peft",
        "rectification",
        "trainable_parameters",
        "token_average",
    )

    @classmethod
    def schema_keys(cls) -> tuple[str, ...]:
        """The keys of the schema, in the order they are written (the fields, without `absent_keys` and `extra`)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BOOKKEEPING)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `unlearning.json`: always-written keys, optional ones that are set, then `extra`."""
        state = {
            key: getattr(self, key)
            for key in self.schema_keys()
            if (key in self.ALWAYS_WRITTEN and key not in self.absent_keys) or getattr(self, key) is not None
        }
        state.update({key: value for key, value in self.extra.items() if key not in state})
        return state

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnlearningState:
        """The state of a JSON object read from `unlearning.json` (missing and unknown keys kept track of)."""
        known = cls.schema_keys()
        return cls(
            **{key: data[key] for key in known if key in data},
            absent_keys=tuple(key for key in cls.ALWAYS_WRITTEN if key not in data),
            extra={key: value for key, value in data.items() if key not in known},
        )

    @classmethod
    def read(cls, folder: str | Path) -> UnlearningState | None:
        """The `unlearning.json` of a saved model or checkpoint folder, or None when it has none; a file that is not
        a JSON object raises a ValueError that names it."""
        path = Path(folder) / UNLEARNING_STATE_FILE
        if not path.is_file():
            return None
        data = read_json_file(path, what="the unlearning settings")
        if not isinstance(data, Mapping):
            raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data)

    def write(self, folder: str | Path) -> Path:
        """Write `unlearning.json` in `folder` atomically; returns its path."""
        return write_json_atomic(Path(folder) / UNLEARNING_STATE_FILE, self.to_dict())
