"""The non-finite loss guard of `UnlearningTrainer`: a NaN or infinite loss or gradient norm stops training with a
[`NonFiniteLossError`] before the optimizer step that would apply it, naming the last good checkpoint."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..exceptions import NonFiniteLossError

__all__ = ["NonFiniteGuardMixin"]


class NonFiniteGuardMixin:
    """Counts the non-finite micro-batch losses of an accumulation window (`training_step`, which also dispatches to
    GRU's and smoothing's steps) and checks them with the gradient norm before the optimizer step
    (`_get_grad_norm`, which transformers calls between the backward passes and the step). The host creates
    `_nonfinite_micro_steps` (a zero tensor on the training device) in its setup."""

    _nonfinite_micro_steps: torch.Tensor

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        # GRU and smoothing replace the Trainer's step (a backward pass per term, see `GRUStepMixin` and
        # `SmoothingMixin`; GRU's step smooths the forget term itself); both losses are counted.
        if self.args.rectification == "gru":
            with self.maybe_activation_offload_context:
                loss = self._gru_training_step(model, inputs)
            self._smoothing_end_micro_step()
        elif self.args.smoothing is not None:
            with self.maybe_activation_offload_context:
                loss = self._smoothing_training_step(model, inputs)
            self._smoothing_end_micro_step()
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._nonfinite_micro_steps += (~torch.isfinite(loss)).float()
        return loss

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
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
        """The newest `checkpoint-N` of the output folder, named in the error as the run's last good state."""
        from transformers.trainer_utils import get_last_checkpoint

        if not os.path.isdir(self.args.output_dir):
            return None
        return get_last_checkpoint(self.args.output_dir)
