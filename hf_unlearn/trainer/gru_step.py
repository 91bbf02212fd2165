"""GRU's training step: a mixin of `UnlearningTrainer` that rectifies the objective's gradient before each optimizer
step (`rectification="gru"`). The rectifier's math (moving average, projection, reductions) is `hf_unlearn.gru`'s;
this module only drives it from the trainer: which gradients go where, on which backward pass, under DDP or FSDP2.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..config import UnlearningConfig
from ..gru import GradientRectifier, all_reduce_mean_, all_reduce_sum_, stats_to_logs
from ..losses import RetainLoss, get_loss
from .parallelism import unsupported_parallelism

__all__ = ["GRUStepMixin"]


class GRUStepMixin:
    """GRU's part of [`UnlearningTrainer`]: the projection direction, the checks of the parallelism, the rectifier
    and the training step. The host trainer provides the losses (`forget_loss_fn`, `retain_loss_fn`,
    `gru_direction_loss_fn`), `loss_context`, `_record` / `_record_context_metrics` and transformers' Trainer;
    it sets `_rectifier` to None in its setup (built here on first use)."""

    _rectifier: GradientRectifier | None

    def _build_gru_direction(self, args: UnlearningConfig) -> RetainLoss | None:
        """The loss whose gradient GRU projects against: the retain NLL whatever the retain loss (the reference's), or
        with `gru_projected="forget"` the retain loss itself; None without GRU."""
        if args.rectification != "gru":
            return None
        if args.gru_projected == "forget":  # the variant: the configured retain loss's gradient
            return self.retain_loss_fn
        return get_loss("nll", "retain")()

    def _check_gru_supported(self) -> None:
        """Refuse the parallelisms whose gradients GRU cannot read or average (it needs each rank's full gradient,
        or FSDP2's DTensor shards)."""
        from accelerate.utils import DistributedType

        unsupported = unsupported_parallelism(
            self, deepspeed="its ZeRO stages keep gradients in their own partitioned buffers", fsdp=None
        )
        fsdp = self.is_fsdp_enabled or self.accelerator.distributed_type == DistributedType.FSDP
        if unsupported is None and fsdp and not self._gru_sharded:
            unsupported = "FSDP1 (set `fsdp_version: 2` in the accelerate config: GRU supports FSDP2)"
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

    def _gru_training_step(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """One micro-batch of GRU. `param.grad` accumulates the gradient of the objective gamma * L_forget +
        alpha * L_retain, the rectifier's buffer the gradient of the retain NLL (the projection direction); at the
        optimizer step (last micro-batch), the rectification.

        Backward passes: the forget term (with `smoothing`, its smoothed gradient: SAM's at theta + eps, RS's mean
        over noise draws, the weights back at theta after it); then, on the retain forward, the retain term (unless
        it is the retain NLL, whose gradient the rectifier reuses: alpha * g_r is added to the objective) and the
        retain NLL. With `gru_projected="forget"` the retain term stays out of the objective and the direction is
        the retain loss.

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
            # the forget term, smoothed (SAM, RS) when `smoothing` is set: its gradient enters the objective's,
            # which is what GRU projects (`SmoothingMixin._forget_backward`; its activations are freed)
            forget = self._forget_backward(model, inputs, self.args.gamma * scale)
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
