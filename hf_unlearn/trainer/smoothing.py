"""Smoothness-enhanced unlearning (Fan et al., "Towards LLM Unlearning Resilient to Relearning Attacks: A
Sharpness-Aware Minimization Perspective and Beyond", ICML 2025, arXiv 2502.05374): the forget term's gradient is
taken where the forget loss is worst in a small neighbourhood of the weights (SAM) or averaged over random weight
noise (randomized smoothing, RS), so that the unlearned model sits in a flat region of the forget loss, which a few
relearning steps do not climb out of.

As the reference code does it (OPTML-Group/Unlearn-Smooth, `WMDP/src/unlearn/base.py`), once per micro-batch:

- SAM (`SAMTrainer`): g = the gradient of the forget loss at theta; eps = rho * g / ||g||_2, the norm over all
  trainable parameters (`after_forget_step`); the forget loss's gradient is taken again at theta + eps
  (`forget_step_perturbed`) and only that one enters the update; the weights go back to theta; the retain loss's
  gradient is taken at theta (`retain_step`); the update is g_f(theta + eps) + gamma * g_r(theta)
  (`combine_and_update`; its gamma is hf_unlearn's alpha).
- RS (`RSTrainer.forget_step_randomized`): the forget gradient is the mean over 3 draws of weight noise
  N(0, rho^2) (`randn_like(p) * sam_rho` for every trainable parameter), each added, differentiated and removed;
  the retain gradient at theta.

Where hf_unlearn differs, on purpose:

- The weights are restored from a copy (the reference subtracts eps again, which is exact only up to rounding).
- A zero forget gradient gives eps = 0 (the reference divides by zero).
- Gradient accumulation: each micro-batch is perturbed along its own forget gradient (the reference's training
  step is per micro-batch too), and the micro-batches' gradients add up as usual (the reference overwrites
  `param.grad` at every micro-batch, so it only works without accumulation).
- DDP: the forget gradient that makes eps is averaged over the ranks first, so every replica is perturbed by the same
  eps (the reference's DDP backward all-reduces it as well); RS draws the same noise on every rank, from (seed,
  optimizer step, micro-batch), so a resumed run draws what an uninterrupted one would.
- RS steps the optimizer once (the reference's `combine_and_update` steps it itself, then the Trainer steps again on
  zero gradients).

The forget term is whatever the forget loss computes (any registered loss, GRUN's gated loss included); the reference
model's outputs (NPO's, RMU's) do not depend on the trained weights and are computed once per micro-batch. With
`rectification="gru"` the smoothed forget gradient enters the objective's gradient, which GRU then projects against the
retain NLL's moving-average gradient at theta (see `GRUStepMixin`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..gru import all_reduce_mean_
from ..losses import LossContext
from .parallelism import unsupported_parallelism

__all__ = ["SmoothingMixin", "noise_seed", "sam_perturbation_"]

_SEED_MODULUS = 2**63 - 1


def noise_seed(seed: int, step: int, micro_step: int) -> int:
    """The seed of randomized smoothing's noise for micro-batch `micro_step` (0-based, within the accumulation
    window) of optimizer step `step` (the number of steps done before it): the same on every rank."""
    return ((int(seed) * 1_000_003 + int(step)) * 1_009 + int(micro_step)) % _SEED_MODULUS


@torch.no_grad()
def sam_perturbation_(grads: list[torch.Tensor | None], rho: float) -> torch.Tensor:
    """Turn `grads` (the forget loss's gradient g, one tensor per parameter, None for none) in place into
    eps = rho * g / ||g||_2, the norm over all of them (per-tensor norms in float32, float64 for float64 gradients,
    then the norm of those, as the reference's `torch.stack(norms).norm(2)`). A zero gradient gives eps = 0. Returns
    ||g|| (on the device; no CPU synchronisation)."""
    present = [g for g in grads if g is not None]
    if not present:
        return torch.zeros(())
    device = present[0].device
    dtype = torch.float64 if all(g.dtype == torch.float64 for g in present) else torch.float32
    norms = [torch.linalg.vector_norm(g, dtype=dtype).to(device) for g in present]
    norm = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.where(norm > 0, rho / norm.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(norm))
    for g in present:
        g.mul_(coef.to(device=g.device, dtype=g.dtype))
    return norm


def _share_reference(source: LossContext, target: LossContext) -> None:
    """Hand `source`'s reference outputs to `target`: the reference model does not depend on the trained weights, so
    the perturbed forwards need not run it again."""
    target._ref_outputs.update(source._ref_outputs)
    target._last_layer.update({key: value for key, value in source._last_layer.items() if key[1]})


class SmoothingMixin:
    """The smoothing part of [`UnlearningTrainer`] (`smoothing="sam"` / `"rs"`): the forget term's backward pass
    (`_forget_backward`, also used by GRU's step) and the training step without GRU. The host trainer provides the
    losses, `loss_context`, `_record` / `_record_context_metrics` and transformers' Trainer."""

    _smoothing_param_list: list[torch.nn.Parameter] | None = None
    _smoothing_micro_step: int = 0

    # ------------------------------------------------------------------ checks
    def _check_smoothing_supported(self) -> None:
        """Smoothing perturbs each rank's full copy of the trainable weights: one device or multi-process DDP."""
        unsupported = unsupported_parallelism(
            self,
            deepspeed="its ZeRO stages partition the weights and gradients",
            fsdp="the weights are sharded",
            check_optimizer=True,
        )
        if unsupported:
            raise ValueError(
                f"smoothing={self.args.smoothing!r} supports single-device training and multi-process DDP "
                f"(`accelerate launch` or `torchrun` with one process per device), not {unsupported}."
            )

    # ------------------------------------------------------------------ helpers
    def _smoothing_params(self) -> list[torch.nn.Parameter]:
        """The trainable parameters (the adapter's with peft), the space of the perturbation."""
        if self._smoothing_param_list is None:
            model = self.accelerator.unwrap_model(self.model)
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"smoothing={self.args.smoothing!r} found no trainable parameter.")
            self._smoothing_param_list = params
        return self._smoothing_param_list

    @property
    def _smoothing_distributed(self) -> bool:
        return self.accelerator.num_processes > 1 and torch.distributed.is_initialized()

    def _forget_loss_at(self, model: torch.nn.Module, inputs: dict[str, Any], reference: LossContext | None):
        """A fresh context (no cached outputs: the weights may have changed) and the forget loss on it."""
        ctx = self.loss_context(model, inputs)
        if reference is not None:
            _share_reference(reference, ctx)
        with self.compute_loss_context_manager():
            loss = self.forget_loss_fn(ctx)
        return ctx, loss

    @staticmethod
    def _release(ctx: LossContext, inputs: dict[str, Any]) -> None:
        for split in inputs:  # free the forget activations before the next forward
            ctx.release(split)

    # ------------------------------------------------------------------ the forget term
    def _forget_backward(self, model: torch.nn.Module, inputs: dict[str, Any], weight: float) -> torch.Tensor:
        """Backpropagate `weight` times the forget term into `param.grad` (which holds the micro-batches before this
        one), smoothed as `args.smoothing` says; returns the forget loss (detached) whose gradient was used: at
        theta + eps for SAM, the mean over the noise draws for RS. The weights are theta again on return."""
        smoothing = self.args.smoothing
        if smoothing == "sam":
            return self._sam_forget_backward(model, inputs, weight)
        if smoothing == "rs":
            return self._rs_forget_backward(model, inputs, weight)
        ctx, forget = self._forget_loss_at(model, inputs, None)
        self.accelerator.backward(weight * forget)
        self._record_context_metrics(ctx)
        self._release(ctx, inputs)
        return forget.detach()

    def _sam_forget_backward(self, model: torch.nn.Module, inputs: dict[str, Any], weight: float) -> torch.Tensor:
        params = self._smoothing_params()
        rho = float(self.args.smoothing_kwargs["rho"])
        # 1. g = grad L_forget(theta), apart from the gradients accumulated so far
        held = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            first, at_theta = self._forget_loss_at(model, inputs, None)
            self.accelerator.backward(at_theta)
            grads = [p.grad for p in params]
        finally:
            for p, grad in zip(params, held):
                p.grad = grad
        at_theta = at_theta.detach()
        first.metrics.clear()  # the losses' own statistics are logged from the pass whose gradient is used
        first._outputs.clear()
        if self._smoothing_distributed:  # every rank perturbs by the eps of the global forget gradient
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
            all_reduce_mean_(grads)
        # 2. eps = rho * g / ||g||, theta <- theta + eps (a copy of theta restores it exactly)
        grad_norm = sam_perturbation_(grads, rho)
        with torch.no_grad():
            saved = [p.detach().clone() if g is not None else None for p, g in zip(params, grads)]
            for p, eps in zip(params, grads):
                if eps is not None:
                    p.add_(eps.to(p.dtype))
        del grads
        # 3. the forget term's gradient at theta + eps, into the accumulated gradients; 4. theta again
        try:
            ctx, perturbed = self._forget_loss_at(model, inputs, first)
            self.accelerator.backward(weight * perturbed)
        finally:
            with torch.no_grad():
                for p, copy in zip(params, saved):
                    if copy is not None:
                        p.copy_(copy)
        self._record_context_metrics(ctx)
        self._release(ctx, inputs)
        self._release(first, inputs)
        self._record("smoothing/forget_loss_unperturbed", at_theta)
        self._record("smoothing/forget_grad_norm", grad_norm.to(at_theta.device))
        return perturbed.detach()

    def _noise_generators(self, params: list[torch.nn.Parameter]) -> dict[torch.device, torch.Generator]:
        seed = noise_seed(self.args.seed, self.state.global_step, self._smoothing_micro_step)
        generators = {}
        for p in params:
            if p.device not in generators:
                generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        return generators

    def _rs_forget_backward(self, model: torch.nn.Module, inputs: dict[str, Any], weight: float) -> torch.Tensor:
        params = self._smoothing_params()
        sigma = float(self.args.smoothing_kwargs["sigma"])
        samples = int(self.args.smoothing_kwargs["num_samples"])
        generators = self._noise_generators(params)
        with torch.no_grad():
            saved = [p.detach().clone() for p in params]
        total, first = None, None
        for sample in range(samples):
            # the reference's order: per draw, one N(0, 1) tensor per parameter in order, times sigma, added
            try:
                with torch.no_grad():
                    for p in params:
                        noise = torch.randn(p.shape, generator=generators[p.device], device=p.device, dtype=p.dtype)
                        p.add_(noise * sigma)
                ctx, loss = self._forget_loss_at(model, inputs, first)
                self.accelerator.backward(weight / samples * loss)
            finally:
                with torch.no_grad():
                    for p, copy in zip(params, saved):
                        p.copy_(copy)
            total = loss.detach() if total is None else total + loss.detach()
            if sample == samples - 1:
                self._record_context_metrics(ctx)
                self._release(ctx, inputs)
            else:
                ctx.metrics.clear()
                ctx._outputs.clear()
                if first is None:
                    first = ctx
        if first is not None:
            self._release(first, inputs)
        return total / samples

    # ------------------------------------------------------------------ the training step without GRU
    def _smoothing_training_step(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """One micro-batch: the smoothed forget term (`_forget_backward`), then the retain term at theta. Under DDP
        the gradients accumulate locally and are averaged over the ranks at the optimizer step (DDP's own
        synchronisation would average the perturbation's gradient into them)."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        scale = 1.0 / self.current_gradient_accumulation_steps
        with self.accelerator.no_sync(model) if self._smoothing_distributed else contextlib.nullcontext():
            forget = self._forget_backward(model, inputs, self.args.gamma * scale)
            retain = None
            if self.retain_loss_fn.uses_retain_data:
                ctx = self.loss_context(model, inputs)
                with self.compute_loss_context_manager():
                    retain = self.retain_loss_fn(ctx)
                self.accelerator.backward(self.args.alpha * scale * retain)
                retain = retain.detach()
                self._record_context_metrics(ctx)
                del ctx
        if self._smoothing_distributed and self.accelerator.sync_gradients:
            params = self._smoothing_params()
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            all_reduce_mean_([p.grad for p in params])
        self._record("loss/forget", forget)
        loss = self.args.gamma * forget
        if retain is not None:
            self._record("loss/retain", retain)
            loss = loss + self.args.alpha * retain
        return scale * loss

    def _smoothing_end_micro_step(self) -> None:
        """Count the micro-batches of the accumulation window (RS's noise seed); called after each one, with or
        without GRU."""
        self._smoothing_micro_step = 0 if self.accelerator.sync_gradients else self._smoothing_micro_step + 1
