"""Golden tests of training: the parameters after 3 SGD steps equal an independent re-implementation of the
reference algorithm (tmlr-group/GRU `CustomTrainerForgetting`: `compute_loss` stores the gradient of the whole
objective as "objective" and of the retain NLL as "retain" (`store_grads`, each loss divided by the accumulation
steps); at each accumulation boundary `training_step` smooths the retain gradient (`flattened_memory = moving_avg *
accumulation + (1 - moving_avg) * old`, 0.8), takes ONE dot product over all parameters and, when it is negative,
projects the objective's gradient (`orthogonal_component_precise`, float64); the optimizer then steps on it).

The objectives are the reference codes' (`gd_gru`, `ga_gru`, `npo_KL_gru`, `idk_gru`, and plain GD), written with
the independent loss functions of `test_golden_losses`; the batches are the ones the trainer drew (recorded from
its collator), with answers of different lengths. Nothing of hf_unlearn's math is used by the reference side.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_trainer
from test_golden_losses import hf_loss, reference_kl, reference_npo

from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama

LR = 0.3
STEPS = 3
BATCH = 3
EMA = 0.8


def objective_gd(model, ref, batch, gd_coef: float = 1.0):
    """tmlr-group/GRU `gd` / `gd_gru`: -outputs.loss(forget) + gd_coef * outputs.loss(retain) (its gd_coef is 1)."""
    return -hf_loss(model, batch["forget"]) + gd_coef * hf_loss(model, batch["retain"])


def objective_gd_half(model, ref, batch):
    """`gd_gru` with gd_coef 0.5 (alpha=0.5): on this data the objective then conflicts with the retain NLL."""
    return objective_gd(model, ref, batch, gd_coef=0.5)


def objective_ga(model, ref, batch):
    """tmlr-group/GRU `ga_gru`: -outputs.loss(forget) alone."""
    return -hf_loss(model, batch["forget"])


def objective_npo_kl(model, ref, batch):
    """tmlr-group/GRU `npo_KL_gru`: NPO (sequence sums, beta 0.1) + KL(ref || model) over every retain position."""
    return reference_npo(model, ref, batch, beta=0.1) + reference_kl(model, ref, batch)


def objective_idk(model, ref, batch):
    """tmlr-group/GRU `idk_gru` projects the gradient of its IDK objective; hf_unlearn's IDK objective is
    open-unlearning's IdkNLL, outputs.loss(refusals) + outputs.loss(retain) (GRU's own `idk` pools the two batches
    into one outputs.loss instead)."""
    return hf_loss(model, batch["idk"]) + hf_loss(model, batch["retain"])


def _flat(grads, params):
    return torch.cat(
        [(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(grads, params)]
    )


def reference_run(initial, micro_batches, objective, *, accumulation: int, gru: bool):
    """Three SGD steps of the reference algorithm; returns the final parameters and whether each step projected."""
    model = copy.deepcopy(initial).train()
    ref = copy.deepcopy(initial).eval()  # theta = ref at the start, as the trainer's frozen copy
    params = list(model.parameters())
    memory_old = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    projected = []
    for step in range(STEPS):
        objective_acc = torch.zeros_like(memory_old)
        retain_acc = torch.zeros_like(memory_old)
        for batch in micro_batches[step * accumulation : (step + 1) * accumulation]:
            loss = objective(model, ref, batch) / accumulation
            objective_acc += _flat(torch.autograd.grad(loss, params, allow_unused=True), params)
            if gru:
                retain = hf_loss(model, batch["retain"]) / accumulation
                retain_acc += _flat(torch.autograd.grad(retain, params, allow_unused=True), params)
        update = objective_acc
        if gru:
            memory = EMA * retain_acc + (1 - EMA) * memory_old
            memory_old = memory
            dot = update @ memory
            projected.append(bool(dot < 0))
            if dot < 0:
                update = update - dot / (memory @ memory) * memory
        with torch.no_grad():
            offset = 0
            for p in params:
                p -= LR * update[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
    return torch.cat([p.detach().reshape(-1) for p in params]), projected


def library_run(initial, tokenizer, forget, retain, out, **overrides):
    """hf_unlearn's side: STEPS SGD steps of the trainer on a copy of `initial`; the parameters after, the batches
    the trainer drew and, per step, whether GRU projected."""
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
    projected = [bool(e["gru/projected"]) for e in trainer.state.log_history if "gru/projected" in e]
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), recorded, projected


@pytest.fixture(scope="module")
def data(tofu, tokenizer):
    """A tiny Llama that memorised six forget answers (2 s); retain rows that the forget set also holds make the
    objective's gradient conflict with the retain NLL's, so that GRU projects."""
    forget = tofu["forget01"].select(range(6))
    retain = tofu["forget01"].select([0, 1, 2])
    initial = tiny_llama(len(tokenizer), num_layers=2, hidden_size=32, seed=0)
    # float64 on both sides: the comparison is of the algorithms, not of float32 rounding (a memorised token's
    # gradient, 1 - p with p ~ 1, is cancellation-prone, and the references' float32 loss paths round differently)
    initial.double()
    finetune_on_qa(
        initial, tokenizer, forget["question"], forget["answer"], epochs=200, learning_rate=1e-2, progress=False
    )
    return initial, forget, retain


CASES = {
    "gd": (dict(forget_loss="ga", retain_loss="nll"), objective_gd, 1, False),
    "gd_gru": (dict(forget_loss="ga", retain_loss="nll", rectification="gru", alpha=0.5), objective_gd_half, 1, True),
    "ga_gru": (dict(forget_loss="ga", retain_loss="none", rectification="gru"), objective_ga, 1, True),
    "npo_kl_gru": (dict(forget_loss="npo", retain_loss="kl", rectification="gru"), objective_npo_kl, 1, True),
    "idk_gru": (dict(forget_loss="idk", retain_loss="nll", rectification="gru"), objective_idk, 1, True),
    "gd_gru_accumulation_2": (
        dict(forget_loss="ga", retain_loss="nll", rectification="gru", alpha=0.5, gradient_accumulation_steps=2),
        objective_gd_half,
        2,
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_three_sgd_steps_equal_the_reference(case, data, tokenizer, tmp_path):
    overrides, objective, accumulation, gru = CASES[case]
    initial, forget, retain = data
    params, batches, projected = library_run(initial, tokenizer, forget, retain, tmp_path, **overrides)
    assert len(batches) >= STEPS * accumulation
    lengths = (batches[0]["forget"]["labels"] != -100).sum(-1)
    assert len(set(lengths.tolist())) > 1, "answers of different lengths in one batch"
    expected, expected_projected = reference_run(
        initial, batches[: STEPS * accumulation], objective, accumulation=accumulation, gru=gru
    )
    before = torch.cat([p.detach().reshape(-1) for p in initial.parameters()])
    assert (expected - before).norm() > 1e-3, "the steps must move the model"
    torch.testing.assert_close(params, expected, rtol=1e-5, atol=1e-6)
    # the update itself, not only the parameters it is added to
    torch.testing.assert_close(params - before, expected - before, rtol=1e-5, atol=1e-9)
    if gru:
        assert projected == expected_projected
        assert any(projected), "the data must make GRU project at least once"


def test_projecting_the_forget_term_alone_is_the_named_variant_not_the_reference(data, tokenizer, tmp_path):
    """`gru_projected="forget"` (hf_unlearn before 0.2) leaves the retain term out of the update: not `gd_gru`."""
    initial, forget, retain = data
    overrides = dict(forget_loss="ga", retain_loss="nll", rectification="gru", alpha=0.5)
    params, batches, _ = library_run(initial, tokenizer, forget, retain, tmp_path, gru_projected="forget", **overrides)
    expected, _ = reference_run(initial, batches[:STEPS], objective_gd_half, accumulation=1, gru=True)
    before = torch.cat([p.detach().reshape(-1) for p in initial.parameters()])
    assert (params - expected).norm() > 0.05 * (expected - before).norm()
