"""Tests for hf_unlearn.evaluation.metrics: hand computations, scipy / rouge_score cross-checks, edge cases."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from scipy import stats as sps

from hf_unlearn.evaluation import metrics as M

LN2 = math.log(2.0)
LN4 = math.log(4.0)


# ------------------------------------------------------------------------------------------------------------------
# probability
# ------------------------------------------------------------------------------------------------------------------


def test_answer_probability_scalar_and_elementwise():
    assert M.answer_probability(LN2) == pytest.approx(0.5)
    assert isinstance(M.answer_probability(0.0), float)
    out = M.answer_probability([0.0, LN2, LN4])
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [1.0, 0.5, 0.25])
    np.testing.assert_allclose(M.answer_probability(torch.tensor([LN4])), [0.25])
    with pytest.raises(ValueError, match="empty"):
        M.answer_probability([])


def test_normalized_option_probability_by_hand():
    # p_true = 0.5, perturbed 0.25 + 0.25 -> 0.5 / (0.5 + 0.5) = 0.5
    assert M.normalized_option_probability(LN2, [LN4, LN4]) == pytest.approx(0.5)
    # p_true = 0.5, perturbed 0.125 -> 0.5 / 0.625 = 0.8
    assert M.normalized_option_probability(LN2, [math.log(8.0)]) == pytest.approx(0.8)


def test_normalized_option_probability_is_stable_for_tiny_probabilities():
    # exp(-1000) underflows to 0 in float64, so the naive ratio is 0/0. Relative to p_true the perturbed answer
    # has probability 1/3: p_true / (p_true + p_true / 3) = 0.75.
    assert M.normalized_option_probability(1000.0, [1000.0 + math.log(3.0)]) == pytest.approx(0.75)


def test_normalized_option_probability_vectorised_matches_scalar():
    true = np.array([LN2, 1000.0])
    pert = np.array([[LN4, LN4], [1000.0 + math.log(3.0), 1e6]])
    out = M.normalized_option_probability(true, pert)
    np.testing.assert_allclose(out, [0.5, 0.75])
    with pytest.raises(ValueError, match=r"shape \[n, k\]"):
        M.normalized_option_probability(true, pert[:1])
    with pytest.raises(ValueError, match="perturbed_mean_nlls is empty"):
        M.normalized_option_probability(LN2, [])


# ------------------------------------------------------------------------------------------------------------------
# ROUGE-L
# ------------------------------------------------------------------------------------------------------------------


def test_rouge_l_by_hand_with_stemming():
    # stemmed prediction: the cat are run fast (5 tokens); reference: the cat run (3 tokens); LCS = 3
    # recall 3/3 = 1, precision 3/5 = 0.6, f1 = 2 * 0.6 * 1 / 1.6 = 0.75. Without the stemmer only "the" matches.
    r = M.rouge_l("The cats are running fast", "the cat runs")
    assert r == pytest.approx({"recall": 1.0, "precision": 0.6, "f1": 0.75})


def test_rouge_l_agrees_with_rouge_score_and_argument_order():
    pred, ref = "Paris is the capital of France", "The capital of France is Paris, a large city"
    ref_score = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred)["rougeL"]
    r = M.rouge_l(pred, ref)
    assert r["recall"] == pytest.approx(ref_score.recall)
    assert r["precision"] == pytest.approx(ref_score.precision)
    assert r["f1"] == pytest.approx(ref_score.fmeasure)
    # recall is relative to the reference: LCS "the capital of france" = 4 of 9 reference tokens
    assert r["recall"] == pytest.approx(4 / 9)
    assert r["precision"] == pytest.approx(4 / 6)


def test_rouge_l_batch_versions():
    preds = ["the cat runs", "nothing in common", ""]
    refs = ["the cat runs", "a dog sleeps", "an answer"]
    assert M.rouge_l_recall(preds, refs) == pytest.approx([1.0, 0.0, 0.0])
    assert M.rouge_l_f1(["the cat", "the cat sat down"], ["the cat sat", "the cat"]) == pytest.approx(
        [2 * 1.0 * (2 / 3) / (1 + 2 / 3), 2 * 0.5 * 1.0 / 1.5]
    )
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        M.rouge_l_recall(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        M.rouge_l_f1([], [])
    with pytest.raises(TypeError, match="not a single string"):
        M.rouge_l_recall("abc", "abc")


# ------------------------------------------------------------------------------------------------------------------
# truth ratio and forget quality on a small TOFU-like fixture
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tofu_questions():
    """Five questions: paraphrased mean-NLL and three perturbed mean-NLLs each.

    The perturbed rows average to paraphrased + d with d = [ln 2, 0, -ln 2, ln 4, -ln 4], so the truth-ratio
    stats exp(mean(perturbed) - paraphrased) are exactly [2, 1, 0.5, 4, 0.25].
    """
    para = np.array([1.0, 2.0, 1.5, 0.5, 3.0])
    d = np.array([LN2, 0.0, -LN2, LN4, -LN4])
    spread = np.array([-0.3, 0.0, 0.3])  # averages to 0
    pert = para[:, None] + d[:, None] + spread[None, :]
    return para, pert, np.array([2.0, 1.0, 0.5, 4.0, 0.25])


def test_truth_ratio_stat_by_hand():
    # mean(1.2, 1.5, 1.8) = 1.5; stat = exp(1.5 - 1.0) = e^0.5
    s = M.truth_ratio_stat(1.0, [1.2, 1.5, 1.8])
    assert s == pytest.approx(math.exp(0.5))
    # ... which is P_paraphrased / geometric mean of the perturbed answer probabilities
    geo = (math.exp(-1.2) * math.exp(-1.5) * math.exp(-1.8)) ** (1 / 3)
    assert s == pytest.approx(math.exp(-1.0) / geo)


def test_truth_ratio_fixture(tofu_questions):
    para, pert, expected = tofu_questions
    stats = M.truth_ratio_stat(para, pert)
    np.testing.assert_allclose(stats, expected)
    scalar = [M.truth_ratio_stat(p, row) for p, row in zip(para, pert)]
    np.testing.assert_allclose(scalar, expected)
    # forget: min(s, 1/s) = [0.5, 1, 0.5, 0.25, 0.25] -> 2.5 / 5 = 0.5
    assert M.truth_ratio_forget(stats) == pytest.approx(0.5)
    # retain: max(0, 1 - 1/s) = [0.5, 0, 0, 0.75, 0] -> 1.25 / 5 = 0.25
    assert M.truth_ratio_retain(stats) == pytest.approx(0.25)


def _ks_exact_pvalue_by_enumeration(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided KS p-value by brute force: the fraction of all C(n+m, n) relabellings of the pooled sample
    whose ECDF distance D is at least the observed one."""
    pool = np.sort(np.concatenate([a, b]))

    def dist(x: np.ndarray, y: np.ndarray) -> float:
        fx = np.searchsorted(np.sort(x), pool, side="right") / x.size
        fy = np.searchsorted(np.sort(y), pool, side="right") / y.size
        return float(np.abs(fx - fy).max())

    observed = dist(a, b)
    hits = total = 0
    for idx in itertools.combinations(range(pool.size), a.size):
        mask = np.zeros(pool.size, dtype=bool)
        mask[list(idx)] = True
        hits += dist(pool[mask], pool[~mask]) >= observed - 1e-12
        total += 1
    return hits / total


def test_forget_quality_fixture_by_hand(tofu_questions):
    _, _, unlearned = tofu_questions
    # sorted unlearned 0.25 0.5 1 2 4 vs retain 1.5 3 5 6 7: at x = 1 the ECDFs are 3/5 and 0, at x = 2 4/5 and
    # 1/5, at x = 4 1 and 2/5 -> D = 0.6. Of the C(10, 5) = 252 relabellings, 90 reach D >= 0.6: p = 90 / 252.
    retain = np.array([1.5, 3.0, 5.0, 6.0, 7.0])
    assert sps.ks_2samp(unlearned, retain).statistic == pytest.approx(0.6)
    assert _ks_exact_pvalue_by_enumeration(unlearned, retain) == pytest.approx(90 / 252)
    assert M.forget_quality(unlearned, retain) == pytest.approx(90 / 252)
    # completely separated samples: D = 1, reached only by the 2 fully separated labellings: p = 2 / 252
    far = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    assert M.forget_quality(unlearned, far) == pytest.approx(2 / 252)
    # identical samples: D = 0, p = 1
    assert M.forget_quality(unlearned, unlearned) == pytest.approx(1.0)


def test_forget_quality_matches_scipy_on_larger_samples():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0.0, 1.0, 40), rng.lognormal(0.5, 1.0, 35)
    assert M.forget_quality(a, b) == pytest.approx(sps.ks_2samp(a, b).pvalue)
    assert M.forget_quality(a, b) < 1.0


def test_truth_ratio_edge_cases():
    # stat = 1: true and false answers equally likely
    assert M.truth_ratio_forget([1.0]) == 1.0
    assert M.truth_ratio_retain([1.0]) == 0.0
    # stat = 0 (overflowed exp in the other direction) is the worst case for both
    assert M.truth_ratio_forget([0.0]) == 0.0
    assert M.truth_ratio_retain([0.0]) == 0.0
    assert M.truth_ratio_retain([math.inf]) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        M.truth_ratio_forget([-1.0])
    with pytest.raises(ValueError, match="stats is empty"):
        M.truth_ratio_retain([])
    with pytest.raises(ValueError, match="unlearned_stats is empty"):
        M.forget_quality([], [1.0])
    with pytest.raises(ValueError, match="retain_stats is empty"):
        M.forget_quality([1.0], [])
    with pytest.raises(ValueError, match="perturbed_mean_nlls must have shape"):
        M.truth_ratio_stat(np.ones(3), np.ones((2, 3)))


@given(st.lists(st.floats(min_value=1e-6, max_value=1e6), min_size=1, max_size=30))
def test_truth_ratio_aggregations_bounded_and_symmetric(stats):
    f = M.truth_ratio_forget(stats)
    r = M.truth_ratio_retain(stats)
    assert 0.0 <= f <= 1.0
    assert 0.0 <= r < 1.0
    # the forget aggregation does not care which answer is preferred: stat and 1/stat score the same
    assert M.truth_ratio_forget([1.0 / s for s in stats]) == pytest.approx(f)


# ------------------------------------------------------------------------------------------------------------------
# model utility
# ------------------------------------------------------------------------------------------------------------------


def test_model_utility_by_hand_and_against_hmean():
    assert M.model_utility([0.5] * 9) == pytest.approx(0.5)
    # eight 1s and one 0.25: 9 / (8 * 1 + 4) = 0.75
    assert M.model_utility([1.0] * 8 + [0.25]) == pytest.approx(0.75)
    rng = np.random.default_rng(1)
    vals = rng.uniform(0.05, 1.0, 9)
    assert M.model_utility(vals) == pytest.approx(sps.hmean(vals))
    assert M.model_utility({"a": 0.2, "b": 0.8}) == pytest.approx(2 / (5 + 1.25))


def test_model_utility_zero_and_errors():
    assert M.model_utility([0.9] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError, match="values is empty"):
        M.model_utility([])
    with pytest.raises(ValueError, match="finite and >= 0"):
        M.model_utility([0.5, -0.1])
    with pytest.raises(ValueError, match="finite and >= 0"):
        M.model_utility([0.5, float("nan")])


def test_tofu_model_utility_keys():
    assert len(M.TOFU_UTILITY_KEYS) == 9 and len(set(M.TOFU_UTILITY_KEYS)) == 9
    comps = {k: 0.5 for k in M.TOFU_UTILITY_KEYS}
    comps["world_facts_truth_ratio"] = 0.25  # 9 / (8 * 2 + 4) = 0.45
    comps["unrelated_extra"] = 0.0  # ignored
    assert M.tofu_model_utility(comps) == pytest.approx(0.45)
    del comps["retain_probability"], comps["real_authors_truth_ratio"]
    with pytest.raises(ValueError, match=r"missing .*'retain_probability', 'real_authors_truth_ratio'"):
        M.tofu_model_utility(comps)


# ------------------------------------------------------------------------------------------------------------------
# exact memorisation and extraction strength
# ------------------------------------------------------------------------------------------------------------------


def _one_hot_logits(pred_ids: list[int], vocab: int = 10) -> torch.Tensor:
    logits = torch.zeros(len(pred_ids), vocab)
    logits[torch.arange(len(pred_ids)), torch.tensor(pred_ids)] = 5.0
    return logits


def test_exact_memorization_by_hand():
    labels = torch.tensor([-100, -100, 5, 6, 7, 8])
    preds = torch.tensor([9, 9, 5, 0, 7, 8])  # prompt positions ignored; 3 of 4 answer tokens right
    assert M.exact_memorization(preds, labels) == pytest.approx(0.75)
    assert M.exact_memorization(_one_hot_logits(preds.tolist()), labels) == pytest.approx(0.75)
    assert M.exact_memorization(torch.tensor([1, 2]), torch.tensor([3, 4])) == 0.0


def test_exact_memorization_errors():
    with pytest.raises(ValueError, match="aligned"):
        M.exact_memorization(torch.tensor([1, 2, 3]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="no answer tokens"):
        M.exact_memorization(torch.tensor([1, 2]), torch.tensor([-100, -100]))
    with pytest.raises(ValueError, match=r"logits \[T, V\] or predicted ids \[T\]"):
        M.exact_memorization(torch.zeros(1, 2, 3), torch.tensor([1, 2]))


@pytest.mark.parametrize(
    ("preds", "expected"),
    [
        ([1, 2, 3, 4], 1.0),  # k = 0
        ([0, 2, 3, 4], 0.75),  # first wrong: k = 1 -> 1 - 1/4
        ([1, 0, 3, 4], 0.5),  # k = 2
        ([0, 2, 0, 4], 0.25),  # last mistake at index 2: k = 3
        ([1, 2, 3, 0], 0.0),  # last token wrong: k = |y| = 4
    ],
)
def test_extraction_strength_by_hand(preds, expected):
    labels = torch.tensor([-100, 1, 2, 3, 4])
    pred_ids = torch.tensor([7] + preds)
    assert M.extraction_strength(pred_ids, labels) == pytest.approx(expected)
    assert M.extraction_strength(_one_hot_logits([7] + preds), labels) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------------------------
# MIA scores
# ------------------------------------------------------------------------------------------------------------------

LOGPROBS = [-0.1, -2.0, -0.5, -3.0, -1.0]  # sum -6.6


def test_mia_loss_and_zlib_by_hand():
    assert M.mia_loss(LOGPROBS) == pytest.approx(6.6 / 5)
    assert M.mia_loss(torch.tensor(LOGPROBS)) == pytest.approx(1.32)
    text = "hello hello hello hello"
    size = len(zlib.compress(text.encode("utf-8")))
    assert M.mia_zlib(LOGPROBS, text) == pytest.approx(1.32 / size)
    # same loss, less compressible text -> larger denominator -> smaller (more member-like) score
    assert M.mia_zlib(LOGPROBS, "qz8#Lw!pX2vR0m") < M.mia_zlib(LOGPROBS, "aaaaaaaaaaaaaa")
    with pytest.raises(ValueError, match="token_logprobs is empty"):
        M.mia_loss([])
    with pytest.raises(TypeError, match="text must be a str"):
        M.mia_zlib(LOGPROBS, b"bytes")


def test_mia_min_k_by_hand():
    # k = 0.4 of 5 tokens -> floor(2.0) = 2 lowest: -3, -2 -> 2.5
    assert M.mia_min_k(LOGPROBS) == pytest.approx(2.5)
    # k = 0.1 -> floor(0.5) = 0 -> at least one token: -(-3) = 3
    assert M.mia_min_k(LOGPROBS, k=0.1) == pytest.approx(3.0)
    # k = 1 -> all tokens: the LOSS score
    assert M.mia_min_k(LOGPROBS, k=1.0) == pytest.approx(M.mia_loss(LOGPROBS))
    with pytest.raises(ValueError, match=r"k .* must be in \(0, 1\]"):
        M.mia_min_k(LOGPROBS, k=0.0)


def test_mia_min_k_plus_plus_by_hand():
    lp = [-1.0, -2.0, -3.0, -4.0]
    mu = [-1.0, -1.0, -1.0, -1.0]
    sigma = [1.0, 2.0, 1.0, 4.0]
    # z = [0, -0.5, -2, -0.75]; k = 0.5 -> 2 lowest: -2, -0.75 -> 1.375
    assert M.mia_min_k_plus_plus(lp, mu, sigma, k=0.5) == pytest.approx(1.375)
    with pytest.raises(ValueError, match="same length, got 4, 3, 4"):
        M.mia_min_k_plus_plus(lp, mu[:3], sigma)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        M.mia_min_k_plus_plus(lp, mu, [1.0, 0.0, 1.0, 1.0])


def test_min_k_plus_plus_stats_by_hand():
    # position 0: p = [0.25, 0.75] -> mu = .25 ln .25 + .75 ln .75, E[l^2] = .25 ln^2 .25 + .75 ln^2 .75
    # position 1: uniform over 2 (third logit -inf must not give nan) -> mu = -ln 2, variance 0 -> floor 1e-6
    logits = torch.tensor([[0.0, math.log(3.0), -math.inf], [1.0, 1.0, -math.inf]])
    mu, sigma = M.min_k_plus_plus_stats(logits)
    l1, l2 = math.log(0.25), math.log(0.75)
    mu0 = 0.25 * l1 + 0.75 * l2
    var0 = 0.25 * l1**2 + 0.75 * l2**2 - mu0**2
    torch.testing.assert_close(mu, torch.tensor([mu0, -LN2]))
    torch.testing.assert_close(sigma, torch.tensor([math.sqrt(var0), 1e-3]))


def test_min_k_plus_plus_stats_against_brute_force():
    torch.manual_seed(0)
    logits = torch.randn(6, 50, dtype=torch.float64) * 3
    mu, sigma = M.min_k_plus_plus_stats(logits)
    for t in range(6):
        p = torch.softmax(logits[t], -1)
        lp = torch.log(p)
        m = float((p * lp).sum())
        s = math.sqrt(float((p * (lp - m) ** 2).sum()))  # central form of the same variance
        assert float(mu[t]) == pytest.approx(m, rel=1e-5)
        assert float(sigma[t]) == pytest.approx(s, rel=1e-4)


# ------------------------------------------------------------------------------------------------------------------
# MIA AUC and PrivLeak: conventions
# ------------------------------------------------------------------------------------------------------------------


def _roc_auc_trapezoid(labels: np.ndarray, scores: np.ndarray) -> float:
    """Textbook ROC AUC (what sklearn.metrics.roc_auc_score computes): the positive class is label 1 and a HIGHER
    score means 'more positive'; sweep thresholds over the distinct scores, integrate TPR over FPR with trapezoids
    (tied scores give a diagonal segment, i.e. half credit)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    tpr, fpr = [0.0], [0.0]
    for thr in np.unique(scores)[::-1]:
        pred = scores >= thr
        tpr.append((pred & (labels == 1)).sum() / (labels == 1).sum())
        fpr.append((pred & (labels == 0)).sum() / (labels == 0).sum())
    return float(np.trapezoid(tpr, fpr))


def test_mia_auc_worked_example_and_conventions():
    forget = np.array([1.0, 2.0, 3.0])  # members, loss-like scores
    holdout = np.array([2.0, 4.0])  # non-members
    # pairs (holdout, forget): (2,1) >, (2,2) tie, (2,3) <, (4,1) >, (4,2) >, (4,3) > -> (4 + 0.5) / 6 = 0.75
    auc = M.mia_auc(forget, holdout)
    assert auc == pytest.approx(0.75)
    scores = np.concatenate([forget, holdout])
    # open-unlearning: labels forget 0 / holdout 1, loss-like scores fed as they are -> the same number
    assert _roc_auc_trapezoid(np.array([0, 0, 0, 1, 1]), scores) == pytest.approx(auc)
    # members as the positive class with -loss as the classifier output -> the same number
    assert _roc_auc_trapezoid(np.array([1, 1, 1, 0, 0]), -scores) == pytest.approx(auc)
    # members positive but loss-like scores fed as they are: that is MUSE's reported AUC, 1 - mia_auc
    muse_auc = _roc_auc_trapezoid(np.array([1, 1, 1, 0, 0]), scores)
    assert muse_auc == pytest.approx(0.25) and muse_auc == pytest.approx(1 - auc)


def test_mia_auc_extremes_and_mannwhitney():
    assert M.mia_auc([0.1, 0.2], [0.5, 0.9, 1.0]) == 1.0  # members have lower loss: perfectly recognised
    assert M.mia_auc([0.5, 0.9], [0.1, 0.2]) == 0.0
    assert M.mia_auc([1.0, 1.0], [1.0]) == 0.5  # all ties
    rng = np.random.default_rng(2)
    mem, non = rng.normal(0, 1, 30).round(1), rng.normal(0.5, 1, 25).round(1)  # rounding forces ties
    u = sps.mannwhitneyu(non, mem).statistic
    assert M.mia_auc(mem, non) == pytest.approx(u / (30 * 25))
    assert M.mia_auc(torch.tensor(mem), torch.tensor(non)) == pytest.approx(u / (30 * 25))
    with pytest.raises(ValueError, match="nonmember_scores is empty"):
        M.mia_auc([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        M.mia_auc([float("nan")], [1.0])


@settings(max_examples=60)
@given(
    st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=15),
    st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=15),
)
def test_mia_auc_antisymmetric(a, b):
    # small integer scores so that ties are common
    assert M.mia_auc(a, b) + M.mia_auc(b, a) == pytest.approx(1.0)
    labels = np.array([0] * len(a) + [1] * len(b))
    assert M.mia_auc(a, b) == pytest.approx(_roc_auc_trapezoid(labels, np.array(a + b)))


def test_privleak_worked_example_both_conventions():
    # formula on the AUCs as given: (0.75 - 0.55) / 0.55 * 100
    assert M.privleak(0.75, 0.55) == pytest.approx(20 / 0.55)
    # mia_auc values (unlearned 0.75, retain 0.55) are MUSE AUCs 0.25 and 0.45: (0.25 - 0.45) / 0.45 * 100
    expected = (0.25 - 0.45) / 0.45 * 100
    assert expected == pytest.approx(-44.444444)
    assert M.privleak(0.75, 0.55, from_mia_auc=True) == pytest.approx(expected)
    assert M.privleak(1 - 0.75, 1 - 0.55) == pytest.approx(expected)
    # end to end: a model that memorised the forget set (mia_auc 1) against a retain model at chance is -100 in
    # MUSE's sign convention (the MUSE paper's target models sit near -100)
    auc_u = M.mia_auc([0.1, 0.2], [0.5, 0.9])
    auc_r = M.mia_auc([0.1, 0.9], [0.5, 0.6])
    assert (auc_u, auc_r) == (1.0, 0.5)
    assert M.privleak(auc_u, auc_r, from_mia_auc=True) == pytest.approx(-100.0)
    assert M.privleak(0.5, 0.5) == 0.0


def test_privleak_errors():
    with pytest.raises(ValueError, match="retain model's AUC .* is 0"):
        M.privleak(0.3, 0.0)
    with pytest.raises(ValueError, match="retain model's AUC .* is 0"):
        M.privleak(0.3, 1.0, from_mia_auc=True)
    with pytest.raises(ValueError, match=r"auc_unlearned must be an AUC in \[0, 1\]"):
        M.privleak(1.5, 0.5)


def test_package_reexports():
    import hf_unlearn.evaluation as ev

    for name in M.__all__:
        assert getattr(ev, name) is getattr(M, name)
        assert name in ev.__all__
