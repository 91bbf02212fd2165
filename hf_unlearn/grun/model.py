"""GRUNModel: a frozen causal LM with gated LoReFT edits at the last prompt token, as a pyreft model."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from transformers.utils import ModelOutput, logging

from ..constants import IGNORE_INDEX
from ..methods.registry import prompt_lengths_from_labels
from ..modeling import DECODER_LAYER_LIST_NAMES, named_decoder_layers
from ._compat import import_pyreft
from .config import GRUNConfig
from .intervention import GatedLoreftIntervention

pyreft = import_pyreft()
logger = logging.get_logger(__name__)


@dataclass
class GRUNRequest:
    """One unlearning request: its config, a stable id (so that loading the same saved request twice is detected) and
    its gated modules, one per edited layer (resolved, non-negative layer index -> module)."""

    config: GRUNConfig
    request_id: str
    modules: dict[int, GatedLoreftIntervention]


def _num_layers(model: torch.nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.num_hidden_layers)


def _hidden_size(model: torch.nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


def decoder_layers_path(model: torch.nn.Module) -> str:
    """The attribute path of the model's list of decoder layers (`"model.layers"` for Llama, Qwen, Mistral, ...)."""
    found = named_decoder_layers(model)
    if found is not None:
        return found[0]
    raise ValueError(
        f"Could not find the decoder layers of {type(model).__name__} (a ModuleList of {_num_layers(model)} modules "
        f"named one of {list(DECODER_LAYER_LIST_NAMES)}); GRUN edits the residual stream at their output."
    )


def last_prompt_positions(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the last prompt token of each row: the token before the first answer label (labels != -100).

    A row without answer labels falls back to its last attended token (see [`last_attended_positions`]).
    """
    has_answer = (labels != IGNORE_INDEX).any(dim=1)
    before_answer = (prompt_lengths_from_labels(labels) - 1).clamp(min=0)
    return torch.where(has_answer, before_answer, last_attended_positions(attention_mask, labels.shape))


def last_attended_positions(attention_mask: torch.Tensor | None, shape: Sequence[int]) -> torch.Tensor:
    """Index of the last attended token of each row (left or right padding); the last position without a mask."""
    if attention_mask is None:
        return torch.full((shape[0],), shape[1] - 1, dtype=torch.long)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * (positions + 1)).argmax(dim=1)


@functools.cache
def _output_class_with_gates(output_class: type[ModelOutput]) -> type[ModelOutput]:
    """`output_class` (e.g. `CausalLMOutputWithPast`) with a `gate_logits` field. Adding the key to the base
    model's own output would break whatever rebuilds it from its fields, as DDP does (a pytree round trip)."""
    cls = dataclasses.make_dataclass(
        f"GRUN{output_class.__name__}",
        [("gate_logits", tuple | None, dataclasses.field(default=None))],
        bases=(output_class,),
    )
    cls.__module__ = __name__
    globals()[cls.__name__] = cls  # importable by name, so that outputs can be pickled
    return cls


class GRUNModel(pyreft.ReftModel):
    r"""A frozen causal LM edited by GRUN (Ren et al. 2025, arXiv 2502.17823): a pyreft [`~pyreft.ReftModel`] whose
    interventions are [`GatedLoreftIntervention`]s on the output of some decoder layers, at the last prompt token.

    Unlike pyreft's `forward(base, unit_locations=...)`, it is called like a transformers model, so that the trainer,
    the TOFU evaluator and user code need no pyvene knowledge:

    - `model(input_ids=..., attention_mask=..., labels=None, **kwargs)` returns the base model's output with the
      edit applied at the last prompt token of each row, and `gate_logits` added: one `[batch, n_layers]` tensor
      of g(h) per request (oldest first). The last prompt token is, in order: `intervention_positions` when given,
      the token before the first answer label when `labels` are given, else the last attended token (a prompt-only
      input). Teacher-forced scoring of `prompt + answer` rows must say where each prompt ends: every scoring path
      of hf_unlearn passes `intervention_positions`, as GRUN's entry in `hf_unlearn.methods` declares.
    - `model.generate(input_ids=..., attention_mask=..., **generate_kwargs)` edits the last prompt token during the
      prefill pass only (left- or right-padded batches), and returns the generated ids.
    - `with model.disable_adapter():` runs the base model unedited (NPO's reference; same name as peft's, so the
      trainer treats it as a reference without copying the model).

    Sequential unlearning: every request holds one module per edited layer; at a layer edited by several requests
    all gated edits are computed from the same hidden state, h' = h + sum_i s_i(h) edit_i(h). Only the newest
    request trains (see [`get_grun_model`]).

    pyvene's hooks are registered for each call and removed after it. Unlike pyvene's own `generate`, no other
    forward hook of the model is removed.
    """

    def __init__(self, model: torch.nn.Module, requests: Sequence[GRUNRequest]):
        if not requests:
            raise ValueError("A GRUNModel needs at least one request (a GRUNConfig with its modules).")
        self._grun_build_done = False
        layer_path = decoder_layers_path(model)
        members: dict[int, list[GatedLoreftIntervention]] = {}
        for request in requests:
            for layer, module in request.modules.items():
                members.setdefault(layer, []).append(module)
        representations = []
        for layer in sorted(members):
            *earlier, newest = members[layer]
            for module in members[layer]:
                module.stacked = []
            newest.stacked = list(earlier)
            representations.append(
                {
                    "layer": layer,
                    "component": f"{layer_path}[{layer}].output",
                    "low_rank_dimension": requests[-1].config.rank,
                    "intervention": newest,
                }
            )
        super().__init__(pyreft.ReftConfig(representations=representations), model)
        # pyvene keeps its own config in `self.config`; the trainer and evaluators read the model's config there.
        self.reft_config = self.config
        self.config = model.config
        self.requests = list(requests)
        self.grun_modules = torch.nn.ModuleDict(
            {
                f"request_{index}": torch.nn.ModuleDict({str(layer): m for layer, m in request.modules.items()})
                for index, request in enumerate(self.requests)
            }
        )
        self._layer_keys = {int(self.representations[key].layer): key for key in self.sorted_keys}
        decoder_layers = named_decoder_layers(model)[1]
        self._edited_decoder_layers = {layer: decoder_layers[layer] for layer in sorted(members)}
        self._interventions_enabled = True
        self._grun_build_done = True
        # The parameters must live where the base model lives.
        device = next(model.parameters()).device
        self.grun_modules.to(device)

    # ------------------------------------------------------------------ plain torch / transformers behaviour
    # pyvene's BaseModel overrides these to act on the base model or the interventions only; GRUN needs torch's.
    def train(self, mode: bool = True):
        return torch.nn.Module.train(self, mode)

    def eval(self):
        return torch.nn.Module.train(self, False)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return torch.nn.Module.named_parameters(
            self, prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate
        )

    def zero_grad(self, set_to_none: bool = True):
        return torch.nn.Module.zero_grad(self, set_to_none=set_to_none)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Like peft's PeftModel: what GRUN does not define comes from the base model (generation_config,
            # get_input_embeddings, name_or_path, ...).
            if name in ("model", "_grun_build_done") or not self.__dict__.get("_grun_build_done", False):
                raise
            return getattr(self.model, name)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def get_base_model(self) -> torch.nn.Module:
        return self.model

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs) -> None:
        """Checkpoint the base model's decoder layers (what the Trainer calls for `gradient_checkpointing=True`).

        transformers also makes the embeddings' output require grad, so that adapters inside checkpointed layers
        get gradients. GRUN's edits run in hooks on the layers' outputs, outside the checkpointed forwards, so that
        would only make autograd backpropagate through every frozen layer below the first edit: it is undone here.
        (Before transformers 5.23 the hooks ran inside the checkpoint: see [`_edited_layers_unchecked`].)
        """
        enable = getattr(self.model, "activation_checkpointing_enable", None)
        if enable is None:  # transformers < 5.23 only has the older name
            self.model.gradient_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)
        else:
            enable(activation_checkpointing_kwargs, **kwargs)
        self.model.disable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        """What the Trainer of transformers < 5.23 calls for `gradient_checkpointing=True` (the name that 5.23
        deprecates): [`activation_checkpointing_enable`]."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    @contextlib.contextmanager
    def _edited_layers_unchecked(self) -> Iterator[None]:
        """Within the block, the edited decoder layers whose checkpointing would take GRUN's hooks in run without it.

        Before transformers 5.23, a `GradientCheckpointingLayer` checkpoints its `__call__`, forward hooks included
        (5.23 checkpoints `forward` only, leaving hooks outside). GRUN's edits are pyvene forward hooks that exist
        only while `forward` runs ([`_edits_at`]), so the backward's recompute of such a layer would run without its
        edit: another graph, which torch refuses (CheckpointError: a different number of tensors saved), or, with
        reentrant checkpointing, no gradient for the edit at all. Keeping the hooks alive until the backward is no
        fix: other forwards come in between (the retain batch's, NPO's reference with the edits off), and a
        recompute would record its gate logits again. So the edited layers are not checkpointed: the forward and the
        gradients are exactly the unchecked ones, and the cost is the memory of those few layers' activations (none
        for the lowest one when its input needs no gradient, as after [`activation_checkpointing_enable`]); every
        other layer stays checkpointed. The flags are looked up at each call and restored after the block, which
        also covers checkpointing switched on on the base model directly.
        """
        hooks_inside = [
            (index, layer)
            for index, layer in self._edited_decoder_layers.items()
            if getattr(layer, "gradient_checkpointing", False) is True
            and type(layer).__call__ is not torch.nn.Module.__call__
        ]
        if not hooks_inside:
            yield
            return
        if self.training and torch.is_grad_enabled():
            logger.warning_once(
                f"transformers {transformers.__version__} checkpoints a decoder layer with its forward hooks, where "
                "GRUN's edits run, and the backward's recompute would lack them: the edited layers "
                f"{[index for index, _ in hooks_inside]} run without gradient checkpointing (their activations are "
                "kept; the other layers are checkpointed). transformers >= 5.23 checkpoints them all."
            )
        for _, layer in hooks_inside:
            layer.gradient_checkpointing = False
        try:
            yield
        finally:
            for _, layer in hooks_inside:
                layer.gradient_checkpointing = True

    @property
    def grun_config(self) -> GRUNConfig:
        """The config of the newest request (the one that trains)."""
        return self.requests[-1].config

    def trainable_modules(self) -> list[GatedLoreftIntervention]:
        return list(self.requests[-1].modules.values())

    # ------------------------------------------------------------------ switching edits off
    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model without any GRUN edit inside the block (the reference of NPO and RMU)."""
        previous, self._interventions_enabled = self._interventions_enabled, False
        try:
            yield
        finally:
            self._interventions_enabled = previous

    @contextlib.contextmanager
    def disable_requests(self, indices: Iterable[int]) -> Iterator[None]:
        """Switch off the edits of some requests (their gates are still computed and returned)."""
        modules = [m for i in indices for m in self.requests[i].modules.values()]
        for module in modules:
            module.enabled = False
        try:
            yield
        finally:
            for module in modules:
                module.enabled = True

    # ------------------------------------------------------------------ positions
    def resolve_positions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        intervention_positions: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """The last prompt token of each row (see the class docstring for the order of the rules)."""
        if intervention_positions is not None:
            positions = torch.as_tensor(intervention_positions, dtype=torch.long).reshape(-1)
        elif labels is not None:
            positions = last_prompt_positions(labels, attention_mask)
        else:
            positions = last_attended_positions(attention_mask, input_ids.shape)
        if positions.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Got {positions.shape[0]} intervention positions for a batch of {input_ids.shape[0]} rows; give one "
                "position (the last prompt token) per row."
            )
        if positions.min() < 0 or positions.max() >= input_ids.shape[1]:
            raise ValueError(
                f"Intervention positions must lie in [0, {input_ids.shape[1] - 1}] (the sequence), got {positions}."
            )
        return positions

    # ------------------------------------------------------------------ running with the edits
    @contextlib.contextmanager
    def _edits_at(self, positions: torch.Tensor, generation: bool = False) -> Iterator[None]:
        """Register pyvene's setter hooks that edit `positions` (one per row), and remove them afterwards."""
        per_row = [[int(p)] for p in positions.tolist()]
        unit_locations = {"sources->base": (None, [per_row] * len(self.sorted_keys))}
        self._reset_hook_count()
        self._is_generation = generation
        self._intervene_on_prompt = True if generation else None
        handlers = None
        try:
            handlers = self._wait_for_forward_with_parallel_intervention(
                [None] * len(self._intervention_group), unit_locations, None, None, None
            )
            with self._edited_layers_unchecked():
                yield
        finally:
            if handlers is not None:
                handlers.remove()
            self._is_generation = False
            self._reset_hook_count()
            self._batched_setter_activation_select.clear()

    def _collect_gate_logits(self) -> tuple[torch.Tensor, ...]:
        collected = []
        for index, request in enumerate(self.requests):
            logits = [module.pop_gate_logits() for module in request.modules.values()]
            if any(value is None for value in logits):
                raise RuntimeError(
                    f"GRUN request {index}'s gate did not run during the forward pass; the decoder layer hooks were "
                    "not reached (was the model called with inputs_embeds only, or through another wrapper?)."
                )
            collected.append(torch.cat([value.reshape(value.shape[0], -1) for value in logits], dim=-1))
        return tuple(collected)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        intervention_positions: torch.Tensor | Sequence[int] | None = None,
        **kwargs: Any,
    ):
        """The base model's forward with the GRUN edits at the last prompt token (transformers' arguments); the
        output gains `gate_logits` (one `[batch, n_layers]` tensor per request). `labels` also give the base
        model's loss, as usual."""
        if input_ids is None:
            raise ValueError("GRUNModel needs `input_ids` (to locate the last prompt token of each row).")
        if not self._interventions_enabled:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        positions = self.resolve_positions(input_ids, attention_mask, labels, intervention_positions)
        with self._edits_at(positions):
            outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        gate_logits = self._collect_gate_logits()
        if isinstance(outputs, tuple):
            return (*outputs, gate_logits)
        return _output_class_with_gates(type(outputs))(**outputs, gate_logits=gate_logits)

    def generate(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """`generate` of the base model with the edits applied to the last prompt token in the prefill pass only
        (the paper's inference); left-padded batches are the norm. Returns what the base model's generate does."""
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if input_ids is None:
            raise ValueError("GRUNModel.generate needs `input_ids` (the tokenized prompts).")
        if not self._interventions_enabled:
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        positions = last_attended_positions(attention_mask, input_ids.shape)
        try:
            with self._edits_at(positions, generation=True):
                return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        finally:
            for request in self.requests:
                for module in request.modules.values():
                    module.pop_gate_logits()

    @torch.no_grad()
    def gate_values(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        intervention_positions: torch.Tensor | Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """s(h) = sigmoid(g(h)) of every request at its layers, `[batch, n_layers]` each (oldest request first)."""
        outputs = self(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            intervention_positions=intervention_positions,
            use_cache=False,
        )
        return tuple(torch.sigmoid(logits.float()) for logits in outputs["gate_logits"])


def new_request(model: torch.nn.Module, config: GRUNConfig) -> GRUNRequest:
    """Fresh, trainable gated modules for `config` on `model` (a base model), with a new request id."""
    layers = config.resolved_layers(_num_layers(model))
    hidden_size = _hidden_size(model)
    if config.rank > hidden_size:
        raise ValueError(f"GRUNConfig.rank={config.rank} exceeds the hidden size {hidden_size} of the model.")
    modules = {
        layer: GatedLoreftIntervention(
            embed_dim=hidden_size,
            low_rank_dimension=config.rank,
            gate=config.gate,
            gate_hidden_sizes=config.gate_hidden_sizes,
            dtype=config.dtype,
            dropout=config.dropout,
            act_fn=config.act_fn,
        )
        for layer in layers
    }
    return GRUNRequest(config=config, request_id=uuid.uuid4().hex, modules=modules)


def get_grun_model(model: torch.nn.Module, grun_config: GRUNConfig, seed: int | None = None) -> GRUNModel:
    """Attach trainable GRUN modules to a model: the entry point of GRUN training.

    ```python
    from hf_unlearn.grun import GRUNConfig, GRUNTrainer, get_grun_model
    grun_model = get_grun_model(model, GRUNConfig(layers=[20, 25, 31], forget_loss="npo"))
    GRUNTrainer(grun_model, args, forget_dataset=forget, retain_dataset=retain, processing_class=tok).train()
    ```

    Args:
        model: a transformers causal LM (frozen here: all its parameters get `requires_grad=False`), or a
            [`GRUNModel`] from an earlier request (sequential unlearning): its modules are kept, frozen, and the new
            request's modules are stacked on top of them.
        grun_config: the new request's [`GRUNConfig`].
        seed: initialise the new modules from this seed, leaving the global random state as it was, so that a run
            is reproduced by its seed (`create_trainer` passes the training seed). None draws from the global
            random state, as peft's `get_peft_model` does.

    Returns:
        A [`GRUNModel`] (a pyreft `ReftModel`) whose only trainable parameters are the new request's gated modules,
        created in `grun_config.dtype` on the model's device.
    """
    if not isinstance(grun_config, GRUNConfig):
        raise TypeError(f"grun_config must be a GRUNConfig, got {type(grun_config).__name__}.")
    earlier: list[GRUNRequest] = []
    if isinstance(model, GRUNModel):
        earlier = list(model.requests)
        model = model.model
    for request in earlier:
        for module in request.modules.values():
            module.requires_grad_(False)
    if seed is None:
        request = new_request(model, grun_config)
    else:
        with torch.random.fork_rng(devices=[]):  # the modules are created on the CPU, then moved
            torch.manual_seed(seed)
            request = new_request(model, grun_config)
    for param in model.parameters():
        param.requires_grad_(False)
    grun_model = GRUNModel(model, [*earlier, request])
    for module in request.modules.values():
        module.requires_grad_(True)
        # pyvene registers `embed_dim` as a (float) buffer, not a parameter: nothing else to unfreeze.
    return grun_model
