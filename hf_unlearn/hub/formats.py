"""The kinds of saved unlearned models, in one table: full weights, a peft adapter, GRUN modules.

Each [`ModelFormat`] says how a saved folder of its kind is recognised (its marker file), what a model card says about
it, how it is loaded back and how to save it again in safetensors. The Hub code (cards, `push_unlearned`,
`load_unlearned`, the trainer's cards) asks this table instead of deciding the kind itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..citations import Paper
from ..constants import ADAPTER_CONFIG_FILE, GRUN_CONFIG_FILE
from .folder import read_json
from .papers import GRUN_PAPER

__all__ = [
    "FULL",
    "GRUN",
    "MODEL_CONFIG_FILE",
    "MODEL_FORMATS",
    "PEFT",
    "ModelFormat",
    "detect_model_format",
    "detect_model_kind",
    "get_model_format",
    "model_format_of_state",
    "read_base_model",
]

#: transformers' model configuration: what a folder of full weights holds.
MODEL_CONFIG_FILE = "config.json"
FULL, PEFT, GRUN = "full", "peft", "grun"


@dataclass(frozen=True)
class ModelFormat:
    """One kind of saved unlearned model.

    Attributes:
        kind: its name (`"full"`, `"peft"`, `"grun"`): `build_model_card(kind=...)`, `unlearning.json`.
        marker_file: the file that marks a folder of this kind. For a model on a base model, it records the base
            model (`base_model_name_or_path`).
        noun: what the folder holds, in a sentence ("a peft adapter").
        description: what the repo holds, for the model card.
        resave: how to save it again with safetensors weights (the message of a refused push).
        recorded_in: whether an `unlearning.json` (`UnlearningTrainer.unlearning_state()`) describes this kind.
        attach: for a model on a base model, `attach(base_model, folder, source)` loads the folder onto the base
            model (`source`: what the user asked to load, for messages); None for a folder that is a whole model.
        library_name: the card's `library_name`.
        tag: the card's tag for this kind, if any.
        papers: what the card cites for this kind.
        per_request: the method is described per unlearning request, in the marker file (GRUN), not by the
            trainer's loss settings.
        base_model_note: the card's note when the base model is not on the Hub, if any.
    """

    kind: str
    marker_file: str
    noun: str
    description: str
    resave: str
    recorded_in: Callable[[Mapping[str, Any]], bool]
    attach: Callable[[torch.nn.Module, Path, str], torch.nn.Module] | None = None
    library_name: str = "transformers"
    tag: str | None = None
    papers: tuple[Paper, ...] = ()
    per_request: bool = False
    base_model_note: str | None = None

    @property
    def needs_base_model(self) -> bool:
        """Whether the folder is loaded onto a base model (an adapter, GRUN modules) rather than on its own."""
        return self.attach is not None

    def is_in(self, folder: str | Path) -> bool:
        """Whether `folder` holds a model of this kind (its marker file)."""
        return (Path(folder) / self.marker_file).is_file()

    def read_config(self, folder: str | Path) -> dict[str, Any] | None:
        """The marker file's JSON object (None when it holds something else)."""
        config = read_json(Path(folder) / self.marker_file)
        return dict(config) if isinstance(config, Mapping) else None

    def load(
        self,
        folder: str | Path,
        base_model: str | None = None,
        source: str | None = None,
        **from_pretrained_kwargs: Any,
    ) -> torch.nn.Module:
        """Load the saved model: `AutoModelForCausalLM.from_pretrained(folder)` for a whole model, else the base
        model (`from_pretrained(base_model)`) with the folder attached. `from_pretrained_kwargs` go to
        `from_pretrained`."""
        from transformers import AutoModelForCausalLM

        if self.attach is None:
            return AutoModelForCausalLM.from_pretrained(folder, **from_pretrained_kwargs)
        if not base_model:
            raise ValueError(f"Loading {self.noun} needs its base model.")
        base = AutoModelForCausalLM.from_pretrained(base_model, **from_pretrained_kwargs)
        return self.attach(base, Path(folder), str(source or folder))


def _attach_adapter(base: torch.nn.Module, folder: Path, source: str) -> torch.nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder))


def _attach_grun(base: torch.nn.Module, folder: Path, source: str) -> torch.nn.Module:
    try:
        from hf_unlearn.grun import load_grun_model
    except ImportError as err:
        raise ImportError(
            f"{source} holds GRUN modules; loading them needs hf_unlearn.grun and pyreft "
            "(`pip install 'hf-unlearn[grun]'`)."
        ) from err
    return load_grun_model(base, str(folder))


#: The formats by kind, in the order a folder is recognised: the first whose marker file it holds.
MODEL_FORMATS: dict[str, ModelFormat] = {
    fmt.kind: fmt
    for fmt in (
        ModelFormat(
            kind=GRUN,
            marker_file=GRUN_CONFIG_FILE,
            noun="GRUN modules",
            description="GRUN modules (a gate and ReFT interventions), attached to the frozen base model",
            resave="save the GRUN modules again with hf_unlearn.grun (safetensors)",
            recorded_in=lambda state: state.get("method") == GRUN,
            attach=_attach_grun,
            tag=GRUN,
            papers=(GRUN_PAPER,),
            per_request=True,
        ),
        ModelFormat(
            kind=PEFT,
            marker_file=ADAPTER_CONFIG_FILE,
            noun="a peft adapter",
            description="a peft adapter, loaded on top of the base model",
            resave="model.save_pretrained(folder)  # peft saves adapter_model.safetensors by default",
            recorded_in=lambda state: bool(state.get("peft")),
            attach=_attach_adapter,
            library_name="peft",
            tag=PEFT,
            base_model_note="The adapter was trained on a base model that is not on the Hub: pass it as `base_model`.",
        ),
        ModelFormat(
            kind=FULL,
            marker_file=MODEL_CONFIG_FILE,
            noun="full weights",
            description="full model weights",
            resave="model.save_pretrained(folder)  # transformers saves model.safetensors",
            recorded_in=lambda state: True,
        ),
    )
}


def get_model_format(kind: str) -> ModelFormat:
    """The format of a kind (`"full"`, `"peft"`, `"grun"`)."""
    if kind not in MODEL_FORMATS:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of {list(MODEL_FORMATS)}.")
    return MODEL_FORMATS[kind]


def detect_model_format(folder: str | Path) -> ModelFormat:
    """The format of a saved unlearned model: the first of [`MODEL_FORMATS`] whose marker file the folder holds."""
    for fmt in MODEL_FORMATS.values():
        if fmt.is_in(folder):
            return fmt
    markers = [f"{fmt.marker_file} ({fmt.noun})" for fmt in MODEL_FORMATS.values()]
    raise FileNotFoundError(
        f"{folder} holds no model: expected {', '.join(markers[:-1])} or {markers[-1]}. Save the model first, e.g. "
        "with `trainer.save_model()`."
    )


def detect_model_kind(folder: str | Path) -> str:
    """What a saved unlearned model is: `"grun"` (`grun_config.json`), `"peft"` (`adapter_config.json`) or
    `"full"` (`config.json`)."""
    return detect_model_format(folder).kind


def model_format_of_state(state: Mapping[str, Any] | None) -> ModelFormat:
    """The format a trainer saves, from its unlearning settings (`unlearning.json`): the first that records itself
    there (GRUN's `method`, the `peft` flag), else full weights."""
    state = state or {}
    return next(fmt for fmt in MODEL_FORMATS.values() if fmt.recorded_in(state))


def read_base_model(folder: str | Path, kind: str | None = None) -> str | None:
    """The base model recorded in a saved adapter or GRUN module set (`base_model_name_or_path`); None for full
    weights or when it is not recorded."""
    fmt = get_model_format(kind) if kind else detect_model_format(folder)
    if not fmt.needs_base_model:
        return None
    config = fmt.read_config(folder)
    return config.get("base_model_name_or_path") if config is not None else None
