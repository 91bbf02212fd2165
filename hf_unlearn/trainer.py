"""UnlearningTrainer: trl's SFTTrainer driven by a forget objective and a retain objective."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging
from trl import SFTTrainer
from trl.trainer.utils import create_model_from_path

from . import constants
from .config import UnlearningConfig
from .data import ColumnLayout, ForgetRetainCollator, PromptEncoder, load_refusal_answers, prepare_dataset
from .exceptions import NonFiniteLossError
from .gru import GradientRectifier, all_reduce_mean_, all_reduce_sum_, stats_to_logs
from .hub.trainer_mixin import HubTrainerMixin
from .io import check_readable_files, read_json_file, write_json_atomic
from .losses import ForgetLoss, LossContext, RetainLoss, get_loss
from .reference import (
    REFERENCE_ADAPTERS_OFF,
    default_reference_mode,
    freeze,
    frozen_copy,
    is_peft_model,
    remove_forward_patch,
)

logger = logging.get_logger(__name__)


UNLEARNING_STATE_FILE = constants.UNLEARNING_STATE_FILE
LOSS_STATE_FILE = constants.LOSS_STATE_FILE
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
    "trainable_parameters",
)


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a tokenizer without a pad token its EOS token as pad token, and say so (as trl does)."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError(
            "The tokenizer has neither a pad token nor an EOS token to pad with. Set one before training, e.g. "
            "`tokenizer.pad_token = tokenizer.unk_token` or `tokenizer.add_special_tokens({'pad_token': '<pad>'})` "
            "(then resize the model's embeddings)."
        )
    tokenizer.pad_token = tokenizer.eos_token
    logger.warning(
        f"The tokenizer has no pad token; using its EOS token {tokenizer.eos_token!r} for padding. Padding is masked "
        "out of the attention and the losses, so this does not change training."
    )


class _CollatorEpochCallback(TrainerCallback):
    """Tells the collator the epoch, so that its retain draws depend only on (seed, rank, epoch, row)."""

    def __init__(self, collator: ForgetRetainCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int((state.epoch or 0.0) + 1e-9)


class UnlearningTrainer(HubTrainerMixin, SFTTrainer):
    """Unlearning on top of trl's [`~trl.SFTTrainer`]: minimise L = gamma * L_forget + alpha * L_retain.

    ```python
    from hf_unlearn import UnlearningConfig, UnlearningTrainer
    args = UnlearningConfig(output_dir="out", forget_loss="npo", forget_loss_kwargs={"beta": 0.1}, retain_loss="nll")
    trainer = UnlearningTrainer(model="meta-llama/Llama-3.2-1B-Instruct", args=args,
                                forget_dataset=forget, retain_dataset=retain)
    trainer.train(); trainer.save_model()
    ```

    Each training example is a forget example paired with a retain example drawn at random (independently on each
    rank, reproducibly from the seed). The losses are looked up in the registry and declare what they need: a
    reference model is built only if one does (for a peft model the same model with adapters off, no copy;
    otherwise a frozen copy; `ref_model` wins), hidden states are returned only if one reads them, refusal answers
    are batched only if one trains on them. `loss/forget` and `loss/retain` are logged with the trainer's logs.

    Losses average over answer tokens as `args.token_average` says (pooled over the batch by default, as HF's
    `outputs.loss` and the reference codes).

    With `rectification="gru"` (see [`UnlearningConfig`]) the gradient of the whole objective is projected off the
    moving average of the retain NLL's gradient before each optimizer step, as tmlr-group/GRU does
    (`hf_unlearn.gru`); its state is saved in checkpoints as `gru_state.safetensors`/`.json`.

    Args:
        model: a model id or path, or a `PreTrainedModel` / `PeftModel`.
        args: an [`UnlearningConfig`].
        forget_dataset: the data to unlearn (question/answer, prompt/completion or `messages` columns).
        retain_dataset: data whose knowledge must stay; may be None only with `retain_loss="none"`.
        processing_class: the tokenizer (loaded from `model` when omitted).
        peft_config: a peft config to train an adapter instead of the full model.
        ref_model: the reference model for losses that need one (default: built as described above).
        callbacks, optimizers, optimizer_cls_and_kwargs: as in `transformers.Trainer`.
    """

    _tag_names = ["trl", "hf-unlearn", "unlearning"]
    _name = "Unlearning"
    #: The [`LossContext`] class built per batch (GRUNTrainer: one whose forwards edit the last prompt token).
    loss_context_class: ClassVar[type[LossContext]] = LossContext

    def __init__(
        self,
        model: str | PreTrainedModel | torch.nn.Module,
        args: UnlearningConfig | None = None,
        forget_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any | None = None,
        ref_model: PreTrainedModel | torch.nn.Module | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
    ):
        args = self.prepare_args(self._check_args(args, model))
        self.forget_loss_fn, self.retain_loss_fn = self.build_losses(args)
        #: GRU's projection direction: the gradient of the retain NLL (the reference's), whatever the retain loss.
        self.gru_direction_loss_fn: RetainLoss | None = self._build_gru_direction(args)
        self._check_objective(args, forget_dataset)
        model, processing_class = self._load_model_and_tokenizer(model, processing_class, args)
        self.encoder = PromptEncoder(processing_class, args.use_chat_template, args.date_string)
        forget_data, retain_data, refusal_ids = self._prepare_data(args, forget_dataset, retain_dataset)
        ref_model = self._choose_reference(model, ref_model, peft_config, args)
        self.unlearning_collator = ForgetRetainCollator(
            pad_token_id=processing_class.pad_token_id,
            retain_dataset=retain_data,
            refusal_answer_ids=refusal_ids,
            seed=args.seed,
            process_index=args.process_index,
            max_length=args.max_length,
            pad_to_multiple_of=args.pad_to_multiple_of,
        )
        callbacks = [*(callbacks or []), _CollatorEpochCallback(self.unlearning_collator)]
        super().__init__(
            model=model,
            args=args,
            data_collator=self.unlearning_collator,
            train_dataset=forget_data,
            processing_class=processing_class,
            peft_config=peft_config,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
        )
        # trl's SFTTrainer gave the model a fused-LM-head forward that closes over the model itself: our losses read
        # plain logits, and a deep copy of a patched model (robustness attacks, a later frozen reference) would run
        # this model's weights.
        remove_forward_patch(self.model)
        self._finish_setup(args, ref_model)

    # ------------------------------------------------------------------ extension points (GRUNTrainer overrides them)
    def prepare_args(self, args: UnlearningConfig) -> UnlearningConfig:
        """The configuration this trainer runs with; a subclass may return a copy with its own objective fields
        (never change the caller's object)."""
        return args

    def build_losses(self, args: UnlearningConfig) -> tuple[ForgetLoss, RetainLoss]:
        """The forget and retain losses, looked up in the registry with their kwargs; a subclass may wrap them."""
        forget = get_loss(args.forget_loss, "forget").from_kwargs(args.forget_loss_kwargs)
        retain = get_loss(args.retain_loss, "retain").from_kwargs(args.retain_loss_kwargs)
        return forget, retain

    def reference_mode(self, model: torch.nn.Module, peft_config: Any | None) -> str:
        """How a loss that reads the model before unlearning gets it, when no `ref_model` is given:
        `REFERENCE_ADAPTERS_OFF` (the same model with its adapters switched off, no copy: peft) or
        `REFERENCE_FROZEN_COPY` (a frozen deep copy)."""
        return default_reference_mode(model, peft_config)

    # ------------------------------------------------------------------ construction steps
    @staticmethod
    def _check_args(args: UnlearningConfig | None, model: Any) -> UnlearningConfig:
        if args is None:
            model_name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            return UnlearningConfig(output_dir=f"{str(model_name).split('/')[-1]}-unlearned")
        if not isinstance(args, UnlearningConfig):
            raise TypeError(f"`args` must be an UnlearningConfig, got {type(args).__name__}.")
        return args

    @property
    def _active_losses(self) -> list[ForgetLoss | RetainLoss]:
        """The losses that run: the retain loss only when it reads retain data."""
        if not self.retain_loss_fn.uses_retain_data:
            return [self.forget_loss_fn]
        return [self.forget_loss_fn, self.retain_loss_fn]

    def _build_gru_direction(self, args: UnlearningConfig) -> RetainLoss | None:
        if args.rectification != "gru":
            return None
        if args.gru_projected == "forget":  # the variant: the configured retain loss's gradient
            return self.retain_loss_fn
        return get_loss("nll", "retain")()

    def _check_objective(self, args: UnlearningConfig, forget_dataset: Dataset | None) -> None:
        """Refuse objectives that cannot work on this data or configuration, with what to do instead."""
        forget_layout = ColumnLayout.of(forget_dataset, args, "forget dataset") if forget_dataset else None
        if forget_layout is not None and forget_layout.kind == "text" and self.forget_loss_fn.needs_refusals:
            raise ValueError(
                f"forget_loss={args.forget_loss!r} answers the forget prompts with refusals, but the forget dataset "
                f"is raw text (a {forget_layout.prompt_key!r} column): it has no prompts. Use a loss without refusals "
                "(e.g. 'ga', 'npo', 'simnpo', 'rmu') or question/answer data."
            )
        legacy_gru = args.rectification == "gru" and args.gru_projected == "forget"
        if legacy_gru and not self.retain_loss_fn.uses_retain_data:
            raise ValueError(
                f"gru_projected='forget' projects the forget gradient against the gradient of the retain loss, but "
                f"retain_loss={args.retain_loss!r} has none. Choose a retain loss that reads retain data (e.g. 'nll' "
                "or 'kl'), or gru_projected='objective' (the projection direction is then the retain NLL)."
            )
        if legacy_gru and args.alpha != 1.0:
            logger.warning(
                f"alpha={args.alpha} does not change the update under gru_projected='forget' (the retain term is "
                "left out of the update); only the logged loss uses it."
            )

    @staticmethod
    def _load_model_and_tokenizer(
        model: str | torch.nn.Module, processing_class: PreTrainedTokenizerBase | None, args: UnlearningConfig
    ) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
        if isinstance(model, str):
            init_kwargs = dict(args.model_init_kwargs or {})
            init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
            model = create_model_from_path(model, **init_kwargs)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise TypeError(f"`processing_class` must be a tokenizer, got {type(processing_class).__name__}.")
        _ensure_pad_token(processing_class)
        model.config.pad_token_id = processing_class.pad_token_id
        return model, processing_class

    def _prepare_data(
        self, args: UnlearningConfig, forget_dataset: Dataset | None, retain_dataset: Dataset | None
    ) -> tuple[Dataset, Dataset | None, list[list[int]] | None]:
        """Tokenize the forget and retain data once (the collator pairs and pads on the fly) and the refusal
        answers when a loss trains on them."""
        prep = {
            "question_key": args.question_key,
            "answer_key": args.answer_key,
            "text_key": args.dataset_text_field,
            "max_length": args.max_length,
            "num_proc": args.dataset_num_proc,
            "invalid_rows": args.invalid_rows,
        }
        forget_data = prepare_dataset(forget_dataset, self.encoder, name="forget dataset", **prep)
        retain_data = None
        if self.retain_loss_fn.uses_retain_data or self.gru_direction_loss_fn is not None:
            if retain_dataset is None and not self.retain_loss_fn.uses_retain_data:
                raise ValueError(
                    "rectification='gru' projects against the gradient of the retain NLL, so it needs retain data "
                    f"even with retain_loss={args.retain_loss!r}: pass retain_dataset=..."
                )
            if retain_dataset is None:
                raise ValueError(
                    f"retain_loss={args.retain_loss!r} trains on retain data, but no retain_dataset was given. "
                    "Pass retain_dataset=..., or set retain_loss='none' to unlearn without a retain term."
                )
            retain_data = prepare_dataset(retain_dataset, self.encoder, name="retain dataset", **prep)
        refusal_ids = None
        if any(loss.needs_refusals for loss in self._active_losses):
            refusal_ids = self.encoder.encode_refusals(load_refusal_answers(args.refusal_answers_file))
        return forget_data, retain_data, refusal_ids

    def _choose_reference(
        self, model: torch.nn.Module, ref_model: torch.nn.Module | None, peft_config: Any, args: UnlearningConfig
    ) -> torch.nn.Module | None:
        """The reference model, only when a loss reads one (`ref_model` wins over `reference_mode`)."""
        self._reference_is_base_model = False
        if not any(loss.needs_ref_model for loss in self._active_losses):
            if ref_model is not None:
                logger.warning("A ref_model was given, but no configured loss uses one; it is ignored.")
            return None
        if ref_model is not None:
            return ref_model
        if self.reference_mode(model, peft_config) == REFERENCE_ADAPTERS_OFF:
            self._reference_is_base_model = True
            return None
        return self._frozen_copy(model, args)

    def _finish_setup(self, args: UnlearningConfig, ref_model: torch.nn.Module | None) -> None:
        """After transformers' Trainer is built: callbacks, trainable parameters, the losses' state, the reference."""
        # Our losses average per example; the Trainer must divide by the accumulation steps itself.
        self.model_accepts_loss_kwargs = False
        for callback in self.callback_handler.callbacks:
            self._bind_callback(callback)
        if args.trainable_parameters is not None:
            self._freeze_all_but(args.trainable_parameters)
        self._output_hidden_states = any(loss.needs_hidden_states for loss in self._active_losses)
        for loss in self._active_losses:
            loss.setup(self.model, args.seed)
        self.ref_model = self._prepare_ref_model(ref_model) if ref_model is not None else None
        self._nonfinite_micro_steps = torch.zeros((), device=args.device)
        self._rectifier: GradientRectifier | None = None
        #: The checkpoint this run resumed from and the settings that changed (see `check_resumed_settings`).
        self._resumed: dict[str, Any] | None = None
        if args.rectification == "gru":
            self._check_gru_supported()

    def _freeze_all_but(self, pattern: str) -> None:
        """Train only the parameters whose names match `pattern` (among those that were trainable)."""
        regex = re.compile(pattern)
        trainable = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        kept = [name for name, _ in trainable if regex.search(name)]
        if not kept:
            examples = ", ".join(name for name, _ in trainable[:6])
            raise ValueError(
                f"trainable_parameters={pattern!r} matches none of the model's trainable parameters (e.g. {examples}"
                f"{', ...' if len(trainable) > 6 else ''}). Fix the regular expression (it is matched with re.search)."
            )
        for name, param in trainable:
            param.requires_grad_(bool(regex.search(name)))
        logger.info(f"trainable_parameters={pattern!r}: training {len(kept)} of {len(trainable)} parameter tensors.")

    def add_callback(self, callback):
        super().add_callback(callback)
        self._bind_callback(self.callback_handler.callbacks[-1])

    def _bind_callback(self, callback: TrainerCallback) -> None:
        # Callbacks that need the trainer itself (its losses and reference model, e.g. GEffectCallback) get it here:
        # transformers hands callbacks only the model, never the trainer.
        if callable(getattr(callback, "bind", None)):
            callback.bind(self)

    # ------------------------------------------------------------------ reference model
    @staticmethod
    def _frozen_copy(model: torch.nn.Module, args: UnlearningConfig) -> torch.nn.Module:
        return frozen_copy(
            model,
            f"The {args.forget_loss!r}/{args.retain_loss!r} losses need a reference model. Pass `ref_model=...`, or "
            "train a peft adapter (`peft_config=...`) so that the reference is the same model with its adapter "
            "switched off.",
        )

    def _prepare_ref_model(self, ref_model: torch.nn.Module) -> torch.nn.Module:
        freeze(ref_model)
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def _reference_forward(self, model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> Any:
        kwargs = {"output_hidden_states": self._output_hidden_states, "use_cache": False}
        if self.ref_model is not None:
            return self.ref_model(**inputs, **kwargs)
        base = self.accelerator.unwrap_model(model)
        was_training = base.training
        base.eval()
        try:
            with base.disable_adapter():
                return base(**inputs, **kwargs)
        finally:
            base.train(was_training)

    def loss_context(self, model: torch.nn.Module, inputs: Mapping[str, Mapping[str, torch.Tensor]]) -> LossContext:
        """The [`LossContext`] of a batch: lazily computed, cached model and reference outputs."""
        needs_ref = self.ref_model is not None or self._reference_is_base_model
        reference = (lambda batch: self._reference_forward(model, batch)) if needs_ref else None
        return self.loss_context_class(
            model,
            inputs,
            reference,
            output_hidden_states=self._output_hidden_states,
            token_average=self.args.token_average,
            reference_module=self.ref_model,
        )

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ctx = self.loss_context(model, inputs)
        forget = self.forget_loss_fn(ctx)
        loss = self.args.gamma * forget
        self._record("loss/forget", forget)
        if self.retain_loss_fn.uses_retain_data:
            retain = self.retain_loss_fn(ctx)
            loss = loss + self.args.alpha * retain
            self._record("loss/retain", retain)
        self._record_context_metrics(ctx)
        return (loss, {}) if return_outputs else loss

    def _record(self, key: str, value: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][key].append(self.accelerator.reduce(value.detach().float(), reduction="mean").item())

    def _record_context_metrics(self, ctx: LossContext) -> None:
        """Log what the losses reported on this batch (`LossContext.log_metric`)."""
        for key, value in ctx.metrics.items():
            self._record(key, value)
        ctx.metrics.clear()

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        # Batches hold one sub-batch per split; count the tokens of each.
        return sum(
            super(UnlearningTrainer, self).floating_point_ops(sub)
            for sub in inputs.values()
            if isinstance(sub, Mapping) and "input_ids" in sub
        )

    # ------------------------------------------------------------------ non-finite guard
    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.args.rectification == "gru":
            with self.maybe_activation_offload_context:
                loss = self._gru_training_step(model, inputs)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._nonfinite_micro_steps += (~torch.isfinite(loss)).float()
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        # All ranks take the same decision (a NaN on one rank reaches all through the gradient all-reduce).
        bad_steps = self.accelerator.reduce(self._nonfinite_micro_steps, reduction="sum").item()
        self._nonfinite_micro_steps.zero_()
        if bad_steps or not math.isfinite(float(norm)):
            what = "loss" if bad_steps else "gradient norm"
            last = self._last_checkpoint()
            raise NonFiniteLossError(
                f"Training stopped before optimizer step {self.state.global_step + 1}: the {what} became non-finite "
                f"(forget loss {self.args.forget_loss!r}, retain loss {self.args.retain_loss!r}). The model was not "
                f"updated with it. Last good checkpoint: {last or 'none saved yet (set save_steps to keep one)'}. "
                "Lower the learning rate or gamma, clip gradients (max_grad_norm), or use a bounded objective such "
                "as 'npo' instead of 'ga'."
            )
        return norm

    def _last_checkpoint(self) -> str | None:
        from transformers.trainer_utils import get_last_checkpoint

        if not os.path.isdir(self.args.output_dir):
            return None
        return get_last_checkpoint(self.args.output_dir)

    # ------------------------------------------------------------------ GRU (gradient rectification)
    def _check_gru_supported(self) -> None:
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        unsupported = None
        if self.is_deepspeed_enabled or kind == DistributedType.DEEPSPEED:
            unsupported = "DeepSpeed (its ZeRO stages keep gradients in their own partitioned buffers)"
        elif (self.is_fsdp_enabled or kind == DistributedType.FSDP) and not self._gru_sharded:
            unsupported = "FSDP1 (set `fsdp_version: 2` in the accelerate config: GRU supports FSDP2)"
        elif kind in (DistributedType.MEGATRON_LM, DistributedType.XLA):
            unsupported = str(kind.value)
        elif self.args.n_gpu > 1:
            unsupported = "torch.nn.DataParallel (several GPUs in one process)"
        elif self.args.parallelism_config is not None or getattr(
            self, "is_distributed_loading_by_transformers", False
        ):
            unsupported = "tensor/context/sequence parallelism or a sharded parallelism_config"
        if unsupported:
            raise ValueError(
                f"rectification='gru' supports single-device training, multi-process DDP (`accelerate launch` or "
                f"`torchrun` with one process per device) and FSDP2, not {unsupported}."
            )

    @property
    def _gru_sharded(self) -> bool:
        """FSDP2: gradients are DTensor shards, averaged by FSDP's reduce-scatter after every backward pass."""
        return bool(self.is_fsdp_enabled and getattr(self.accelerator, "is_fsdp2", False))

    @property
    def _gru_reuses_retain_term(self) -> bool:
        """Whether the objective's retain term IS the direction's retain NLL, so that one backward pass serves both."""
        if self.args.gru_projected == "forget":
            return False
        return type(self.retain_loss_fn) is type(self.gru_direction_loss_fn)

    def _gru_rectifier(self) -> GradientRectifier:
        """The GRU state, built on first use over the trainable parameters (adapter parameters only with peft)."""
        if self._rectifier is None:
            model = self.accelerator.unwrap_model(self.model)
            params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
            distributed = self.accelerator.num_processes > 1 and torch.distributed.is_initialized()
            sharded = distributed and self._gru_sharded
            self._rectifier = GradientRectifier(
                params,
                ema=self.args.gru_ema,
                retain_weight=self.args.gru_retain_weight,
                all_reduce=all_reduce_mean_ if distributed and not sharded else None,
                reduce_sums=all_reduce_sum_ if sharded else None,
                objective_retain_weight=self.args.alpha if self._gru_reuses_retain_term else 0.0,
            )
        return self._rectifier

    def _gru_training_step(self, model, inputs) -> torch.Tensor:
        """One micro-batch of GRU. `param.grad` accumulates the gradient of the objective gamma * L_forget +
        alpha * L_retain, the rectifier's buffer the gradient of the retain NLL (the projection direction); at the
        optimizer step (last micro-batch), the rectification.

        Backward passes: the forget term; then, on the retain forward, the retain term (unless it is the retain NLL,
        whose gradient the rectifier reuses: alpha * g_r is added to the objective) and the retain NLL. With
        `gru_projected="forget"` the retain term stays out of the objective and the direction is the retain loss.

        Under DDP both gradients are averaged over the ranks by the rectifier, so DDP's own synchronisation is
        switched off; under FSDP2 each backward pass reduce-scatters into its own sharded gradient (FSDP2 without
        sync would accumulate both in one unsharded buffer)."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        rectifier = self._gru_rectifier()
        scale = 1.0 / self.current_gradient_accumulation_steps
        separate_retain_term = (
            self.args.gru_projected == "objective"
            and self.retain_loss_fn.uses_retain_data
            and not self._gru_reuses_retain_term
        )
        with contextlib.nullcontext() if self._gru_sharded else self.accelerator.no_sync(model):
            ctx = self.loss_context(model, inputs)
            with self.compute_loss_context_manager():
                forget = self.forget_loss_fn(ctx)
            self.accelerator.backward(self.args.gamma * scale * forget)
            forget = forget.detach()
            self._record_context_metrics(ctx)
            for split in inputs:  # free the forget activations before the retain forward
                ctx.release(split)
            ctx = self.loss_context(model, inputs)
            with self.compute_loss_context_manager():
                direction = self.gru_direction_loss_fn(ctx)
                retain = self.retain_loss_fn(ctx) if separate_retain_term else direction
            if separate_retain_term:  # into the objective; the retain forward serves the direction next
                self.accelerator.backward(self.args.alpha * scale * retain, retain_graph=True)
            with rectifier.retain_gradients():
                self.accelerator.backward(scale * direction)
            retain = retain.detach()
            self._record_context_metrics(ctx)
            del ctx, direction
        self._record("loss/forget", forget)
        loss = self.args.gamma * forget
        if self.retain_loss_fn.uses_retain_data:
            self._record("loss/retain", retain)
            loss = loss + self.args.alpha * retain
        if self.accelerator.sync_gradients:
            logs = stats_to_logs(rectifier.rectify().tolist())
            for key, value in logs.items():
                self._metrics["train"][key].append(value)
        return scale * loss

    def _save_checkpoint(self, model, trial):
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
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
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
        earlier = earlier_run_files(output_dir, constants.RUN_MARKERS)
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
            moved = earlier_run_files(output_dir, constants.RUN_ARTIFACTS)
            aside.mkdir(parents=True, exist_ok=True)
            for path in moved:
                shutil.move(str(path), str(aside / path.name))
            logger.warning(
                f"overwrite_output_dir: moved the earlier run's {len(moved)} files and folders from {output_dir} to "
                f"{aside}, so that none of them labels the new model."
            )
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ resuming
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
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
        path = os.path.join(checkpoint, UNLEARNING_STATE_FILE)
        if not os.path.isfile(path):
            logger.warning(f"{checkpoint} has no {UNLEARNING_STATE_FILE}: its unlearning settings cannot be compared.")
            return
        saved = read_json_file(path, what="the checkpoint's unlearning settings")
        current = self.unlearning_state()
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

    def _load_optimizer_and_scheduler(self, checkpoint):
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
    def unlearning_state(self) -> dict[str, Any]:
        """What was unlearned and how: saved as `unlearning.json` beside the model (read by model cards)."""
        state = {
            "forget_loss": self.args.forget_loss,
            "forget_loss_kwargs": self.args.forget_loss_kwargs,
            "retain_loss": self.args.retain_loss,
            "retain_loss_kwargs": self.args.retain_loss_kwargs,
            "gamma": self.args.gamma,
            "alpha": self.args.alpha,
            "learning_rate": self.args.learning_rate,
            "seed": self.args.seed,
            "peft": is_peft_model(self.accelerator.unwrap_model(self.model)),
            "rectification": self.args.rectification,
            "trainable_parameters": self.args.trainable_parameters,
        }
        state["token_average"] = self.args.token_average
        if self.args.rectification == "gru":
            state.update(
                gru_ema=self.args.gru_ema,
                gru_retain_weight=self.args.gru_retain_weight,
                gru_projected=self.args.gru_projected,
            )
        resumed = getattr(self, "_resumed", None)
        if resumed is not None:
            state["resumed_from"] = os.path.basename(os.path.normpath(resumed["from"]))
            if resumed["changed"]:
                state["changed_on_resume"] = resumed["changed"]
            if "learning_rate" in resumed["changed"]:
                state["learning_rate"] = resumed["learning_rate"]  # what the restored scheduler ran with
        return state

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            write_json_atomic(os.path.join(output_dir, UNLEARNING_STATE_FILE), self.unlearning_state())
            self.save_loss_state(output_dir)


def earlier_run_files(output_dir: Path, patterns: tuple[str, ...]) -> list[Path]:
    """The entries of `output_dir` (not recursive) that match `patterns` (glob), sorted."""
    if not output_dir.is_dir():
        return []
    return sorted({path for pattern in patterns for path in output_dir.glob(pattern)})


def create_trainer(
    model: str | PreTrainedModel | torch.nn.Module,
    args: UnlearningConfig | None = None,
    *,
    grun_config: Any | None = None,
    peft_config: Any | None = None,
    **kwargs: Any,
) -> UnlearningTrainer:
    """The trainer of an unlearning job: an [`UnlearningTrainer`] of `model` (with `peft_config`: of an adapter), or,
    given a `GRUNConfig`, a `GRUNTrainer` of `get_grun_model(model, grun_config, seed=args.seed)` (the model frozen,
    the gated edits trained, initialised from the training seed). `kwargs` go to the trainer (datasets, tokenizer,
    callbacks, ...)."""
    if grun_config is None:
        return UnlearningTrainer(model=model, args=args, peft_config=peft_config, **kwargs)
    if peft_config is not None:
        raise ValueError("GRUN trains gated edits on the frozen model; it cannot be combined with a peft adapter.")
    if isinstance(model, str):
        model = create_model_from_path(model)
    from .grun import GRUNTrainer, get_grun_model

    # GRUN's modules are created before the trainer seeds everything: initialise them from the training seed too.
    seed = args.seed if args is not None else None
    return GRUNTrainer(get_grun_model(model, grun_config, seed=seed), args, **kwargs)
