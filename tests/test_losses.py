"""Each built-in loss against a hand computation on a tiny batch of fixed logits."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FixedLogits, batch_of

from hf_unlearn.losses import LossContext, get_loss, mean_nll, sequence_nll, token_log_probs

VOCAB = 5


@pytest.fixture
def setup():
    torch.manual_seed(0)
    # two sequences of 4 positions; position 0 is the prompt, answers have 3 and 2 tokens
    labels = [[-100, 1, 2, 3], [-100, 4, 0, -100]]
    policy = FixedLogits(torch.randn(2, 4, VOCAB))
    reference = FixedLogits(torch.randn(2, 4, VOCAB))
    batch = {
        "forget": batch_of(labels),
        "retain": batch_of(labels),
        "idk": batch_of([[-100, 2, 2, 2], [-100, 3, 3, -100]]),
    }
    ctx = LossContext(policy, batch, lambda inputs: reference(**inputs), token_average="answer")
    return policy, reference, batch, ctx


def hand_token_logp(logits: torch.Tensor, labels: list[list[int]]) -> list[list[float]]:
    """log p of each answer token, by hand: position t predicts labels[t + 1]."""
    out = []
    for row, seq in enumerate(labels):
        values = []
        for t in range(len(seq) - 1):
            if seq[t + 1] != -100:
                values.append(torch.log_softmax(logits[row, t], -1)[seq[t + 1]].item())
        out.append(values)
    return out


def test_token_helpers(setup):
    policy, _, batch, _ = setup
    expected = hand_token_logp(policy.logits.detach(), batch["forget"]["labels"].tolist())
    logp, mask = token_log_probs(policy.logits.detach(), batch["forget"]["labels"])
    assert mask.sum(-1).tolist() == [3, 2]
    assert sequence_nll(policy.logits.detach(), batch["forget"]["labels"]).tolist() == pytest.approx(
        [-sum(v) for v in expected], rel=1e-6
    )
    assert mean_nll(policy.logits.detach(), batch["forget"]["labels"]).tolist() == pytest.approx(
        [-sum(v) / len(v) for v in expected], rel=1e-6
    )


def test_ga_and_nll(setup):
    policy, _, batch, ctx = setup
    expected = hand_token_logp(policy.logits.detach(), batch["forget"]["labels"].tolist())
    mean_nlls = [-sum(v) / len(v) for v in expected]
    assert get_loss("ga")()(ctx).item() == pytest.approx(-sum(mean_nlls) / 2, rel=1e-6)
    assert get_loss("nll")()(ctx).item() == pytest.approx(sum(mean_nlls) / 2, rel=1e-6)


def test_npo(setup):
    policy, reference, batch, ctx = setup
    labels = batch["forget"]["labels"].tolist()
    nll = [-sum(v) for v in hand_token_logp(policy.logits.detach(), labels)]
    ref = [-sum(v) for v in hand_token_logp(reference.logits.detach(), labels)]
    beta = 0.3
    expected = -(2 / beta) * sum(math.log(1 / (1 + math.exp(-beta * (n - r)))) for n, r in zip(nll, ref)) / 2
    assert get_loss("npo")(beta=beta)(ctx).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="beta must be > 0"):
        get_loss("npo")(beta=0)


def test_idk_trains_on_the_refusal_tokens(setup):
    policy, _, batch, ctx = setup
    expected = hand_token_logp(policy.logits.detach(), batch["idk"]["labels"].tolist())
    assert get_loss("idk")()(ctx).item() == pytest.approx(sum(-sum(v) / len(v) for v in expected) / 2, rel=1e-6)


def test_kl_by_hand_and_zero_at_the_reference(setup):
    policy, reference, batch, ctx = setup
    labels = batch["retain"]["labels"].tolist()
    per_example = []
    for row, seq in enumerate(labels):
        values = []
        for t in range(len(seq) - 1):
            if seq[t + 1] != -100:
                p_ref = torch.softmax(reference.logits[row, t].detach(), -1)
                log_p = torch.log_softmax(policy.logits[row, t].detach(), -1)
                values.append((p_ref * (p_ref.log() - log_p)).sum().item())
        per_example.append(sum(values) / len(values))
    assert get_loss("kl")(positions="answer")(ctx).item() == pytest.approx(sum(per_example) / 2, rel=1e-5)
    same = LossContext(policy, batch, lambda inputs: policy(**inputs), token_average="answer")
    assert get_loss("kl")(positions="answer")(same).item() == pytest.approx(0.0, abs=1e-6)


def test_outputs_are_computed_once_per_split(setup):
    policy, reference, batch, _ = setup
    calls = {"policy": 0, "reference": 0}

    def count(name, module):
        def forward(inputs=None, **kwargs):
            calls[name] += 1
            return module(**(inputs or kwargs))

        return forward

    ctx = LossContext(count("policy", policy), batch, count("reference", reference))
    get_loss("npo")()(ctx)
    get_loss("ga")()(ctx)
    ctx.mean_nll("forget")
    assert calls == {"policy": 1, "reference": 1}
    ctx.release("forget")
    ctx.nll("forget")
    assert calls["policy"] == 2


def test_none_retain_loss_is_zero(setup):
    _, _, _, ctx = setup
    assert get_loss("none")()(ctx).item() == 0.0
    assert not get_loss("none").uses_retain_data
