"""The Deeb and Roger retraining attack's optimizer and schedule against their reference definitions.

- Lion: an independent NumPy computation of lucidrains/lion-pytorch `lion_pytorch/lion_pytorch.py` `update_fn`
  (the optimizer aghyad-deeb/unlearning_evaluation `finetune_corpus.py` trains with): p <- p (1 - lr wd);
  p <- p - lr sign(b1 m + (1 - b1) g); m <- b2 m + (1 - b2) g.
- The schedule: `finetune_corpus.py` sets lr * max(0, min(1, step / warmup_steps)) with step = 1, 2, ... before each
  optimizer step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation.robustness import relearning as relearning_module
from hf_unlearn.evaluation.robustness.lion import Lion


def _reference_lion(params, grads, lr, wd, beta1, beta2):
    """lion-pytorch's update_fn over several steps, in float64 NumPy."""
    params = [p.astype(np.float64).copy() for p in params]
    moments = [np.zeros_like(p) for p in params]
    for step_grads in grads:
        for p, g, m in zip(params, step_grads, moments):
            p *= 1.0 - lr * wd
            p -= lr * np.sign(beta1 * m + (1.0 - beta1) * g)
            m *= beta2
            m += (1.0 - beta2) * g
    return params


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_equals_lion_pytorchs_update(weight_decay):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)]
    initial = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(5)]
    params = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for p in initial]
    optimizer = Lion(params, lr=0.01, betas=(0.9, 0.99), weight_decay=weight_decay)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    expected = _reference_lion(initial, grads, 0.01, weight_decay, 0.9, 0.99)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-5, atol=0)
    # every weight moved by exactly lr a step without weight decay: the sign update
    if weight_decay == 0.0:
        moved = np.abs(params[0].detach().numpy() - initial[0])
        assert np.all(moved <= 5 * 0.01 + 1e-12)


def test_lion_refuses_bad_settings():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr must be > 0"):
        Lion(p, lr=0.0)
    with pytest.raises(ValueError, match="betas must be two numbers"):
        Lion(p, betas=(0.9, 1.5))


def test_the_attack_uses_finetune_corpus_warmup_and_lion(target_model, tokenizer, tofu, monkeypatch):
    """The learning rates the attack's steps take, recorded at each optimizer step."""
    seen, optimizers = [], []
    real_lion_step = Lion.step

    def recording_step(self, closure=None):
        seen.append(self.param_groups[0]["lr"])
        optimizers.append(type(self).__name__)
        return real_lion_step(self, closure)

    monkeypatch.setattr(Lion, "step", recording_step)
    forget = tofu["forget01"].select(range(4))
    result = relearning_module.relearning_attack(
        target_model,
        tokenizer,
        forget,
        forget,
        steps=5,
        batch_size=2,
        learning_rate=2.4e-5,
        warmup_steps=3,
        scheduler="constant_after_linear_warmup",
        optimizer="lion",
    )
    # lr * min(1, k / 3) for k = 1..5: the first step already moves, and the warmup is not cut to the run
    assert seen == pytest.approx([2.4e-5 * min(1, k / 3) for k in range(1, 6)], rel=1e-12)
    assert set(optimizers) == {"Lion"} and result.settings["optimizer"] == "lion"
    with pytest.raises(ValueError, match="Unknown optimizer 'sgd'"):
        relearning_module.relearning_attack(target_model, tokenizer, forget, forget, optimizer="sgd")
