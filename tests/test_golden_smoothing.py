"""Golden tests of smoothness-enhanced unlearning: the parameters after 3 SGD steps of the trainer with
`smoothing="sam"` / `"rs"` equal an independent re-implementation of the reference's training step
(OPTML-Group/Unlearn-Smooth, `WMDP/src/unlearn/base.py`):

- `SAMTrainer.training_step`: `forget_step` backpropagates the forget loss at theta; `after_forget_step` makes
  eps = g * (sam_rho / ||g||), ||g|| the 2-norm of the stacked per-tensor 2-norms of the trainable parameters'
  gradients; `pre_forget_step_perturbed` adds eps to the weights, `forget_step_perturbed` keeps the forget gradient
  there, `after_forget_step_perturbed` subtracts eps again; `retain_step` takes the retain gradient at theta and
  `combine_and_update` sets the gradient to forget + gamma * retain (its gamma is hf_unlearn's alpha).
- `RSTrainer.forget_step_randomized`: 3 times, `randn_like(p) * sam_rho` is added to every trainable parameter (in
  order), the forget loss backpropagated and the noise subtracted; the forget gradient is the mean of the three.

The forget losses are `GA_FT_SAM`'s (-outputs.loss) and NPO. The reference's NPO (`NPO_FT_SAM`, `NPO_FT_RS`) applies
log-sigmoid to the difference of the pooled batch losses `outputs.loss`; hf_unlearn's `npo` is open-unlearning's, on
per-sequence NLL sums, so both sides here use that one (`test_golden_losses.reference_npo`) and the test is of the
smoothing step around it. The batches are the ones the trainer drew; RS's noise is drawn, as the reference draws it,
from the global generator seeded with `hf_unlearn.trainer.smoothing.noise_seed(seed, step, micro-batch)`, the seed of
the trainer's own generator (the noise is an input of the step, like the batches). The reference sums the draws'
gradients and divides the sum; here each draw's loss is divided (as the trainer, which accumulates into the
micro-batches' gradients, does): the same in exact arithmetic, but the tiny Llama's RMSNorm computes in float32 even
in a float64 model, so the order of the division by 3 would show at 1e-8 of the update.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_trainer
from test_golden_losses import hf_loss, reference_npo

from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama
from hf_unlearn.trainer.smoothing import noise_seed

LR = 0.1
STEPS = 3
BATCH = 3
RHO = 0.5
SEED = 0


def forget_ga(model, ref, batch):
    """Unlearn-Smooth `GA_FT_SAM._compute_forget_loss`: -outputs.loss on the forget batch."""
    return -hf_loss(model, batch["forget"])


def forget_npo(model, ref, batch):
    """NPO on sequence sums (beta 0.1), see the module docstring."""
    return reference_npo(model, ref, batch, beta=0.1)


def retain_nll(model, batch):
    """Unlearn-Smooth `_compute_retain_loss`: outputs.loss on the retain batch."""
    return hf_loss(model, batch["retain"])


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]


def reference_sam_forget_grad(model, ref, batch, params, forget, rho):
    """`forget_step`, `after_forget_step`, `pre_forget_step_perturbed`, `forget_step_perturbed`,
    `after_forget_step_perturbed`: the forget gradient at theta + eps; the weights are theta - eps + eps after."""
    g = _grads(forget(model, ref, batch), params)
    grad_norm = torch.stack([x.norm(2) for x in g]).norm(2)
    eps = [x * (rho / grad_norm) for x in g]
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.data.add_(e)
    perturbed = _grads(forget(model, ref, batch), params)
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.data.sub_(e)
    return perturbed


def reference_rs_forget_grad(model, ref, batch, params, forget, sigma, samples, seed):
    """`forget_step_randomized`: the mean forget gradient over `samples` draws of noise `randn_like(p) * sigma`."""
    torch.manual_seed(seed)
    total = [torch.zeros_like(p) for p in params]
    for _ in range(samples):
        noise = [torch.randn_like(p) * sigma for p in params]
        with torch.no_grad():
            for p, n in zip(params, noise):
                p.add_(n)
        # the mean of the draws' gradients, the division on the loss (see the module docstring)
        for t, g in zip(total, _grads(forget(model, ref, batch) / samples, params)):
            t.add_(g)
        with torch.no_grad():
            for p, n in zip(params, noise):
                p.sub_(n)
    return total


def reference_run(initial, micro_batches, forget, *, smoothing, retain_weight=1.0, forget_weight=1.0, **kwargs):
    """STEPS SGD steps of the reference's training step (one micro-batch per step, as its configs run it):
    update = forget_weight * g_f(smoothed) + retain_weight * g_r(theta); `forget_weight` is hf_unlearn's gamma (the
    reference has none: 1)."""
    model = copy.deepcopy(initial).train()
    ref = copy.deepcopy(initial).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for step, batch in enumerate(micro_batches[:STEPS]):
        if smoothing == "sam":
            forget_grad = reference_sam_forget_grad(model, ref, batch, params, forget, kwargs["rho"])
        elif smoothing == "rs":
            seed = noise_seed(SEED, step, 0)
            forget_grad = reference_rs_forget_grad(
                model, ref, batch, params, forget, kwargs["sigma"], kwargs["num_samples"], seed
            )
        else:
            forget_grad = _grads(forget(model, ref, batch), params)
        retain_grad = _grads(retain_nll(model, batch), params) if retain_weight else [0.0] * len(params)
        with torch.no_grad():
            for p, f, r in zip(params, forget_grad, retain_grad):
                p -= LR * (forget_weight * f + retain_weight * r)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def library_run(initial, tokenizer, forget, retain, out, **overrides):
    """hf_unlearn's side: STEPS SGD steps of the trainer on a copy of `initial`; the parameters after and the
    batches the trainer drew."""
    model = copy.deepcopy(initial)
    trainer = make_trainer(
        model,
        tokenizer,
        forget,
        retain,
        out,
        optim="sgd",
        learning_rate=LR,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        seed=SEED,
        **overrides,
    )
    recorded = []
    collate = trainer.data_collator

    def recording_collator(features):
        batch = collate(features)
        recorded.append({split: {k: v.clone() for k, v in sub.items()} for split, sub in batch.items()})
        return batch

    trainer.data_collator = recording_collator
    trainer.train()
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return params, recorded, trainer.state.log_history


@pytest.fixture(scope="module")
def data(tofu, tokenizer):
    """A tiny Llama (float64: the comparison is of the algorithms, not of float32 rounding) fine-tuned a little on
    six forget answers (not to saturation, where a token's gradient 1 - p is cancellation-prone); retain rows from
    the retain set."""
    forget = tofu["forget01"].select(range(6))
    retain = tofu["retain99"].select(range(6))
    initial = tiny_llama(len(tokenizer), num_layers=2, hidden_size=32, seed=0)
    initial.double()
    finetune_on_qa(
        initial, tokenizer, forget["question"], forget["answer"], epochs=20, learning_rate=1e-2, progress=False
    )
    return initial, forget, retain


CASES = {
    # Unlearn-Smooth GA_FT_SAM (its gamma 1 = alpha)
    "ga_ft_sam": (
        dict(forget_loss="ga", retain_loss="nll", smoothing="sam", smoothing_kwargs={"rho": RHO}),
        forget_ga,
        dict(smoothing="sam", rho=RHO),
    ),
    # NPO_FT_SAM with NPO on sequence sums, its gamma 0.5; hf_unlearn's forget weight gamma 2 multiplies g_f(theta+eps)
    "npo_ft_sam_weighted": (
        dict(
            forget_loss="npo",
            retain_loss="nll",
            gamma=2.0,
            alpha=0.5,
            smoothing="sam",
            smoothing_kwargs={"rho": RHO},
        ),
        forget_npo,
        dict(smoothing="sam", rho=RHO, forget_weight=2.0, retain_weight=0.5),
    ),
    # GA alone (no retain term: the reference with gamma 0)
    "ga_sam_no_retain": (
        dict(forget_loss="ga", retain_loss="none", smoothing="sam", smoothing_kwargs={"rho": RHO}),
        forget_ga,
        dict(smoothing="sam", rho=RHO, retain_weight=0.0),
    ),
    # Unlearn-Smooth NPO_FT_RS (3 draws; the noise's std is its sam_rho)
    "npo_ft_rs": (
        dict(forget_loss="npo", retain_loss="nll", smoothing="rs", smoothing_kwargs={"sigma": 0.05}),
        forget_npo,
        dict(smoothing="rs", sigma=0.05, num_samples=3),
    ),
    "ga_ft_rs_2_samples": (
        dict(forget_loss="ga", retain_loss="nll", smoothing="rs", smoothing_kwargs={"sigma": 0.05, "num_samples": 2}),
        forget_ga,
        dict(smoothing="rs", sigma=0.05, num_samples=2),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_three_sgd_steps_equal_the_reference(case, data, tokenizer, tmp_path):
    overrides, forget_fn, reference_kwargs = CASES[case]
    initial, forget, retain = data
    params, batches, logs = library_run(initial, tokenizer, forget, retain, tmp_path, **overrides)
    assert len(batches) >= STEPS
    lengths = (batches[0]["forget"]["labels"] != -100).sum(-1)
    assert len(set(lengths.tolist())) > 1, "answers of different lengths in one batch"
    expected = reference_run(initial, batches, forget_fn, **reference_kwargs)
    before = torch.cat([p.detach().reshape(-1) for p in initial.parameters()])
    assert (expected - before).norm() > 1e-3, "the steps must move the model"
    torch.testing.assert_close(params, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(params - before, expected - before, rtol=1e-5, atol=1e-9)
    # the smoothing matters on this data: the same steps without it end elsewhere
    plain_kwargs = {k: v for k, v in reference_kwargs.items() if k in ("forget_weight", "retain_weight")}
    plain = reference_run(initial, batches, forget_fn, smoothing=None, **plain_kwargs)
    assert (plain - expected).norm() > 100 * 1e-5 * (expected - before).norm()
    if overrides["smoothing"] == "sam":
        logged = [e for e in logs if "smoothing/forget_grad_norm" in e]
        assert len(logged) == STEPS and all(e["smoothing/forget_grad_norm"] > 0 for e in logged)
