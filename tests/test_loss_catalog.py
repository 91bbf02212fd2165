"""The loss catalog: each objective against a hand computation or a published property."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import FixedHidden, FixedLogits, batch_of

from hf_unlearn.losses import LossContext, get_loss, token_log_probs

LABELS = [[-100, 1, 2, 3], [-100, 4, 0, -100]]
REFUSALS = [[-100, 2, 2, 2], [-100, 3, 3, -100]]


@pytest.fixture
def models():
    torch.manual_seed(0)
    return FixedLogits(torch.randn(2, 4, 5)), FixedLogits(torch.randn(2, 4, 5))


def context(policy, reference=None):
    batch = {"forget": batch_of(LABELS), "retain": batch_of(LABELS), "idk": batch_of(REFUSALS)}
    ref = (lambda inputs: reference(**inputs)) if reference is not None else None
    hidden = isinstance(policy, FixedHidden)
    return LossContext(
        policy, batch, ref, output_hidden_states=hidden, token_average="answer", reference_module=reference
    )


def grad_of(policy, loss):
    policy.zero_grad()
    loss.backward()
    return policy.logits.grad.clone()


def token_terms(logits, labels=LABELS):
    """[(row, t, log p_t)] of the answer tokens, by hand."""
    return [
        (r, t, torch.log_softmax(logits[r, t], -1)[seq[t + 1]].item())
        for r, seq in enumerate(labels)
        for t in range(len(seq) - 1)
        if seq[t + 1] != -100
    ]


def per_example_mean(terms, value):
    rows = {}
    for r, t, lp in terms:
        rows.setdefault(r, []).append(value(r, t, lp))
    return sum(sum(v) / len(v) for v in rows.values()) / len(rows)


def test_wga_with_beta_zero_is_ga_and_by_hand(models):
    policy, _ = models
    ga = get_loss("ga")()(context(policy))
    assert get_loss("wga")(beta=0)(context(policy)).item() == pytest.approx(ga.item(), rel=1e-6)
    grad_ga = grad_of(policy, get_loss("ga")()(context(policy)))
    grad_wga0 = grad_of(policy, get_loss("wga")(beta=0)(context(policy)))
    torch.testing.assert_close(grad_wga0, grad_ga)
    terms = token_terms(policy.logits.detach())
    expected = -per_example_mean(terms, lambda r, t, lp: math.exp(2 * lp) * -lp)
    assert get_loss("wga")(beta=2)(context(policy)).item() == pytest.approx(expected, rel=1e-5)


def test_tnpo_at_the_reference_weighs_tokens_one_but_for_the_epsilon(models):
    policy, _ = models
    same = FixedLogits(policy.logits.detach())
    ctx = context(policy, same)
    logp, mask = ctx.token_log_probs("forget")
    ref_logp, _ = ctx.ref_token_log_probs("forget")
    # G-effect's 1e-5 in the denominator: 2 p^b / (2 p^b + 1e-5), close to 1 only where p^b >> 1e-5
    p_beta = torch.exp(4.0 * logp)
    weights = get_loss("tnpo")(beta=4.0).token_weights(logp, ref_logp)
    torch.testing.assert_close(weights[mask], (2 * p_beta / (2 * p_beta + 1e-5))[mask])
    assert (weights[mask] < 1).all() and (weights[mask][p_beta[mask] > 1e-2] > 0.999).all()
    # with a small beta every weight is ~1: TNPO is GA at the reference
    tnpo = get_loss("tnpo")(beta=0.01)
    assert tnpo(ctx).item() == pytest.approx(get_loss("ga")()(context(policy)).item(), rel=1e-4)
    assert not tnpo.token_weights(logp, ref_logp).requires_grad  # weights are detached


def test_tnpo_and_wtnpo_by_hand(models):
    policy, reference = models
    p_terms = token_terms(policy.logits.detach())
    q_terms = {(r, t): lp for r, t, lp in token_terms(reference.logits.detach())}
    beta, a = 4.0, 1.5

    def weight(r, t, lp, power=0.0):
        p, q = math.exp(lp), math.exp(q_terms[(r, t)])
        return 2 * p ** (beta + power) / (p**beta + q**beta + 1e-5)

    tnpo = -per_example_mean(p_terms, lambda r, t, lp: weight(r, t, lp) * -lp)
    wtnpo = -per_example_mean(p_terms, lambda r, t, lp: weight(r, t, lp, a) * -lp)
    assert get_loss("tnpo")(beta=beta)(context(policy, reference)).item() == pytest.approx(tnpo, rel=1e-5)
    assert get_loss("wtnpo")(beta=beta, a=a)(context(policy, reference)).item() == pytest.approx(wtnpo, rel=1e-5)


def test_simnpo_by_hand_and_tends_to_mean_nll_ga(models):
    policy, _ = models
    terms = token_terms(policy.logits.detach())
    rows = {}
    for r, _, lp in terms:
        rows.setdefault(r, []).append(-lp)
    mean_nlls = [sum(v) / len(v) for v in rows.values()]
    beta, delta = 4.5, 0.3
    # delta inside the scaling: sigmoid(beta * (mean-NLL - delta))
    expected = -(2 / beta) * sum(math.log(1 / (1 + math.exp(-beta * (m - delta)))) for m in mean_nlls) / 2
    assert get_loss("simnpo")(beta=beta, delta=delta)(context(policy)).item() == pytest.approx(expected, rel=1e-5)
    # beta -> 0: -(2/beta) log sigmoid(beta x) ~ (2/beta) ln 2 - x, whose gradient is GA's on the mean NLL
    grad_small = grad_of(policy, get_loss("simnpo")(beta=1e-4)(context(policy)))
    grad_ga = grad_of(policy, get_loss("ga")()(context(policy)))
    torch.testing.assert_close(grad_small, grad_ga, rtol=1e-3, atol=1e-6)


def test_dpo_by_hand(models):
    policy, reference = models
    beta = 0.1

    def seq_logp(logits, labels):
        logp, _ = token_log_probs(logits, batch_of(labels)["labels"])
        return logp.sum(-1)

    pw, pl = seq_logp(policy.logits.detach(), REFUSALS), seq_logp(policy.logits.detach(), LABELS)
    rw, rl = seq_logp(reference.logits.detach(), REFUSALS), seq_logp(reference.logits.detach(), LABELS)
    margins = beta * ((pw - rw) - (pl - rl))
    expected = -(2 / beta) * torch.nn.functional.logsigmoid(margins).mean().item()
    assert get_loss("dpo")(beta=beta)(context(policy, reference)).item() == pytest.approx(expected, rel=1e-5)
    # at theta = ref the loss is (2 / beta) ln 2, as for NPO
    same = context(policy, FixedLogits(policy.logits.detach()))
    assert get_loss("dpo")(beta=beta)(same).item() == pytest.approx(2 / beta * math.log(2), rel=1e-6)


def test_satimp_by_hand(models):
    policy, _ = models
    terms = token_terms(policy.logits.detach())
    b1, b2 = 5.0, 1.0
    expected = -per_example_mean(terms, lambda r, t, lp: math.exp(lp) ** b1 * (1 - math.exp(lp)) ** b2 * -lp)
    assert get_loss("satimp")(b1=b1, b2=b2)(context(policy)).item() == pytest.approx(expected, rel=1e-5)


def test_undial_target_has_less_mass_on_the_true_token(models):
    policy, reference = models
    beta = 10.0
    expected_values = []
    for r, seq in enumerate(LABELS):
        values = []
        for t in range(len(seq) - 1):
            y = seq[t + 1]
            if y == -100:
                continue
            adjusted = reference.logits[r, t].detach().clone()
            adjusted[y] -= beta
            target = torch.softmax(adjusted, -1)
            assert target[y] < torch.softmax(reference.logits[r, t].detach(), -1)[y]
            values.append(-(target * torch.log_softmax(policy.logits[r, t].detach(), -1)).sum().item())
        expected_values.append(sum(values) / len(values))
    loss = get_loss("undial")(beta=beta)(context(policy, reference))
    assert loss.item() == pytest.approx(sum(expected_values) / 2, rel=1e-5)
    # a gradient step lowers the true tokens' probability
    grad = grad_of(policy, get_loss("undial")(beta=beta)(context(policy, reference)))
    stepped = FixedLogits(policy.logits.detach() - 0.5 * grad)
    before = sum(lp for *_, lp in token_terms(policy.logits.detach()))
    after = sum(lp for *_, lp in token_terms(stepped.logits.detach()))
    assert after < before


def test_ceu_by_hand_and_pushes_the_true_token_down(models):
    policy, _ = models
    expected_values = []
    for r, seq in enumerate(LABELS):
        values = []
        first_answer_position = min(t for t in range(len(seq) - 1) if seq[t + 1] != -100)
        for t in range(len(seq) - 1):
            y = seq[t + 1]
            if y == -100 or t == first_answer_position:  # open-unlearning's ignore_first_n_answer_tokens=1
                continue
            masked = policy.logits[r, t].detach().clone()
            masked[y] = float("-inf")
            target = torch.softmax(masked, -1)
            log_p = torch.log_softmax(policy.logits[r, t].detach(), -1)
            values.append(-sum(target[v] * log_p[v] for v in range(5) if v != y).item())
        expected_values.append(sum(values) / len(values))
    ctx = context(policy)
    assert get_loss("ceu")()(ctx).item() == pytest.approx(sum(expected_values) / 2, rel=1e-5)
    grad = grad_of(policy, get_loss("ceu")()(context(policy)))
    assert torch.isfinite(grad).all()
    stepped = FixedLogits(policy.logits.detach() - 1.0 * grad)
    assert sum(lp for *_, lp in token_terms(stepped.logits.detach())) < sum(
        lp for *_, lp in token_terms(policy.logits.detach())
    )


def test_rmu_is_zero_at_the_steered_state_and_reproducible():
    rmu = get_loss("rmu")(layer=1, steering_coeff=2.0)
    config = type("Cfg", (), {"get_text_config": lambda self: type("T", (), {"hidden_size": 8})()})()
    model = torch.nn.Linear(1, 1)
    model.config = config
    rmu.setup(model, seed=3)
    again = get_loss("rmu")(layer=1)
    again.setup(model, seed=3)
    torch.testing.assert_close(rmu.direction, again.direction)
    assert rmu.direction.norm().item() == pytest.approx(1.0) and (rmu.direction >= 0).all()
    # decoder layer 1 (the last) outputs `hidden` before the final norm (FixedHidden)
    steered = (2.0 * rmu.direction).expand(2, 4, 8)
    policy = FixedHidden(torch.randn(2, 4, 5), steered, num_layers=2)
    assert rmu(context(policy)).item() == pytest.approx(0.0, abs=1e-10)
    # what HF returns as the last hidden state is after the final norm: RMU does not read that one
    ctx = context(policy)
    torch.testing.assert_close(ctx.hidden_states("forget", 2), FixedHidden.FINAL_NORM_SCALE * steered)
    torch.testing.assert_close(ctx.layer_output("forget", 1), steered)
    off = FixedHidden(torch.randn(2, 4, 5), steered + 1.0, num_layers=2)
    assert rmu(context(off)).item() == pytest.approx(1.0, rel=1e-5)  # mean over hidden units of 1^2
    restored = get_loss("rmu")(layer=1, steering_coeff=2.0)
    restored.load_state_dict(rmu.state_dict())
    assert restored(context(off)).item() == pytest.approx(1.0, rel=1e-5)
    missing_layer = get_loss("rmu")(layer=5, steering_coeff=2.0)
    missing_layer.load_state_dict(rmu.state_dict())
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        missing_layer(context(policy))


def test_embed_diff_is_zero_at_the_reference_and_by_hand():
    hidden = torch.randn(2, 4, 8)
    policy = FixedHidden(torch.randn(2, 4, 5), hidden)
    loss = get_loss("embed_diff")(layer=1)
    assert loss(context(policy, FixedHidden(policy.logits.detach(), hidden))).item() == pytest.approx(0.0, abs=1e-10)
    shifted = FixedHidden(policy.logits.detach(), hidden + 2.0)
    assert loss(context(policy, shifted)).item() == pytest.approx(4.0, rel=1e-5)
