"""Membership-inference attacks of a model on texts or question/answer rows, as open-unlearning computes them.

- [`mia_scores`]: the LOSS, ZLib, Min-K% and Min-K%++ scores (the functions of [`~hf_unlearn.evaluation.metrics`])
  of one forward pass of the audited model, on the tokens open-unlearning (locuslab/open-unlearning,
  `src/evals/metrics/mia/`) gives each;

and two attacks beyond them, both from MIMIR (Duan et al. 2024, arXiv 2402.07841):

- [`mia_reference`]: the audited model's loss calibrated by a reference model's loss on the same text
  (open-unlearning's `mia_reference`, `ReferenceAttack.compute_score`: `target_loss - ref_loss`);
- [`mia_gradient_norm`]: the norm of the gradient of the text's loss with respect to the model's parameters
  (open-unlearning's `mia_gradnorm`, `GradNormAttack`; Wang et al., arXiv 2402.17012).

Both return one score per text with the convention of the `mia_*` functions of
[`~hf_unlearn.evaluation.metrics`]: loss-like, a HIGHER score means LESS likely a member, so that
`mia_auc(scores_of_members, scores_of_nonmembers)` ([`~hf_unlearn.evaluation.metrics.mia_auc`]) is 1 when the
members (the forget set) are perfectly recognisable and 0.5 at chance.

Texts are given as plain strings (every token after the first is scored, as MUSE's PrivLeak does), or as a dataset
(or list of rows) with question/answer columns (the prompt is encoded by [`~hf_unlearn.data.PromptEncoder`], as for
training and TOFU evaluation, and only the answer tokens are scored) or with a text column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ...data.collator import pad_examples
from ...data.formatting import DEFAULT_DATE_STRING, PromptEncoder
from ..metrics import mia_loss, mia_min_k, mia_min_k_plus_plus, mia_zlib
from ..model_io import check_vocabulary, resolve_pad_token_id
from ..scoring import answer_token_logprobs, score_answers

__all__ = [
    "GRADIENT_NORM_LOSS_TOKENS",
    "GRADIENT_NORM_REDUCTIONS",
    "MIA_SCORES",
    "encode_texts",
    "mean_answer_nll",
    "mia_gradient_norm",
    "mia_reference",
    "mia_scores",
]

#: How [`mia_gradient_norm`] turns per-parameter gradients into one number (see its docstring); the first is the
#: default.
GRADIENT_NORM_REDUCTIONS = ("tensor_mean", "global")
#: Which scored tokens [`mia_gradient_norm`]'s loss averages (see its docstring); the first is the default.
GRADIENT_NORM_LOSS_TOKENS = ("all_but_last", "all")
#: The scores [`mia_scores`] returns.
MIA_SCORES = ("loss", "zlib", "min_k", "min_k_plus_plus")

Pair = tuple[list[int], list[int]]
TextsOrDataset = Sequence[str] | Dataset | Sequence[Mapping[str, Any]]


# ----------------------------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------------------------


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts_or_dataset: TextsOrDataset,
    *,
    question_key: str = "question",
    answer_key: str = "answer",
    text_key: str = "text",
    use_chat_template: bool | None = None,
    date_string: str | None = DEFAULT_DATE_STRING,
) -> list[Pair]:
    """`(context_ids, scored_ids)` of each text: what a membership-inference attack conditions on and what it scores.

    Args:
        tokenizer: the audited model's tokenizer.
        texts_or_dataset: plain strings (tokenized with the tokenizer's special tokens; the first token is the
            context, every later one is scored), or a `datasets.Dataset` / sequence of row mappings with
            `question_key` and `answer_key` columns (the question is the prompt, formatted by
            [`~hf_unlearn.data.PromptEncoder`], and the answer's tokens are scored) or with a `text_key` column
            (scored as plain strings).
        question_key, answer_key, text_key: the column names.
        use_chat_template, date_string: as in [`~hf_unlearn.data.PromptEncoder`].

    Raises a ValueError for an empty input, missing columns, or a row or text without anything to score.
    """
    if isinstance(texts_or_dataset, (str, bytes)):
        raise ValueError("Pass a list of texts (or a dataset), not a single string: wrap it as `[text]`.")
    if texts_or_dataset is None or len(texts_or_dataset) == 0:
        raise ValueError("There is no text to score: pass a non-empty list of texts or a non-empty dataset.")
    if isinstance(texts_or_dataset, Dataset):
        rows: Sequence[Any] = texts_or_dataset.to_list()
        columns = set(texts_or_dataset.column_names)
    else:
        rows = list(texts_or_dataset)
        columns = set().union(*(r.keys() for r in rows if isinstance(r, Mapping)))
    if all(isinstance(r, str) for r in rows):
        return [_encode_plain(tokenizer, text, f"Text {i}") for i, text in enumerate(rows)]
    if not all(isinstance(r, Mapping) for r in rows):
        kinds = sorted({type(r).__name__ for r in rows})
        raise ValueError(
            f"Expected a list of strings or of row mappings (or a datasets.Dataset), got items of type {kinds}."
        )
    if {question_key, answer_key} <= columns:
        encoder = PromptEncoder(tokenizer, use_chat_template, date_string)
        pairs = []
        for i, row in enumerate(rows):
            question, answer = row.get(question_key), row.get(answer_key)
            for key, value in ((question_key, question), (answer_key, answer)):
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"Row {i} has no text in column {key!r} (got {value!r}); remove or fix the row.")
            prompt, answer_ids = encoder.encode([{"role": "user", "content": question}], answer)
            pairs.append((prompt, answer_ids))
        return pairs
    if text_key in columns:
        pairs = []
        for i, row in enumerate(rows):
            text = row.get(text_key)
            if not isinstance(text, str):
                raise ValueError(f"Row {i} has no text in column {text_key!r} (got {text!r}); remove or fix the row.")
            pairs.append(_encode_plain(tokenizer, text, f"Row {i}"))
        return pairs
    raise ValueError(
        f"The dataset has columns {sorted(columns)}, but question/answer columns ({question_key!r}, {answer_key!r}) "
        f"or a text column ({text_key!r}) are needed: pass `question_key`/`answer_key`/`text_key` for other names."
    )


def _encode_plain(tokenizer: PreTrainedTokenizerBase, text: str, where: str) -> Pair:
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if len(ids) < 2:
        raise ValueError(
            f"{where} ({text!r:.40}) encodes to {len(ids)} token(s); at least 2 are needed (the first is the context, "
            "the others are scored). Remove empty or one-token texts."
        )
    return ids[:1], ids[1:]


def _check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    return int(batch_size)


# ----------------------------------------------------------------------------------------------------------------
# teacher-forced scoring
# ----------------------------------------------------------------------------------------------------------------


def _answer_nll(
    model: torch.nn.Module,
    pairs: Sequence[Pair],
    *,
    batch_size: int,
    pad_token_id: int,
    progress: bool,
    desc: str,
    gates: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Teacher-forced mean NLL of the answer tokens of `(prompt_ids, answer_ids)` pairs by the one scoring path
    ([`~hf_unlearn.evaluation.scoring.score_answers`]), in eval mode (the model's mode is restored); returns
    `(mean_nll, num_tokens, gate)` in the order of `pairs`.

    With `gates` and a model whose outputs carry `gate_logits` (GRUN), `gate` holds each row's mean gate value
    s(h) of the newest request over its layers (else None).
    """
    if any(len(answer) == 0 for _, answer in pairs):
        raise ValueError("A text has no token to score (an empty answer); remove it.")
    gate = np.full(len(pairs), np.nan, dtype=np.float64) if gates else None

    def read_gates(indices: list[int], outputs: Any) -> None:
        gate_logits = getattr(outputs, "gate_logits", None)
        if gate is not None and gate_logits is not None:
            values = torch.sigmoid(gate_logits[-1].float()).reshape(len(indices), -1).mean(dim=1)
            gate[indices] = values.double().cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        scores = score_answers(
            model,
            pairs,
            pad_token_id=pad_token_id,
            batch_size=batch_size,
            progress=progress,
            desc=desc,
            on_batch=read_gates,
        )
    finally:
        model.train(was_training)
    if gate is not None and np.isnan(gate).all():
        gate = None  # the model has no gates
    return scores.mean_nll, scores.num_tokens, gate


def mean_answer_nll(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts_or_dataset: TextsOrDataset,
    *,
    batch_size: int = 16,
    progress: bool = True,
    **encode_kwargs: Any,
) -> np.ndarray:
    """Teacher-forced mean NLL of each text's scored tokens (the LOSS attack's score; see [`encode_texts`] for what
    is scored). The model is scored in eval mode and left in the mode it had. `encode_kwargs` go to
    [`encode_texts`]."""
    batch_size = _check_batch_size(batch_size)
    check_vocabulary(model, tokenizer)
    pairs = encode_texts(tokenizer, texts_or_dataset, **encode_kwargs)
    pad = resolve_pad_token_id(tokenizer, "mean_answer_nll")
    return _answer_nll(model, pairs, batch_size=batch_size, pad_token_id=pad, progress=progress, desc="scoring")[0]


# ----------------------------------------------------------------------------------------------------------------
# the attacks
# ----------------------------------------------------------------------------------------------------------------


def _check_two_scored_tokens(pairs: Sequence[Pair], what: str) -> None:
    short = [i for i, (_, answer) in enumerate(pairs) if len(answer) < 2]
    if short:
        raise ValueError(
            f"Text(s) {short[:5]} have a single scored token, and {what} leaves the last scored token out (as "
            "open-unlearning does, for the answer's closing EOS), which leaves none: remove them."
        )


def mia_scores(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts_or_dataset: TextsOrDataset,
    *,
    k: float = 0.4,
    batch_size: int = 16,
    progress: bool = True,
    question_key: str = "question",
    answer_key: str = "answer",
    text_key: str = "text",
    use_chat_template: bool | None = None,
    date_string: str | None = DEFAULT_DATE_STRING,
) -> dict[str, np.ndarray]:
    """LOSS, ZLib, Min-K% and Min-K%++ membership-inference scores of each text, on the tokens open-unlearning gives
    each (locuslab/open-unlearning `src/evals/metrics/mia/` and `utils.py`; golden test in
    tests/test_golden_muse_mia.py):

    - `"loss"`: [`~hf_unlearn.evaluation.metrics.mia_loss`], the mean NLL of EVERY scored token (see
      [`encode_texts`]: an answer's tokens with its closing EOS / end-of-turn tokens; every token after the first of
      a plain text), as `LOSSAttack` reads `evaluate_probability`;
    - `"zlib"`: [`~hf_unlearn.evaluation.metrics.mia_zlib`], that mean NLL over the zlib-compressed size of the
      scored tokens decoded without special tokens (`ZLIBAttack`);
    - `"min_k"`, `"min_k_plus_plus"`: [`~hf_unlearn.evaluation.metrics.mia_min_k`] and
      [`~hf_unlearn.evaluation.metrics.mia_min_k_plus_plus`] over every scored token BUT THE LAST, as
      `tokenwise_logprobs` gives them to `MinKProbAttack` and `MinKPlusPlusAttack` (it leaves the answer's EOS out;
      on a plain text that is its last token); `k` the fraction of lowest tokens (open-unlearning's MUSE configs: 0.4).

    MUSE's own PrivLeak reads Min-K% over every token after the first ([`~hf_unlearn.evaluation.MUSEEvaluator`]).
    Every score is loss-like (lower = more likely a member): `mia_auc(scores(members), scores(non-members))` is the
    attack's AUC, the `agg_value` of open-unlearning's `mia_*` metrics. One forward pass per batch through the one
    scoring path ([`~hf_unlearn.evaluation.score_answers`]), in eval mode (the model's mode is restored).

    Args:
        model, tokenizer: the audited model and its tokenizer.
        texts_or_dataset: plain strings, or a dataset / list of rows with question/answer (or text) columns.
        k: Min-K%'s fraction, in (0, 1].
        batch_size: sequences per forward pass.
        progress: show a tqdm progress bar.
        question_key, answer_key, text_key, use_chat_template, date_string: see [`encode_texts`].

    Returns `{"loss", "zlib", "min_k", "min_k_plus_plus"}` -> a float64 array, one score per text. Raises a
    ValueError for a text with a single scored token (Min-K% would have none).
    """
    if not 0.0 < float(k) <= 1.0:
        raise ValueError(
            f"k is the fraction of lowest-probability tokens Min-K% keeps and must be in (0, 1], got {k}."
        )
    batch_size = _check_batch_size(batch_size)
    check_vocabulary(model, tokenizer)
    pairs = encode_texts(
        tokenizer,
        texts_or_dataset,
        question_key=question_key,
        answer_key=answer_key,
        text_key=text_key,
        use_chat_template=use_chat_template,
        date_string=date_string,
    )
    _check_two_scored_tokens(pairs, "Min-K%")
    pad = resolve_pad_token_id(tokenizer, "mia_scores")
    was_training = model.training
    model.eval()
    try:
        scored = score_answers(
            model,
            pairs,
            pad_token_id=pad,
            batch_size=batch_size,
            progress=progress,
            desc="MIA scores",
            vocab_stats=True,
        )
    finally:
        model.train(was_training)
    scores = {name: np.zeros(len(pairs), dtype=np.float64) for name in MIA_SCORES}
    for i, ((_, answer), lp, mu, sigma) in enumerate(zip(pairs, scored.logprobs, scored.mu, scored.sigma)):
        scores["loss"][i] = mia_loss(lp)
        scores["zlib"][i] = mia_zlib(lp, tokenizer.decode(answer, skip_special_tokens=True))
        scores["min_k"][i] = mia_min_k(lp[:-1], k)
        scores["min_k_plus_plus"][i] = mia_min_k_plus_plus(lp[:-1], mu[:-1], sigma[:-1], k)
    return scores


def mia_reference(
    model: torch.nn.Module,
    reference_model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts_or_dataset: TextsOrDataset,
    *,
    batch_size: int = 16,
    progress: bool = True,
    question_key: str = "question",
    answer_key: str = "answer",
    text_key: str = "text",
    use_chat_template: bool | None = None,
    date_string: str | None = DEFAULT_DATE_STRING,
) -> np.ndarray:
    """Reference-model membership-inference scores: `NLL_model(x) - NLL_reference(x)` per text.

    Each NLL is the teacher-forced mean NLL over the text's scored tokens (the answer tokens of question/answer
    rows; see [`encode_texts`]). The reference model calibrates for how hard a text is: a text the audited model
    finds much easier than the reference does is likely a member. This is open-unlearning's `mia_reference`
    (`src/evals/metrics/mia/reference.py`, `ReferenceAttack.compute_score`: `target_loss - ref_loss` of the
    per-sample average losses), after MIMIR's reference attack (Duan et al. 2024, arXiv 2402.07841). The reference
    is typically a model that never saw the forget set (the retain model, or the base model before fine-tuning).

    Loss-like, as every `mia_*` score of [`~hf_unlearn.evaluation.metrics`]: lower = more likely a member, so
    `mia_auc(scores(members), scores(non-members))` ([`~hf_unlearn.evaluation.metrics.mia_auc`]) is the attack's
    AUC. Passing the audited model as its own reference gives all zeros.

    Args:
        model: the audited model.
        reference_model: the reference model; it must use the same tokenizer (same vocabulary).
        tokenizer: their tokenizer.
        texts_or_dataset: plain strings, or a dataset / list of rows with question/answer (or text) columns.
        batch_size: sequences per forward pass.
        progress: show tqdm progress bars.
        question_key, answer_key, text_key, use_chat_template, date_string: see [`encode_texts`].

    Both models are scored in eval mode without gradients and left as they were. Returns a float64 array, one score
    per text.
    """
    if reference_model is None:
        raise ValueError(
            "mia_reference needs a reference model (e.g. the retain model, or the base model before fine-tuning); "
            "for the attack without one use `mia_loss`."
        )
    batch_size = _check_batch_size(batch_size)
    check_vocabulary(model, tokenizer)
    check_vocabulary(reference_model, tokenizer)
    pairs = encode_texts(
        tokenizer,
        texts_or_dataset,
        question_key=question_key,
        answer_key=answer_key,
        text_key=text_key,
        use_chat_template=use_chat_template,
        date_string=date_string,
    )
    pad = resolve_pad_token_id(tokenizer, "mia_reference")
    kwargs = dict(batch_size=batch_size, pad_token_id=pad, progress=progress)
    target = _answer_nll(model, pairs, desc="MIA reference: audited model", **kwargs)[0]
    reference = _answer_nll(reference_model, pairs, desc="MIA reference: reference model", **kwargs)[0]
    return target - reference


def mia_gradient_norm(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts_or_dataset: TextsOrDataset,
    p: float = 2,
    *,
    reduction: str = "tensor_mean",
    loss_tokens: str = "all_but_last",
    parameters: Iterable[torch.nn.Parameter] | None = None,
    progress: bool = True,
    question_key: str = "question",
    answer_key: str = "answer",
    text_key: str = "text",
    use_chat_template: bool | None = None,
    date_string: str | None = DEFAULT_DATE_STRING,
) -> np.ndarray:
    """Gradient-norm membership-inference scores: the norm of the gradient of each text's loss with respect to the
    model's parameters, by default exactly as open-unlearning computes it.

    The loss is the text's teacher-forced mean NLL over its scored tokens (see [`encode_texts`]), by default all but
    the last; one backward pass per text. A member sits near a minimum of its loss, so its gradient is small: the
    score is loss-like, as every `mia_*` score of [`~hf_unlearn.evaluation.metrics`] (lower = more likely a member),
    and `mia_auc(scores(members), scores(non-members))` ([`~hf_unlearn.evaluation.metrics.mia_auc`]) is the attack's
    AUC. This is open-unlearning's `mia_gradnorm` (`src/evals/metrics/mia/gradnorm.py`, `GradNormAttack`; Wang et
    al., arXiv 2402.17012; golden test in tests/test_golden_muse_mia.py), whose score is likewise the positive norm
    (its earliest version negated it, and its docstring still says "negative gradient norm"). On the tiny test model
    (21 parameter tensors) open-unlearning's score is about 6.4x smaller than the global norm of the gradient of the
    whole answer's loss, this function's default before it followed open-unlearning: 6.5x from the reduction, 2%
    from leaving the last token out.

    Args:
        model: the audited model.
        tokenizer: its tokenizer.
        texts_or_dataset: plain strings, or a dataset / list of rows with question/answer (or text) columns.
        p: the norm's order: any `p >= 1`, or `math.inf` (open-unlearning accepts 1, 2 and inf).
        reduction: `"tensor_mean"` (default): the mean over parameter tensors of each tensor's gradient p-norm,
            open-unlearning's (`torch.stack([param.grad.norm(p) ...]).mean()`); parameters the loss does not reach
            are left out of that mean, as there. `"global"`: the p-norm of the whole gradient (all parameters as one
            vector), which does not depend on how the parameters are split into tensors.
        loss_tokens: `"all_but_last"` (default): the loss averages every scored token but the last, as
            open-unlearning's `tokenwise_logprobs` gives them (it leaves the answer's closing EOS out; on a plain
            text, its last token); `"all"`: every scored token (the answer's mean NLL, as training and the other
            attacks read it).
        parameters: the parameters to differentiate against (default: every parameter of the model with
            `requires_grad`, e.g. a peft model's adapter weights only).
        progress: show a tqdm progress bar.
        question_key, answer_key, text_key, use_chat_template, date_string: see [`encode_texts`].

    The model runs in eval mode (no dropout; open-unlearning's newest version switches to train mode, which with
    dropout makes the score random) and is left in the mode it had. Gradients are taken with `torch.autograd.grad`,
    so every parameter's `.grad` is left as it was (open-unlearning's `zero_grad()` + `backward()` wipes them).
    Returns a float64 array, one score per text.
    """
    if reduction not in GRADIENT_NORM_REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(GRADIENT_NORM_REDUCTIONS)}, got {reduction!r}.")
    if loss_tokens not in GRADIENT_NORM_LOSS_TOKENS:
        raise ValueError(f"loss_tokens must be one of {list(GRADIENT_NORM_LOSS_TOKENS)}, got {loss_tokens!r}.")
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a number >= 1 or math.inf (the norm's order), got {p!r}.") from None
    if math.isnan(p) or p < 1:
        raise ValueError(f"p must be >= 1 or math.inf (the norm's order; 2 is the usual one), got {p}.")
    check_vocabulary(model, tokenizer)
    if parameters is None:
        params = [param for param in model.parameters() if param.requires_grad]
        if not params:
            raise ValueError(
                "None of the model's parameters requires grad, so there is no gradient to take the norm of: pass "
                "`parameters=` (e.g. `list(model.parameters())` after `requires_grad_(True)`) or unfreeze the model."
            )
    else:
        params = list(dict.fromkeys(parameters))  # tied weights once, in order
        if not params or not all(isinstance(param, torch.Tensor) and param.requires_grad for param in params):
            raise ValueError("`parameters` must be a non-empty collection of tensors that require grad.")
    pairs = encode_texts(
        tokenizer,
        texts_or_dataset,
        question_key=question_key,
        answer_key=answer_key,
        text_key=text_key,
        use_chat_template=use_chat_template,
        date_string=date_string,
    )
    if loss_tokens == "all_but_last":
        _check_two_scored_tokens(pairs, 'the gradient-norm attack (loss_tokens="all_but_last")')
    pad = resolve_pad_token_id(tokenizer, "mia_gradient_norm")
    scores = np.zeros(len(pairs), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for i, pair in enumerate(tqdm(pairs, desc="MIA gradient norm", disable=not progress, leave=False)):
            batch = pad_examples([pair], pad)
            with torch.enable_grad():
                logp, _ = answer_token_logprobs(model, batch)  # one row: its answer tokens, in order
                loss = -(logp[:-1] if loss_tokens == "all_but_last" else logp).mean()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            norms = [torch.linalg.vector_norm(g.detach().float(), ord=p) for g in grads if g is not None]
            if not norms:
                raise ValueError(
                    "The loss does not depend on any of the given parameters; pass parameters the model uses."
                )
            stacked = torch.stack([n.to(norms[0].device) for n in norms])
            value = torch.linalg.vector_norm(stacked, ord=p) if reduction == "global" else stacked.mean()
            scores[i] = float(value)
            del grads, logp, loss
    finally:
        model.train(was_training)
    return scores
