"""UnlearningTrainer: trl's SFTTrainer driven by a forget objective and a retain objective.

This module is the trainer's core: its construction (arguments, losses, model and tokenizer, data, reference model,
collator), the loss of a batch (`loss_context`, `compute_loss`) and the logging of its metrics. GRU's training step,
the non-finite guard, the run's state on disk and the Hub methods are mixins of their own modules in this package.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging
from trl import SFTTrainer
from trl.trainer.utils import create_model_from_path

from ..config import UnlearningConfig
from ..data import (
    ColumnLayout,
    ForgetRetainCollator,
    PromptEncoder,
    data_source,
    load_refusal_answers,
    prepare_dataset,
)
from ..gru import GradientRectifier
from ..losses import ForgetLoss, LossContext, RetainLoss, get_loss
from ..reference import (
    REFERENCE_ADAPTERS_OFF,
    default_reference_mode,
    freeze,
    frozen_copy,
    remove_forward_patch,
)
from .gru_step import GRUStepMixin
from .hub import HubTrainerMixin
from .nonfinite import NonFiniteGuardMixin
from .run_state import RunStateMixin
from .smoothing import SmoothingMixin
from .training_log import TrainingLogCallback

__all__ = ["UnlearningTrainer"]

logger = logging.get_logger(__name__)


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


# The mixins come before trl's trainer: their overrides of transformers' Trainer methods (training_step,
# _get_grad_norm, _save_checkpoint, train, save_model, the Hub methods) call it through super().
class UnlearningTrainer(HubTrainerMixin, RunStateMixin, NonFiniteGuardMixin, GRUStepMixin, SmoothingMixin, SFTTrainer):
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

    With `smoothing="sam"` or `"rs"` the forget term's gradient is taken at the worst weights of a rho-ball (SAM) or
    averaged over random weight noise (RS), as OPTML-Group/Unlearn-Smooth does, against relearning
    (`hf_unlearn.trainer.smoothing`); with GRU as well, GRU projects the smoothed objective's gradient.

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
        #: Where the rows came from, for `unlearning.json` and the model card (described before tokenizing).
        self.data_sources = {
            split: data_source(data).to_dict()
            for split, data in (("forget", forget_dataset), ("retain", retain_dataset))
            if data is not None
        }
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
        callbacks = [*(callbacks or []), _CollatorEpochCallback(self.unlearning_collator), TrainingLogCallback()]
        if args.stop_at_targets:
            callbacks.append(self._stop_at_targets_callback(args))
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
        if args.smoothing is not None:
            self._check_smoothing_supported()

    @staticmethod
    def _stop_at_targets_callback(args: UnlearningConfig) -> TrainerCallback:
        """`stop_at_targets`: the callback that evaluates the targets, saves where each is met and stops."""
        from ..evaluation.callback import StopAtTargetCallback
        from ..evaluation.targets import benchmark_of

        evaluator_kwargs = dict(args.target_eval_kwargs or {})
        if benchmark_of(args.stop_at_targets) == "muse":  # target_eval_kwargs are the MUSE evaluator's
            return StopAtTargetCallback(
                args.stop_at_targets, every_n_steps=args.target_eval_steps, muse_kwargs=evaluator_kwargs
            )
        retain_logs = evaluator_kwargs.pop("retain_logs", None)
        evaluator_kwargs.setdefault("date_string", args.date_string)
        if args.use_chat_template is not None:
            evaluator_kwargs.setdefault("use_chat_template", args.use_chat_template)
        return StopAtTargetCallback(
            args.stop_at_targets,
            every_n_steps=args.target_eval_steps,
            evaluator_kwargs=evaluator_kwargs,
            retain_logs=retain_logs,
        )

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
