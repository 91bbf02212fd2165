"""The registry of unlearning methods: one declaration per kind of unlearned model (full weights, a peft adapter, GRUN
modules, or a kind of your own), asked by everything that must treat the kinds differently.

A [`UnlearningMethod`] says, once, what a kind needs:

- **training**: the class of its config (`GRUNConfig`, peft's `PeftConfig`) and its trainer builder, which
  [`hf_unlearn.create_trainer`] calls;
- **the reference model** of NPO-like losses: a frozen copy, or the same model with its edits switched off;
- **scoring**: whether a teacher-forced forward of `prompt + answer` must be told where each prompt ends (GRUN
  edits the last prompt token), given as the extra forward arguments built from the prompt lengths; the one scoring
  path ([`hf_unlearn.evaluation.scoring`]) asks for them;
- **on disk**: the marker file of a saved folder, how to attach it to its base model, what a model card says about
  it and the papers to cite.

Trainers and loaders are named by import path (`"package.module:attribute"`) and imported on first use, as
transformers' auto classes do: the registry sits below the trainers and the Hub code that ask it, so no import cycle
runs through it.

```python
from hf_unlearn.methods import UnlearningMethod, register_method

register_method(UnlearningMethod(kind="my_edit", marker_file="my_edit.json", ...))
```
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..citations import Paper
from ..constants import IGNORE_INDEX
from ..io import read_json_file

__all__ = [
    "REFERENCE_ADAPTERS_OFF",
    "REFERENCE_FROZEN_COPY",
    "UnlearningMethod",
    "answer_forward_kwargs",
    "get_method",
    "instance_of",
    "list_methods",
    "method_for_config",
    "method_of_folder",
    "method_of_model",
    "method_of_state",
    "prompt_lengths_from_labels",
    "register_method",
    "resolve_object",
]

#: The reference is the same model with its adapters (peft) or edits (GRUN) switched off (`model.disable_adapter()`):
#: no copy.
REFERENCE_ADAPTERS_OFF = "adapters_off"
#: The reference is a frozen deep copy of the model, made before training.
REFERENCE_FROZEN_COPY = "frozen_copy"


def resolve_object(path: str) -> Any:
    """The object named by `"package.module:attribute"` (attributes may be dotted), imported now."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"Expected 'package.module:attribute', got {path!r}.")
    obj: Any = importlib.import_module(module_name)
    for name in attribute.split("."):
        obj = getattr(obj, name)
    return obj


def instance_of(obj: Any, path: str) -> bool:
    """Whether `obj` is an instance of the class named by `"package.module:Class"`, without importing the module:
    if it was never imported, no instance of its classes can exist."""
    module_name, _, attribute = path.partition(":")
    if module_name not in sys.modules:
        return False
    try:
        cls = resolve_object(path)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, cls)


@dataclass(frozen=True)
class UnlearningMethod:
    """What one kind of unlearned model needs, declared once.

    Attributes:
        kind: its name (`"full"`, `"peft"`, `"grun"`): `unlearning.json`, `build_model_card(kind=...)`.
        marker_file: the file that marks a saved folder of this kind; for a kind loaded onto a base model, it records
            that base model (`base_model_name_or_path`).
        noun: what a saved folder holds, in a sentence ("a peft adapter").
        description: what a Hub repo of this kind holds, for the model card.
        resave: how to save it again with safetensors weights (the message of a refused push).
        model_class: the class of a live model of this kind (`"module:Class"`); None: any model no other kind claims.
        config_class: the class of the config that asks `create_trainer` for this kind; None for the default kind.
        trainer: the trainer builder (`"module:attribute"`), called as `builder(model, args, config, **kwargs)`.
        reference: how NPO-like losses get the model before unlearning ([`REFERENCE_ADAPTERS_OFF`] or
            [`REFERENCE_FROZEN_COPY`]).
        scoring_inputs: `scoring_inputs(prompt_lengths)` gives the extra forward arguments of a teacher-forced pass
            over right-padded `prompt + answer` rows (`prompt_lengths`: a `[batch]` tensor of token counts); None
            when a plain forward scores the model (it does not depend on where the prompt ends).
        unfreeze: `unfreeze(model)` switches gradients on for the parameters this method trains, on a model loaded
            frozen for inference (the G-effect's `analyze` takes its gradient there); None: every parameter.
        loader: `"module:function"` attaching a saved folder to its base model, `loader(base_model, folder)`; None
            for a folder that is a whole model.
        recorded_in: whether an `unlearning.json` describes a model of this kind.
        library_name: the card's `library_name`.
        tag: the card's tag for this kind, if any.
        papers: what a card of this kind cites.
        per_request: the method is described per unlearning request in the marker file (GRUN), not by the
            trainer's loss settings.
        base_model_note: the card's note when the base model is not on the Hub, if any.
    """

    kind: str
    marker_file: str
    noun: str
    description: str
    resave: str
    trainer: str
    recorded_in: Callable[[Mapping[str, Any]], bool]
    model_class: str | None = None
    config_class: str | None = None
    reference: str = REFERENCE_FROZEN_COPY
    scoring_inputs: Callable[[torch.Tensor], dict[str, Any]] | None = None
    unfreeze: Callable[[torch.nn.Module], None] | None = None
    loader: str | None = None
    library_name: str = "transformers"
    tag: str | None = None
    papers: tuple[Paper, ...] = ()
    per_request: bool = False
    base_model_note: str | None = None

    def __post_init__(self) -> None:
        if self.reference not in (REFERENCE_ADAPTERS_OFF, REFERENCE_FROZEN_COPY):
            raise ValueError(
                f"UnlearningMethod {self.kind!r}: reference must be {REFERENCE_ADAPTERS_OFF!r} or "
                f"{REFERENCE_FROZEN_COPY!r}, got {self.reference!r}."
            )

    # ------------------------------------------------------------------ live models and configs
    def is_model(self, model: Any) -> bool:
        """Whether `model` is a live model of this kind (never true for the default kind, which has no class)."""
        return self.model_class is not None and instance_of(model, self.model_class)

    def is_config(self, config: Any) -> bool:
        """Whether `config` asks for this kind (an instance of `config_class`)."""
        return self.config_class is not None and instance_of(config, self.config_class)

    def build_trainer(self, model: Any, args: Any, config: Any = None, **kwargs: Any) -> Any:
        """The trainer of an unlearning job of this kind (see [`hf_unlearn.create_trainer`])."""
        return resolve_object(self.trainer)(model, args, config, **kwargs)

    def make_trainable(self, model: torch.nn.Module) -> torch.nn.Module:
        """Switch gradients on for what this method trains (see `unfreeze`), in place; returns the model."""
        if self.unfreeze is None:
            model.requires_grad_(True)
        else:
            self.unfreeze(model)
        return model

    def scoring_kwargs(self, prompt_lengths: torch.Tensor) -> dict[str, Any]:
        """The extra forward arguments of a teacher-forced pass over right-padded `prompt + answer` rows."""
        return dict(self.scoring_inputs(prompt_lengths)) if self.scoring_inputs is not None else {}

    # ------------------------------------------------------------------ saved folders
    @property
    def needs_base_model(self) -> bool:
        """Whether a saved folder is loaded onto a base model (an adapter, GRUN modules) rather than on its own."""
        return self.loader is not None

    def is_in(self, folder: str | Path) -> bool:
        """Whether `folder` holds a model of this kind (its marker file)."""
        return (Path(folder) / self.marker_file).is_file()

    def read_config(self, folder: str | Path) -> dict[str, Any] | None:
        """The marker file's JSON object (None when it holds something else)."""
        config = read_json_file(Path(folder) / self.marker_file, what=f"the configuration of {self.noun}")
        return dict(config) if isinstance(config, Mapping) else None

    def read_base_model(self, folder: str | Path) -> str | None:
        """The base model recorded in the marker file (`base_model_name_or_path`); None for a whole model or when
        none is recorded."""
        if not self.needs_base_model:
            return None
        config = self.read_config(folder)
        return config.get("base_model_name_or_path") if config is not None else None

    def load(
        self,
        folder: str | Path,
        base_model: str | None = None,
        source: str | None = None,
        **from_pretrained_kwargs: Any,
    ) -> torch.nn.Module:
        """Load a saved folder: `AutoModelForCausalLM.from_pretrained(folder)` for a whole model, else the base
        model (`from_pretrained(base_model)`) with the folder attached. `source` (what the user asked to load) is
        for messages; `from_pretrained_kwargs` go to `from_pretrained`."""
        from transformers import AutoModelForCausalLM

        if self.loader is None:
            return AutoModelForCausalLM.from_pretrained(folder, **from_pretrained_kwargs)
        if not base_model:
            raise ValueError(f"Loading {self.noun} ({source or folder}) needs its base model: pass `base_model=`.")
        base = AutoModelForCausalLM.from_pretrained(base_model, **from_pretrained_kwargs)
        return self.attach(base, folder, source)

    def attach(self, base_model: torch.nn.Module, folder: str | Path, source: str | None = None) -> torch.nn.Module:
        """Attach a saved folder of this kind to an already loaded base model."""
        if self.loader is None:
            raise ValueError(f"{source or folder} holds {self.noun}, a whole model: there is nothing to attach.")
        try:
            loader = resolve_object(self.loader)
        except ImportError as err:
            raise ImportError(f"{source or folder} holds {self.noun}; loading it needs {err.name}: {err}") from err
        return loader(base_model, str(folder))


_METHODS: dict[str, UnlearningMethod] = {}


def register_method(method: UnlearningMethod, *, replace: bool = False) -> UnlearningMethod:
    """Add a kind of unlearned model; returns `method`. Kinds with a model class are recognised (a live model, a
    saved folder, `unlearning.json`) in the order they were registered; a kind without one (the built-in `"full"`)
    comes last and claims what no other kind does."""
    if not isinstance(method, UnlearningMethod):
        raise TypeError(f"register_method expects an UnlearningMethod, got {type(method).__name__}.")
    if method.kind in _METHODS and not replace:
        raise ValueError(f"A method of kind {method.kind!r} is registered already; pass replace=True to replace it.")
    _METHODS[method.kind] = method
    return method


def list_methods() -> list[str]:
    """The registered kinds, in the order they are recognised (the default kind, `"full"`, last)."""
    return [method.kind for method in _ordered()]


def get_method(kind: str) -> UnlearningMethod:
    """The method of a kind (`"full"`, `"peft"`, `"grun"`, or a registered one)."""
    if kind not in _METHODS:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of {list_methods()}.")
    return _METHODS[kind]


def _ordered() -> list[UnlearningMethod]:
    """Specific kinds in registration order, then the default kinds (no model class) last."""
    methods = list(_METHODS.values())
    return [m for m in methods if m.model_class is not None] + [m for m in methods if m.model_class is None]


def _default() -> UnlearningMethod:
    return next(m for m in _ordered() if m.model_class is None)


def _model_chain(model: Any) -> list[Any]:
    """`model` and what it wraps, outermost first: DDP's and accelerate's `.module`, peft's and GRUN's
    `get_base_model()`."""
    chain: list[Any] = []
    current = model
    while isinstance(current, torch.nn.Module) and all(current is not seen for seen in chain):
        chain.append(current)
        inner = getattr(current, "module", None)
        if not isinstance(inner, torch.nn.Module):
            get_base_model = getattr(current, "get_base_model", None)
            inner = get_base_model() if callable(get_base_model) else None
        current = inner
    return chain


def method_of_model(model: Any) -> UnlearningMethod:
    """The method a live model belongs to: the first kind whose model class it (or, through DDP's `.module`, the
    model it wraps) is an instance of, else the default kind (full weights)."""
    for wrapped in _model_chain(model):
        for method in _ordered():
            if method.is_model(wrapped):
                return method
        if not isinstance(getattr(wrapped, "module", None), torch.nn.Module):
            break  # only distributed wrappers are looked through: a peft model of a GRUN model is a peft model
    return _default()


def method_for_config(config: Any) -> UnlearningMethod:
    """The method a training config asks for (a `GRUNConfig`, a peft config, ...); None asks for the default."""
    if config is None:
        return _default()
    for method in _ordered():
        if method.is_config(config):
            return method
    accepted = [m.config_class.rpartition(":")[2] for m in _ordered() if m.config_class]
    raise TypeError(
        f"No registered unlearning method trains with a {type(config).__name__}; expected one of {accepted} "
        "(or register a method for it with hf_unlearn.methods.register_method)."
    )


def method_of_folder(folder: str | Path) -> UnlearningMethod:
    """The method of a saved unlearned model: the first kind whose marker file the folder holds."""
    for method in _ordered():
        if method.is_in(folder):
            return method
    markers = [f"{m.marker_file} ({m.noun})" for m in _ordered()]
    raise FileNotFoundError(
        f"{folder} holds no model: expected {', '.join(markers[:-1])} or {markers[-1]}. Save the model first, e.g. "
        "with `trainer.save_model()`."
    )


def method_of_state(state: Mapping[str, Any] | None) -> UnlearningMethod:
    """The method a trainer saved, from its unlearning settings (`unlearning.json`): the first kind that records
    itself there, else the default."""
    state = state or {}
    return next((m for m in _ordered() if m.recorded_in(state)), _default())


def prompt_lengths_from_labels(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The number of prompt tokens of each right-padded row labelled as for training (prompt tokens -100, answer
    tokens their ids): the index of its first answer label. A row without answer labels is all prompt (its attended
    tokens)."""
    is_answer = labels != IGNORE_INDEX
    first_answer = is_answer.float().argmax(dim=1)
    if attention_mask is not None:
        whole = attention_mask.long().sum(dim=1)
    else:
        whole = torch.full_like(first_answer, labels.shape[1])
    return torch.where(is_answer.any(dim=1), first_answer, whole)


def answer_forward_kwargs(
    model: Any, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> dict[str, Any]:
    """The extra forward arguments that a teacher-forced pass of `model` over right-padded `prompt + answer` rows
    (labelled as for training) needs, as the model's method declares them: none for full weights and peft, the last
    prompt token of each row for GRUN. Every forward that scores answers (evaluators, attacks, the G-effect, the
    losses) passes them."""
    # Along the wrappers: a peft adapter (say, a relearning attack's) on a GRUN model passes them on to it.
    for wrapped in _model_chain(model):
        for method in _ordered():
            if method.scoring_inputs is not None and method.is_model(wrapped):
                return method.scoring_kwargs(prompt_lengths_from_labels(labels, attention_mask))
    return {}
