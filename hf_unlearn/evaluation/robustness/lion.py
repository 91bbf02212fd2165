"""The Lion optimizer (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv 2302.06675).

Deeb and Roger's retraining attack fine-tunes with Lion (aghyad-deeb/unlearning_evaluation `finetune_corpus.py`,
through lucidrains/lion-pytorch), so the attack preset that reproduces it needs the same update. It is small enough
to keep here rather than add a dependency: each step moves every weight by exactly `lr` in the direction of the sign
of an interpolation of the gradient and its moving average.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Lion(torch.optim.Optimizer):
    """Lion: w <- w (1 - lr wd) - lr sign(b1 m + (1 - b1) g), then m <- b2 m + (1 - b2) g (m starts at zero).

    Args:
        params: the parameters (or parameter groups) to optimize.
        lr: the step size (each weight moves by exactly `lr` a step, before weight decay).
        betas: (b1, b2): b1 mixes the gradient into the update's direction, b2 is the moving average's decay
            (lion-pytorch's defaults, (0.9, 0.99)).
        weight_decay: decoupled weight decay, scaled by the learning rate as lion-pytorch does by default.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ):
        if lr <= 0:
            raise ValueError(f"Lion: lr must be > 0, got {lr}.")
        if not all(0.0 <= beta <= 1.0 for beta in betas) or len(betas) != 2:
            raise ValueError(f"Lion: betas must be two numbers in [0, 1], got {betas}.")
        if weight_decay < 0:
            raise ValueError(f"Lion: weight_decay must be >= 0, got {weight_decay}.")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, weight_decay = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param)
                momentum = state["exp_avg"]
                if weight_decay:
                    param.mul_(1.0 - lr * weight_decay)
                direction = (momentum * beta1).add_(grad, alpha=1.0 - beta1).sign_()
                param.add_(direction, alpha=-lr)
                momentum.mul_(beta2).add_(grad, alpha=1.0 - beta2)
        return loss
