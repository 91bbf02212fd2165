"""The one scoring path: teacher-forced log-probabilities of answers given their prompts, for every model kind.

Every consumer that scores `(prompt, answer)` pairs goes through here: the TOFU evaluator (its evaluation, logs and
callback), MUSE's PrivLeak, the membership-inference and robustness attacks, the G-effect's risks, TOFU-mini's
trajectories and the lm-eval wrapper. The forward is the one a model's method declares
([`hf_unlearn.methods.answer_forward_kwargs`]): a GRUN model is told where each prompt ends, so that its edit lands
on the last prompt token exactly as in training.

- [`answer_forward`]: the forward itself, for readers of hidden states (the logit lens);
- [`answer_token_logprobs`]: one padded batch, differentiable (the G-effect and the gradient-norm attack).
- [`score_answers`]: many pairs, batched by length without gradients; per-answer-token log-probabilities,
  whether the greedy continuation is the answer, and (on request) the mean and spread of each position's log-probs
  over the vocabulary (Min-K%++).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..constants import IGNORE_INDEX
from ..data import pad_examples
from ..methods import answer_forward_kwargs
from .metrics import min_k_plus_plus_stats
from .model_io import accepts_logits_to_keep, model_device

__all__ = ["AnswerScores", "Pair", "answer_forward", "answer_token_logprobs", "score_answers"]

#: `(prompt_ids, answer_ids)`: the answer's tokens are scored given the prompt's.
Pair = tuple[Sequence[int], Sequence[int]]


def answer_forward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], min_prompt_length: int | None = None, **kwargs: Any
) -> Any:
    """The model's forward over a right-padded batch with labels (prompt tokens -100; the labels are not passed to
    the model), with what its method needs to score answers; logits only from the last prompt token on when the
    model takes `logits_to_keep` and `min_prompt_length` (the shortest prompt of the batch) is given. The batch
    must be on the model's device. The forward of every consumer that scores answers, hidden-state readers (the
    logit lens) included."""
    width = batch["input_ids"].shape[1]
    if min_prompt_length is not None and accepts_logits_to_keep(model):
        # positions before the last prompt token predict no answer token
        kwargs["logits_to_keep"] = width - max(min_prompt_length, 1) + 1
    return model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        use_cache=False,
        **answer_forward_kwargs(model, batch["labels"], batch["attention_mask"]),
        **kwargs,
    )


def _answer_positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(predicting_logits, targets, rows)` of the answer tokens: `logits[:, j]` predicts the token after position
    `width - kept + j` (all positions when every logit was kept)."""
    width = labels.shape[1]
    targets = labels[:, width - logits.shape[1] + 1 :].to(logits.device)
    mask = targets != IGNORE_INDEX
    return logits[:, :-1][mask], targets[mask], mask.nonzero()[:, 0]


def answer_token_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], **forward_kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(logp, rows)`: the float32 log-probability of every answer token of a right-padded batch (`input_ids`,
    `attention_mask`, `labels` with prompt and padding tokens -100, as [`~hf_unlearn.data.pad_examples`] builds
    it), flattened row by row, and the row of each. Differentiable; the model's method decides the forward (see the
    module docstring). `forward_kwargs` go to the model."""
    device = model_device(model)
    batch = {key: value.to(device) for key, value in batch.items()}
    outputs = answer_forward(model, batch, None, **forward_kwargs)
    logits, targets, rows = _answer_positions(outputs.logits, batch["labels"])
    return -F.cross_entropy(logits.float(), targets, reduction="none"), rows


@dataclass
class AnswerScores:
    """What [`score_answers`] returns, in the order of the pairs.

    Attributes:
        logprobs: each answer's per-token log-probabilities (float64 arrays of `len(answer)` values).
        greedy: whether each answer is the model's greedy continuation of its prompt (every token the argmax).
        mu, sigma: with `vocab_stats=True`, per answer token the mean and standard deviation of log p over the
            vocabulary at the position that predicts it ([`~hf_unlearn.evaluation.metrics.min_k_plus_plus_stats`]);
            else None.
    """

    logprobs: list[np.ndarray]
    greedy: np.ndarray
    mu: list[np.ndarray] | None = None
    sigma: list[np.ndarray] | None = None

    @property
    def sum_nll(self) -> np.ndarray:
        """The NLL of each answer (sum over its tokens)."""
        return np.array([-lp.sum() for lp in self.logprobs], dtype=np.float64)

    @property
    def num_tokens(self) -> np.ndarray:
        return np.array([lp.size for lp in self.logprobs], dtype=np.int64)

    @property
    def mean_nll(self) -> np.ndarray:
        """The per-token mean NLL of each answer."""
        return self.sum_nll / np.maximum(self.num_tokens, 1)

    @property
    def probability(self) -> np.ndarray:
        """TOFU's probability of each answer: exp(-mean NLL)."""
        return np.exp(-self.mean_nll)


@torch.no_grad()
def score_answers(
    model: torch.nn.Module,
    pairs: Sequence[Pair],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
    on_batch: Callable[[list[int], Any], None] | None = None,
    vocab_stats: bool = False,
) -> AnswerScores:
    """Teacher-forced log-probabilities of each answer's tokens given its prompt, for any model kind.

    Pairs are sorted by length (longest first) and scored `batch_size` at a time with right padding, in the mode
    the model is in (evaluators put it in eval mode). A model that takes `logits_to_keep` (transformers' causal LMs,
    through peft and GRUN too) computes logits only from the last prompt token on; only the answer positions' logits
    are upcast to float32.

    Args:
        model: a transformers, peft or GRUN model, or any module whose forward takes `input_ids` and
            `attention_mask` and returns `.logits`.
        pairs: `(prompt_ids, answer_ids)`; every prompt and answer has at least one token.
        pad_token_id: the id padding is filled with (masked out).
        batch_size: pairs per forward pass.
        progress, desc: a progress bar and its label.
        on_batch: called as `on_batch(indices, outputs)` after each forward (`indices` into `pairs`), e.g. to read
            a GRUN model's `gate_logits`.
        vocab_stats: also return `mu` and `sigma` (Min-K%++'s statistics of each answer position).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    empty = [i for i, (prompt, answer) in enumerate(pairs) if len(prompt) == 0 or len(answer) == 0]
    if empty:
        raise ValueError(
            f"Pair(s) {empty[:5]} have an empty prompt or answer: every answer is scored given at least one token."
        )
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    logprobs: list[np.ndarray] = [np.zeros(0)] * len(pairs)
    greedy = np.zeros(len(pairs), dtype=bool)
    mu: list[np.ndarray] | None = [np.zeros(0)] * len(pairs) if vocab_stats else None
    sigma: list[np.ndarray] | None = [np.zeros(0)] * len(pairs) if vocab_stats else None
    device = model_device(model)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = order[start : start + batch_size]
        batch = pad_examples([(list(pairs[i][0]), list(pairs[i][1])) for i in chunk], pad_token_id)
        batch = {key: value.to(device) for key, value in batch.items()}
        outputs = answer_forward(model, batch, min(len(pairs[i][0]) for i in chunk))
        logits, targets, rows = _answer_positions(outputs.logits, batch["labels"])
        token_logp = -F.cross_entropy(logits.float(), targets, reduction="none")
        hits = (logits.argmax(dim=-1) == targets).cpu().numpy()
        values = token_logp.double().cpu().numpy()
        rows = rows.cpu().numpy()
        if vocab_stats:
            mus, sigmas = (t.double().cpu().numpy() for t in min_k_plus_plus_stats(logits))
        for row, i in enumerate(chunk):
            logprobs[i] = values[rows == row]
            greedy[i] = bool(hits[rows == row].all())
            if vocab_stats:
                mu[i], sigma[i] = mus[rows == row], sigmas[rows == row]
        if on_batch is not None:
            on_batch(chunk, outputs)
    return AnswerScores(logprobs, greedy, mu, sigma)
