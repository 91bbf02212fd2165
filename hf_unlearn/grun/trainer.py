"""GRUNTrainer: the UnlearningTrainer training only GRUN's gated modules, with the gate's classification loss."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging

from ..config import UnlearningConfig
from ..data import ColumnLayout
from ..losses.base import ForgetLoss, LossContext, RetainLoss
from ..trainer import UnlearningTrainer
from ..unlearning_state import UnlearningState
from .config import GRUNConfig
from .io import load_grun_weights_, save_grun_model
from .model import GRUNModel, _num_layers, get_grun_model

logger = logging.get_logger(__name__)


class GRUNLossContext(LossContext):
    """A [`LossContext`] that reads the gate logits the GRUN model returns. (Its forwards edit the last prompt token
    of each row as every `LossContext` forward of a GRUN model does: the method registry says so.)"""

    def has_outputs(self, split: str) -> bool:
        return split in self._outputs

    def gate_logits(self, split: str) -> torch.Tensor:
        """g(h) of the newest (trained) request at its layers on a split, `[batch, n_layers]`."""
        return self.outputs(split)["gate_logits"][-1]


class _WrappedLoss:
    """Hands what the trainer asks of a loss (what it needs, setup, saved state) to the registered loss it wraps."""

    def _wrap(self, inner: ForgetLoss | RetainLoss) -> None:
        self.inner = inner
        self.needs_ref_model = inner.needs_ref_model
        self.needs_hidden_states = inner.needs_hidden_states
        self.needs_refusals = inner.needs_refusals

    def setup(self, model: torch.nn.Module, seed: int) -> None:
        self.inner.setup(model, seed)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)


class GatedForgetLoss(_WrappedLoss, ForgetLoss):
    """L_forget(GRUN) = lambda_f * L_forget + lambda_g / 2 * BCE(s, 1) on the forget prompts.

    The gate term is half of lambda_g * BCE(s, y) averaged over forget (y = 1) and retain (y = 0) examples; the
    other half is in [`GatedRetainLoss`]. With as many forget as retain rows (the trainer pairs them) the two halves
    add up to the reference's one BCE over both (renjie3/GRUN); each half stays with the forward of its data.
    """

    def __init__(self, inner: ForgetLoss, gate_weight: float, forget_weight: float = 1.0):
        self._wrap(inner)
        self.gate_weight = float(gate_weight)
        self.forget_weight = float(forget_weight)

    def __call__(self, ctx: GRUNLossContext) -> torch.Tensor:
        term = self.forget_weight * self.inner(ctx)
        # IDK's forward runs on the refusal pairs, which share the forget prompts (same last prompt token, same gate).
        split = "idk" if self.needs_refusals and not ctx.has_outputs("forget") else "forget"
        logits = ctx.gate_logits(split).float()
        bce = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        ctx.log_metric("grun/gate_forget", torch.sigmoid(logits).mean())
        ctx.log_metric("grun/bce_forget", bce)
        return term + 0.5 * self.gate_weight * bce


class GatedRetainLoss(_WrappedLoss, RetainLoss):
    """L_retain(GRUN) = lambda_r * L_retain + lambda_g / 2 * BCE(s, 0) on the retain prompts."""

    def __init__(self, inner: RetainLoss, retain_weight: float, gate_weight: float):
        self._wrap(inner)
        self.retain_weight = float(retain_weight)
        self.gate_weight = float(gate_weight)

    def __call__(self, ctx: GRUNLossContext) -> torch.Tensor:
        term = self.inner(ctx)
        logits = ctx.gate_logits("retain").float()
        bce = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        ctx.log_metric("grun/gate_retain", torch.sigmoid(logits).mean())
        ctx.log_metric("grun/bce_retain", bce)
        return self.retain_weight * term + 0.5 * self.gate_weight * bce


def _objective(config: GRUNConfig, num_layers: int) -> dict[str, Any]:
    """The registered losses (and their kwargs) that make up a GRUN request's objective."""
    forget_kwargs = dict(config.forget_loss_kwargs)
    if config.forget_loss != "rmu":
        return {"forget_loss": config.forget_loss, "forget_loss_kwargs": forget_kwargs, "retain_loss": "nll"}
    # Gated RMU: steer the forget hidden states after the edits; retain: match the unedited hidden states there.
    # At an edited layer itself, only the last prompt token changes, so the default is the layer after the last one.
    layers = config.resolved_layers(num_layers)
    forget_kwargs.setdefault("layer", min(max(layers) + 1, num_layers - 1))
    if forget_kwargs["layer"] <= min(layers):
        raise ValueError(
            f"Gated RMU steers the hidden states of decoder layer {forget_kwargs['layer']}, which no GRUN edit "
            f"(layers {layers}) can reach: choose forget_loss_kwargs={{'layer': ...}} after the first edited layer."
        )
    return {
        "forget_loss": "rmu",
        "forget_loss_kwargs": forget_kwargs,
        "retain_loss": "embed_diff",
        "retain_loss_kwargs": {"layer": forget_kwargs["layer"]},
    }


class GRUNTrainer(UnlearningTrainer):
    r"""Trains the newest request of a [`GRUNModel`] (Ren et al. 2025, arXiv 2502.17823): the base model and earlier
    requests stay frozen; only the gated LoReFT modules learn. The objective comes from the model's [`GRUNConfig`]:

        L = lambda_f * L_forget + lambda_r * L_retain + lambda_g * (BCE(s_f, 1) + BCE(s_r, 0)) / 2,

    with s_f, s_r the gates at the edited layers on the last prompt token of the forget and retain examples (one
    gate per layer, each trained), L_forget one of `ga`, `npo`, `idk`, `rmu` and L_retain the retain NLL (RMU:
    `embed_diff`, the distance to the unedited hidden states). NPO's and RMU's reference is the same model with the
    edits switched off ([`GRUNModel.disable_adapter`]): no copy of the model is made.

    Everything else is [`UnlearningTrainer`]'s: `UnlearningConfig` (learning rate, batch size, steps, ...),
    forget/retain pairing, logging (plus `grun/gate_forget`, `grun/gate_retain`, the mean gates), and
    `rectification="gru"`, which works on whatever is trainable, here the gated modules: it projects the gradient
    of the whole L (forget, retain and gate terms) off the retain NLL's (edited model) moving-average gradient.
    `forget_loss`, `retain_loss`, `gamma` and `alpha` of the `UnlearningConfig` are set from the `GRUNConfig`
    (lambda_f, lambda_r and lambda_g enter the loss terms; gamma = alpha = 1). The paper's settings: learning rate
    4e-3, batch size 16.

    `save_model` writes `grun_config.json` and `grun_interventions.safetensors` (see [`save_grun_model`]), the
    tokenizer and `unlearning.json`.
    """

    _tag_names = ["trl", "hf-unlearn", "unlearning", "grun"]
    _name = "GRUN"
    loss_context_class = GRUNLossContext

    def __init__(
        self,
        model: GRUNModel,
        args: UnlearningConfig | None = None,
        forget_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
    ):
        if not isinstance(model, GRUNModel):
            raise TypeError(
                f"GRUNTrainer trains a GRUNModel, got {type(model).__name__}: wrap the model first with "
                "`hf_unlearn.grun.get_grun_model(model, GRUNConfig(layers=[...]))`."
            )
        trainable = [p for p in model.parameters() if p.requires_grad]
        newest = {id(p) for m in model.trainable_modules() for p in m.parameters()}
        if not trainable:
            raise ValueError(
                "The GRUN model has no trainable parameter (a loaded model is frozen): call "
                "`get_grun_model(model, GRUNConfig(...))` to add a request to train, or load with is_trainable=True."
            )
        if any(id(p) not in newest for p in trainable):
            raise ValueError(
                "Only the newest GRUN request may train, but other parameters (of the base model or an earlier "
                "request) have requires_grad=True. GRUN keeps the base model frozen; freeze them first."
            )
        if args is None:
            args = UnlearningConfig(output_dir="grun-unlearned", learning_rate=4e-3)
        elif not isinstance(args, UnlearningConfig):
            raise TypeError(f"`args` must be an UnlearningConfig, got {type(args).__name__}.")
        for name, data in (("forget dataset", forget_dataset), ("retain dataset", retain_dataset)):
            if data is not None and ColumnLayout.of(data, args, name).kind == "text":
                raise ValueError(
                    f"GRUN edits and gates on the last prompt token, but the {name} is raw text: it has no prompts "
                    "(every row would be gated on its first token). Give question/answer, prompt/completion or "
                    "messages rows."
                )
        #: The configuration of the request being trained (its objective, weights and edits).
        self.grun_config: GRUNConfig = model.grun_config
        self._grun_num_layers = _num_layers(model.model)
        super().__init__(
            model=model,
            args=args,
            forget_dataset=forget_dataset,
            retain_dataset=retain_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
        )
        self._check_parallelism_supported()
        if self.accelerator.num_processes > 1 and not self.args.ddp_broadcast_buffers:
            self._broadcast_grun_buffers()

    # ------------------------------------------------------------------ UnlearningTrainer's extension points
    def prepare_args(self, args: UnlearningConfig) -> UnlearningConfig:
        """A copy of `args` whose objective fields are the GRUN request's (so that `unlearning.json` records what
        ran); the caller's config is left as it was."""
        objective = _objective(self.grun_config, self._grun_num_layers)
        overridden = {key: value for key, value in objective.items() if getattr(args, key, None) not in (value, {})}
        if overridden or args.gamma != 1.0 or args.alpha != 1.0:
            logger.info(f"GRUN sets {sorted(overridden)} and gamma = alpha = 1 from its GRUNConfig.")
        args = copy.copy(args)
        args.forget_loss = objective["forget_loss"]
        args.forget_loss_kwargs = objective["forget_loss_kwargs"]
        args.retain_loss = objective["retain_loss"]
        args.retain_loss_kwargs = objective.get("retain_loss_kwargs", {})
        args.gamma, args.alpha = 1.0, 1.0
        # Under DDP, torch 2.11 (not 2.13) bumps the version of every buffer it broadcasts before a forward, and the
        # orthogonal parametrization of GRUN's rotations keeps its base in a buffer that the backward reads: a step
        # with several forwards (forget, retain, NPO's reference) then fails ("modified by an inplace operation").
        # GRUN's buffers never change in training, so they are broadcast once, in `__init__`, instead.
        if args.ddp_broadcast_buffers is None:
            args.ddp_broadcast_buffers = False
        return args

    def build_losses(self, args: UnlearningConfig) -> tuple[ForgetLoss, RetainLoss]:
        """The registered losses of the request, wrapped with their GRUN weights and gate terms."""
        forget, retain = super().build_losses(args)
        config = self.grun_config
        return (
            GatedForgetLoss(forget, config.gate_weight, config.forget_weight),
            GatedRetainLoss(retain, config.retain_weight, config.gate_weight),
        )

    def _check_parallelism_supported(self) -> None:
        # Under FSDP / DeepSpeed the Trainer saves through their state-dict paths, which would skip `_save` and lose
        # the GRUN modules; and sharding a frozen model to train a few thousand parameters buys little.
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError(
                "GRUNTrainer supports one device and multi-process DDP, not FSDP or DeepSpeed: GRUN trains a few "
                "thousand parameters beside a frozen model, so launch with a DDP config (e.g. "
                "examples/accelerate/multi_gpu.yaml), where every GPU holds the frozen model."
            )

    def _broadcast_grun_buffers(self) -> None:
        """Rank 0's GRUN buffers (the rotations' orthogonal bases, which depend on the random initialisation) on
        every rank: what DDP does when it wraps the model, unless it broadcasts no buffers (see `prepare_args`)."""
        model = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            for buffer in model.interventions.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def unlearning_state(self) -> UnlearningState:
        model = self.accelerator.unwrap_model(self.model)
        requests = [request.config.to_dict() for request in model.requests]
        return dataclasses.replace(super().unlearning_state(), method="grun", grun=requests)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        # Checkpoints hold the GRUN modules (written by `_save`), not a transformers state dict.
        self.check_resumed_settings(resume_from_checkpoint)
        load_grun_weights_(self.accelerator.unwrap_model(self.model), resume_from_checkpoint)

    def _save(self, output_dir: str | None = None, state_dict=None):
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        save_grun_model(self.accelerator.unwrap_model(self.model), output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)


def build_grun_trainer(
    model: str | torch.nn.Module, args: UnlearningConfig | None, grun_config: GRUNConfig, **kwargs: Any
) -> GRUNTrainer:
    """The trainer builder of the `grun` method: a [`GRUNTrainer`] of `get_grun_model(model, grun_config)`, the
    new request's modules initialised from the training seed (they are created before the trainer seeds anything,
    so the same seed gives the same run)."""
    if isinstance(model, str):
        from trl.trainer.utils import create_model_from_path

        model = create_model_from_path(model)
    seed = args.seed if args is not None else None
    return GRUNTrainer(get_grun_model(model, grun_config, seed=seed), args, **kwargs)
