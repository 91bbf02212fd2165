"""Unlearning metrics on per-question / per-text values (no model code).

Everything here works on numbers a runner has already computed from a model: mean negative log-likelihoods,
token log-probabilities, teacher-forced predictions, generations. The definitions are those of the TOFU (Maini et
al. 2024, arXiv 2401.06121) and MUSE (Shi et al. 2024, arXiv 2407.06460) benchmarks; each function's docstring
states its formula.

Conventions used throughout
---------------------------
* mean-NLL of an answer = sum of token cross-entropies over the answer tokens / number of answer tokens.
* Alignment of teacher-forced tensors: `logits[t]` (or `pred_ids[t]`, `token_logprobs[t]`, `mu[t]`,
  `sigma[t]`) is the model's prediction FOR `labels[t]`. For a Hugging Face causal LM that means the caller has
  already shifted: `logits = out.logits[0, :-1]`, `labels = batch_labels[0, 1:]`.
* Answer tokens are positions with `labels != -100`; prompt and padding positions are ignored.
* MIA scores are loss-like: a HIGHER score means LESS likely a member. The functions score the token log-probs they
  are given; which tokens differs between the references: MUSE's PrivLeak gives every token after the first of a
  text ([`~hf_unlearn.evaluation.MUSEEvaluator`]); open-unlearning gives LOSS and ZLib every labelled token, and
  Min-K% and Min-K%++ every labelled token but the last (its `tokenwise_logprobs` leaves the answer's EOS out):
  [`~hf_unlearn.evaluation.robustness.mia_scores`].
* `mia_auc` = P(score_nonmember > score_member) + 0.5 P(tie): 1.0 when the members (forget set) are perfectly
  recognisable, 0.5 when indistinguishable. This is the number open-unlearning's `mia_*` metrics report. MUSE's
  tables report 1 - that; see [`privleak`].
"""

from __future__ import annotations

import functools
import math
import sys
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps
from scipy.special import logsumexp

if TYPE_CHECKING:
    import torch

__all__ = [
    "IGNORE_INDEX",
    "TOFU_UTILITY_KEYS",
    "answer_probability",
    "exact_memorization",
    "extraction_strength",
    "forget_quality",
    "mia_auc",
    "mia_loss",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_zlib",
    "min_k_plus_plus_stats",
    "model_utility",
    "normalized_option_probability",
    "privleak",
    "rouge_l",
    "rouge_l_f1",
    "rouge_l_recall",
    "tofu_model_utility",
    "truth_ratio_forget",
    "truth_ratio_retain",
    "truth_ratio_stat",
]

IGNORE_INDEX = -100

# The nine TOFU model-utility components: (probability, ROUGE-L recall, truth ratio) on each of the three
# non-forget splits. On retain the truth ratio is the retain aggregation mean(max(0, 1 - 1/stat)); on
# real_authors / world_facts the probability is the normalised option probability.
TOFU_UTILITY_KEYS: tuple[str, ...] = (
    "retain_probability",
    "retain_rougeL_recall",
    "retain_truth_ratio",
    "real_authors_probability",
    "real_authors_rougeL_recall",
    "real_authors_truth_ratio",
    "world_facts_probability",
    "world_facts_rougeL_recall",
    "world_facts_truth_ratio",
)

# torch and rouge_score (which imports nltk and scikit-learn: 2 s) are imported on first use, so that reading logs
# (`hf-unlearn tofu-summary`) starts fast.


@functools.cache
def _rouge_l_scorer(use_stemmer: bool) -> Any:
    """ROUGE-L's scorer, built once (it loads the Porter stemmer). True: with the stemmer (TOFU, open-unlearning);
    False: without it (MUSE's own scripts)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def _is_tensor(x: Any) -> bool:
    """Whether `x` is a torch tensor (without importing torch: if it was never imported, there is none)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# ----------------------------------------------------------------------------------------------------------------
# input helpers
# ----------------------------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_1d(x: Any, name: str) -> np.ndarray:
    """Convert a list / array / tensor of numbers to a non-empty float64 vector, or raise a clear ValueError."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got a string")
    arr = _to_numpy(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; expected at least one value")
    return arr


def _is_scalar(x: Any) -> bool:
    if _is_tensor(x):
        return x.dim() == 0
    return np.ndim(x) == 0


# ----------------------------------------------------------------------------------------------------------------
# TOFU: probability, ROUGE, truth ratio, forget quality, model utility
# ----------------------------------------------------------------------------------------------------------------


def answer_probability(mean_nll: float | Sequence[float] | np.ndarray | torch.Tensor) -> float | np.ndarray:
    """TOFU answer probability: `P = exp(-mean_nll)`.

    A scalar gives a float; a sequence / array / tensor gives a float64 `np.ndarray` of the same shape
    (elementwise). The TOFU split score is the mean of these over questions.
    """
    if _is_scalar(mean_nll):
        return math.exp(-float(mean_nll))
    arr = _to_numpy(mean_nll)
    if arr.size == 0:
        raise ValueError("mean_nll is empty; expected at least one mean-NLL value")
    return np.exp(-arr)


def normalized_option_probability(
    true_mean_nll: float | Sequence[float] | np.ndarray,
    perturbed_mean_nlls: Sequence[float] | np.ndarray,
) -> float | np.ndarray:
    """Probability of the true answer among the options (TOFU real_authors / world_facts).

    `P = p_true / (p_true + sum_i p_i)` with `p = exp(-mean_nll)`, evaluated as
    `exp(-nll_true - logsumexp([-nll_true, -nll_1, ..., -nll_k]))` so that tiny probabilities do not underflow
    to 0/0.

    Scalar form: `true_mean_nll` a float, `perturbed_mean_nlls` shape [k] -> float.
    Vectorised form: `true_mean_nll` shape [n], `perturbed_mean_nlls` shape [n, k] -> array [n].
    """
    if _is_scalar(true_mean_nll):
        pert = _as_1d(perturbed_mean_nlls, "perturbed_mean_nlls")
        t = float(true_mean_nll)
        return float(np.exp(-t - logsumexp(np.concatenate([[-t], -pert]))))
    true = _as_1d(true_mean_nll, "true_mean_nll")
    pert = _to_numpy(perturbed_mean_nlls)
    if pert.ndim != 2 or pert.shape[0] != true.shape[0] or pert.shape[1] == 0:
        raise ValueError(
            f"perturbed_mean_nlls must have shape [n, k] with n = {true.shape[0]} (len of true_mean_nll) and k >= 1, "
            f"got shape {tuple(pert.shape)}"
        )
    all_neg = np.concatenate([-true[:, None], -pert], axis=1)
    return np.exp(-true - logsumexp(all_neg, axis=1))


def rouge_l(prediction: str, reference: str, *, use_stemmer: bool = True) -> dict[str, float]:
    """ROUGE-L between a generation and the reference answer (rouge_score).

    recall = LCS / |reference tokens|, precision = LCS / |prediction tokens|, f1 their harmonic mean.
    Returns `{"recall", "precision", "f1"}`. `use_stemmer`: rouge_score's Porter stemmer (on: TOFU and
    open-unlearning; off: MUSE's own scripts, `RougeEvalLogger`).
    """
    if not isinstance(prediction, str) or not isinstance(reference, str):
        raise TypeError(f"rouge_l expects two strings, got {type(prediction).__name__} and {type(reference).__name__}")
    # rouge_score's signature is score(target, prediction): the reference comes first.
    s = _rouge_l_scorer(bool(use_stemmer)).score(reference, prediction)["rougeL"]
    return {"recall": float(s.recall), "precision": float(s.precision), "f1": float(s.fmeasure)}


def _check_text_batch(predictions: Sequence[str], references: Sequence[str]) -> None:
    for name, seq in (("predictions", predictions), ("references", references)):
        if isinstance(seq, str):
            raise TypeError(f"{name} must be a sequence of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length, got {len(predictions)} and {len(references)}"
        )
    if len(predictions) == 0:
        raise ValueError("predictions and references are empty; expected at least one pair")


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> list[float]:
    """Per-pair ROUGE-L recall (TOFU's ROUGE metric, with the stemmer; the split score is the mean)."""
    _check_text_batch(predictions, references)
    return [rouge_l(p, r, use_stemmer=use_stemmer)["recall"] for p, r in zip(predictions, references)]


def rouge_l_f1(predictions: Sequence[str], references: Sequence[str], *, use_stemmer: bool = True) -> list[float]:
    """Per-pair ROUGE-L F1 (the split score is the mean). MUSE's KnowMem / VerbMem pass `use_stemmer=False`, as
    MUSE's scripts score; the stemmed default is open-unlearning's."""
    _check_text_batch(predictions, references)
    return [rouge_l(p, r, use_stemmer=use_stemmer)["f1"] for p, r in zip(predictions, references)]


def truth_ratio_stat(
    paraphrased_mean_nll: float | Sequence[float] | np.ndarray,
    perturbed_mean_nlls: Sequence[float] | np.ndarray,
) -> float | np.ndarray:
    """Per-question TOFU truth-ratio statistic.

    `stat = exp(mean_i(nll_perturbed_i) - nll_paraphrased) = P_paraphrased / P_perturbed` where both P are
    geometric means of per-token probabilities (all NLLs are per-token means). stat > 1: the model prefers the
    (paraphrased) true answer. On real_authors / world_facts pass the answer's mean-NLL as `paraphrased_mean_nll`.

    Scalar form: float and shape [k] -> float. Vectorised: shape [n] and shape [n, k] -> array [n].
    """
    if _is_scalar(paraphrased_mean_nll):
        pert = _as_1d(perturbed_mean_nlls, "perturbed_mean_nlls")
        return math.exp(float(pert.mean()) - float(paraphrased_mean_nll))
    para = _as_1d(paraphrased_mean_nll, "paraphrased_mean_nll")
    pert = _to_numpy(perturbed_mean_nlls)
    if pert.ndim != 2 or pert.shape[0] != para.shape[0] or pert.shape[1] == 0:
        raise ValueError(
            f"perturbed_mean_nlls must have shape [n, k] with n = {para.shape[0]} (len of paraphrased_mean_nll) "
            f"and k >= 1, got shape {tuple(pert.shape)}"
        )
    return np.exp(pert.mean(axis=1) - para)


def _check_stats(stats: Any, name: str) -> np.ndarray:
    arr = _as_1d(stats, name)
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError(f"{name} must be non-negative truth-ratio statistics (exp of a difference), got {arr}")
    return arr


def truth_ratio_forget(stats: Sequence[float] | np.ndarray) -> float:
    """Forget-split truth ratio: `mean(min(stat, 1/stat))` in [0, 1]; 1 when true and false answers are
    equally likely (what a model that never saw the data shows)."""
    s = _check_stats(stats, "stats")
    with np.errstate(divide="ignore"):  # stat = 0 -> 1/stat = inf, min is 0 as intended
        return float(np.mean(np.minimum(s, 1.0 / s)))


def truth_ratio_retain(stats: Sequence[float] | np.ndarray) -> float:
    """Retain / real_authors / world_facts truth ratio: `mean(max(0, 1 - 1/stat))` in [0, 1); higher means the
    model prefers the true answer over the perturbed ones."""
    s = _check_stats(stats, "stats")
    with np.errstate(divide="ignore"):
        return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / s)))


def forget_quality(unlearned_stats: Sequence[float] | np.ndarray, retain_stats: Sequence[float] | np.ndarray) -> float:
    """TOFU forget quality: p-value of the two-sample Kolmogorov-Smirnov test (`scipy.stats.ks_2samp`, two-sided,
    default method) between the per-question forget-split truth-ratio statistics of the unlearned model and those of
    the retain model. High (near 1) = indistinguishable from the retain model."""
    a = _as_1d(unlearned_stats, "unlearned_stats")
    b = _as_1d(retain_stats, "retain_stats")
    return float(sps.ks_2samp(a, b).pvalue)


def model_utility(values: Mapping[str, float] | Sequence[float] | np.ndarray) -> float:
    """Harmonic mean `n / sum(1/v_i)` of the utility components (`scipy.stats.hmean`).

    TOFU uses nine components (see `TOFU_UTILITY_KEYS` / [`tofu_model_utility`]), but any non-empty
    collection is accepted. Any component equal to 0 makes the result 0 (the limit of the harmonic mean).
    Components must be finite and >= 0.
    """
    raw = list(values.values()) if isinstance(values, Mapping) else values
    arr = _as_1d(raw, "values")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"model utility components must be finite and >= 0, got {arr.tolist()}")
    if (arr == 0).any():
        return 0.0
    return float(sps.hmean(arr))


def tofu_model_utility(components: Mapping[str, float]) -> float:
    """TOFU model utility: harmonic mean of the nine components named in `TOFU_UTILITY_KEYS`.

    Extra keys are ignored; missing keys raise ValueError naming them.
    """
    missing = [k for k in TOFU_UTILITY_KEYS if k not in components]
    if missing:
        raise ValueError(
            f"missing TOFU model-utility components: {missing}; expected all of {list(TOFU_UTILITY_KEYS)}"
        )
    return model_utility([components[k] for k in TOFU_UTILITY_KEYS])


# ----------------------------------------------------------------------------------------------------------------
# memorisation: exact memorisation, extraction strength
# ----------------------------------------------------------------------------------------------------------------


def _answer_predictions(logits_or_pred_ids: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (argmax predictions, labels) restricted to answer positions (labels != -100)."""
    import torch

    labels_t = torch.as_tensor(labels)
    x = torch.as_tensor(logits_or_pred_ids)
    if labels_t.dim() != 1:
        raise ValueError(f"labels must have shape [T], got {tuple(labels_t.shape)}")
    if x.dim() == 2:  # logits [T, V]
        preds = x.argmax(dim=-1)
    elif x.dim() == 1:
        preds = x
    else:
        raise ValueError(f"expected logits [T, V] or predicted ids [T], got shape {tuple(x.shape)}")
    if preds.shape[0] != labels_t.shape[0]:
        raise ValueError(
            f"predictions cover {preds.shape[0]} positions but labels has {labels_t.shape[0]}; they must be aligned "
            "so that position t predicts labels[t] (shift HF logits/labels by one first)"
        )
    preds = preds.to(labels_t.device)  # index both with the same mask, wherever the logits live
    mask = labels_t != IGNORE_INDEX
    if not bool(mask.any()):
        raise ValueError(f"labels has no answer tokens (every position is {IGNORE_INDEX})")
    return preds[mask].long(), labels_t[mask].long()


def exact_memorization(logits_or_pred_ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact memorisation: `mean_t [argmax_v logits[t, v] == labels[t]]` over answer positions.

    Input: logits [T, V] or predicted ids [T], aligned with labels [T] (position t predicts labels[t]).
    """
    preds, y = _answer_predictions(logits_or_pred_ids, labels)
    return float((preds == y).double().mean())


def extraction_strength(pred_ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Extraction strength: `1 - k/|y|`, k the smallest prefix length such that the teacher-forced argmax
    predictions equal y from position k to the end.

    Equivalently the length of the longest all-correct suffix divided by |y|: 1.0 when every answer token is
    predicted, 0.0 when the last one is wrong. (open-unlearning's loop stops at k = |y| - 1 and so reports 1/|y|
    in that last case; we follow the definition.) Accepts predicted ids [T] or logits [T, V], aligned with labels
    [T]; only positions with labels != -100 count, taken in order.
    """
    preds, y = _answer_predictions(pred_ids, labels)
    wrong = (preds != y).nonzero().flatten()
    n = y.shape[0]
    k = 0 if wrong.numel() == 0 else int(wrong[-1]) + 1  # the suffix after the last mistake is all correct
    return 1.0 - k / n


# ----------------------------------------------------------------------------------------------------------------
# membership inference (MUSE): per-text scores, AUC, PrivLeak
# ----------------------------------------------------------------------------------------------------------------


def mia_loss(token_logprobs: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """LOSS attack score: mean-NLL `-mean_t log p(y_t)` over the text's tokens."""
    lp = _as_1d(token_logprobs, "token_logprobs")
    return float(-lp.mean())


def mia_zlib(token_logprobs: Sequence[float] | np.ndarray | torch.Tensor, text: str) -> float:
    """ZLib attack score: `mean-NLL / len(zlib.compress(text.encode("utf-8")))` (compressed size in bytes).

    `text`: MUSE compresses the raw text; open-unlearning the scored tokens decoded without special tokens."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return mia_loss(token_logprobs) / len(zlib.compress(text.encode("utf-8")))


def _num_lowest(n: int, k: float) -> int:
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k is the fraction of tokens to keep and must be in (0, 1], got {k}")
    # floor, but always at least one token (open-unlearning / Min-K% reference code do the same)
    return max(1, int(n * k))


def mia_min_k(token_logprobs: Sequence[float] | np.ndarray | torch.Tensor, k: float = 0.4) -> float:
    """Min-K% attack score: `-mean` of the `max(1, floor(k * T))` lowest token log-probs."""
    lp = _as_1d(token_logprobs, "token_logprobs")
    m = _num_lowest(lp.size, k)
    return float(-np.sort(lp)[:m].mean())


def mia_min_k_plus_plus(
    token_logprobs: Sequence[float] | np.ndarray | torch.Tensor,
    mu: Sequence[float] | np.ndarray | torch.Tensor,
    sigma: Sequence[float] | np.ndarray | torch.Tensor,
    k: float = 0.4,
) -> float:
    """Min-K%++ attack score: `-mean` of the `max(1, floor(k * T))` lowest `z_t = (log p(y_t) - mu_t) / sigma_t`.

    `mu`, `sigma` come from [`min_k_plus_plus_stats`] on the same (aligned) logits rows that gave
    `token_logprobs`. All three must have the same length; sigma must be > 0.
    """
    lp = _as_1d(token_logprobs, "token_logprobs")
    mu_a = _as_1d(mu, "mu")
    sg = _as_1d(sigma, "sigma")
    if not (lp.size == mu_a.size == sg.size):
        raise ValueError(
            f"token_logprobs, mu and sigma must have the same length, got {lp.size}, {mu_a.size}, {sg.size}"
        )
    if (sg <= 0).any():
        raise ValueError("sigma must be > 0 at every position (min_k_plus_plus_stats clamps it)")
    z = (lp - mu_a) / sg
    m = _num_lowest(z.size, k)
    return float(-np.sort(z)[:m].mean())


def min_k_plus_plus_stats(logits: torch.Tensor, min_var: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position mean and std of log p under the model's own next-token distribution.

    `mu_t = sum_v p_tv log p_tv`, `sigma_t = sqrt(max(sum_v p_tv (log p_tv)^2 - mu_t^2, min_var))` with
    `p_t = softmax(logits[t])`. logits [T, V] (any leading dims work) -> (mu [T], sigma [T]) in float32.
    The variance floor (1e-6, as in open-unlearning) keeps near one-hot positions from dividing by zero.
    """
    import torch

    if not isinstance(logits, torch.Tensor):
        logits = torch.as_tensor(logits)
    if logits.dim() < 1 or logits.numel() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must be a non-empty [T, V] tensor, got shape {tuple(logits.shape)}")
    logp = torch.log_softmax(logits.detach().float(), dim=-1)
    p = logp.exp()
    # p = 0 (logit -inf, e.g. a masked vocabulary entry) would give 0 * -inf = nan; its contribution is 0.
    finite = p > 0
    plogp = torch.where(finite, p * logp, torch.zeros_like(p))
    plogp2 = torch.where(finite, p * logp * logp, torch.zeros_like(p))
    mu = plogp.sum(-1)
    var = (plogp2.sum(-1) - mu * mu).clamp_min(min_var)
    return mu, var.sqrt()


def mia_auc(
    member_scores: Sequence[float] | np.ndarray | torch.Tensor,
    nonmember_scores: Sequence[float] | np.ndarray | torch.Tensor,
) -> float:
    """ROC AUC of a loss-like MIA score at telling members (forget set) from non-members (holdout set).

    `AUC = P(score_nonmember > score_member) + 0.5 P(score_nonmember == score_member)` over all pairs, computed
    from average ranks (Mann-Whitney U of the non-members / (n_member * n_nonmember)). 1.0 = members perfectly
    recognisable (low loss), 0.5 = chance, 0.0 = members look LESS familiar than non-members.

    This equals ROC AUC with members as the positive class and `-score` as the classifier output, and also
    open-unlearning's `roc_auc_score(labels=[0]*forget + [1]*holdout, scores=loss_like)`. MUSE's tables report
    `1 - mia_auc` (see [`privleak`]).
    """
    mem = _as_1d(member_scores, "member_scores")
    non = _as_1d(nonmember_scores, "nonmember_scores")
    if np.isnan(mem).any() or np.isnan(non).any():
        raise ValueError("MIA scores contain NaN; cannot rank them")
    ranks = sps.rankdata(np.concatenate([mem, non]))  # average ranks: ties count one half
    u_non = ranks[mem.size :].sum() - non.size * (non.size + 1) / 2.0
    return float(u_non / (mem.size * non.size))


def privleak(auc_unlearned: float, auc_retain: float, *, from_mia_auc: bool = False) -> float:
    """MUSE PrivLeak: `(AUC_unlearned - AUC_retain) / AUC_retain * 100`; 0 is ideal (as leaky as the retain model).

    The formula is applied to the AUCs as given, which MUSE defines so that a model that memorised the forget set
    scores near 0 (its target model gets PrivLeak ~ -100). That MUSE AUC is `1 - mia_auc`. Pass
    `from_mia_auc=True` to give [`mia_auc`] values directly; they are converted with `1 - auc` first,
    which reproduces MUSE's numbers and open-unlearning's `privleak`.
    """
    for name, v in (("auc_unlearned", auc_unlearned), ("auc_retain", auc_retain)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be an AUC in [0, 1], got {v}")
    u, r = float(auc_unlearned), float(auc_retain)
    if from_mia_auc:
        u, r = 1.0 - u, 1.0 - r
    if r == 0.0:
        raise ValueError(
            "the retain model's AUC (after any conversion) is 0, so PrivLeak, relative to it, is undefined"
        )
    return (u - r) / r * 100.0
