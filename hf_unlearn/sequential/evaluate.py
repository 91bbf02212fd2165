"""The evaluation of a model after a request: the full TOFU evaluation of the utility splits, every request's forget
questions (keyed as in [`hf_unlearn.sequential.plan`]), the forget metrics of each request and of all requests so
far against the retain model's on the same questions, and GRUN's gate firing matrix.

On MUSE data ([`evaluate_muse_model`], [`muse_sequence_metrics`]): MUSE's evaluation (KnowMem forget and retain,
VerbMem forget; PrivLeak when asked) and, per sustainability fold, the mean per-token NLL of its evaluated texts
([`text_nll`]).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..compare.config import CompareConfig
from .config import SequentialConfig
from .plan import Request

__all__ = [
    "FORGET_KEYS",
    "MUSE_PROMPT_WORDS",
    "as_prompt_completion",
    "evaluate_model",
    "evaluate_muse_model",
    "forget_metrics",
    "gate_matrix",
    "muse_sequence_metrics",
    "restrict",
    "sequence_metrics",
    "split_prefix",
    "text_nll",
]

#: The forget metrics computed per request and over the requests so far.
FORGET_KEYS = ("forget_probability", "forget_rougeL_recall", "forget_truth_ratio", "forget_quality")
#: MUSE, GRUN: a text's first this-many words are its prompt. GRUN edits and gates at the last prompt token and
#: refuses raw text (no prompt); a MUSE text becomes a prompt/completion row, as a VerbMem prompt is the beginning of
#: a forget text and its continuation the rest.
MUSE_PROMPT_WORDS = 32


def restrict(log: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A per-question TOFU log (metric -> {question key: value}) restricted to `keys` (those it has)."""
    return {metric: {k: values[k] for k in keys if k in values} for metric, values in log.items()}


def renumber(log: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`restrict(log, keys)` with the keys renumbered 0, 1, ... in the order given (the indices an evaluator
    gives the same questions when they are its whole split)."""
    return {metric: {str(i): values[k] for i, k in enumerate(keys) if k in values} for metric, values in log.items()}


def forget_metrics(log: Mapping[str, Any], retain_log: Mapping[str, Any] | None, keys: Sequence[str]) -> dict:
    """The forget-split metrics of the questions `keys` (TOFU's formulas: [`summarize_tofu_logs`]); forget quality
    is the KS test of their truth-ratio statistics against the retain model's on the same questions."""
    from ..evaluation.logs import split_truth_ratio_stats, summarize_tofu_logs

    mine = restrict(log, keys)
    retain_stats = None
    if retain_log is not None:
        theirs = restrict(retain_log, keys)
        missing = [k for k in keys if k not in theirs.get("avg_paraphrased_loss", theirs.get("truth_ratio", {}))]
        if missing:
            raise ValueError(f"The retain model's forget log lacks the question(s) {missing[:5]} of this sequence.")
        retain_stats = split_truth_ratio_stats(theirs, "forget")
    summary = summarize_tofu_logs({"forget": mine}, retain_stats)
    return {key: summary.get(key) for key in FORGET_KEYS}


def sequence_metrics(
    log: Mapping[str, Any], retain_log: Mapping[str, Any] | None, requests: Sequence[Request], done: int
) -> dict[str, Any]:
    """After `done` requests: the forget metrics of every request (`per_request`, with `seen`), of the requests so
    far together (`cumulative`: forget quality is the KS test of their concatenated truth-ratio statistics against
    the retain model's on the same questions) and of every request's questions (`all_requests`)."""
    per_request = [
        {"request": r.number, "seen": r.number <= done, **forget_metrics(log, retain_log, r.keys)} for r in requests
    ]
    seen = [k for r in requests[:done] for k in r.keys]
    every = [k for r in requests for k in r.keys]
    return {
        "per_request": per_request,
        "cumulative": forget_metrics(log, retain_log, seen) if seen else None,
        "all_requests": forget_metrics(log, retain_log, every),
    }


def _forget_rows(requests: Sequence[Request]):
    from datasets import concatenate_datasets

    return concatenate_datasets([r.evaluation for r in requests])


def evaluate_model(
    model, tokenizer, config: CompareConfig, requests: Sequence[Request], output_dir: Path | None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[list[int]]]]:
    """Evaluate `model` on the comparison's utility splits (capped at `max_questions`) and on every request's forget
    questions. Returns the utility summary (with `retain_utility`), the forget log keyed by question key, and the
    prompts' token ids (`request_<n>` and `retain`, for the gates). Writes the logs into `output_dir`."""
    from ..compare.worker import add_utilities, evaluator_kwargs
    from ..evaluation.logs import summarize_tofu_logs, write_tofu_logs
    from ..evaluation.tofu import TOFUEvaluator

    splits = [s for s in config.eval_splits() if s != "forget"]
    utility = TOFUEvaluator(model, tokenizer, progress=False, **evaluator_kwargs(config, splits))
    logs = utility.compute_logs()
    summary = add_utilities(summarize_tofu_logs(logs))
    kwargs = evaluator_kwargs(config, ["forget"])
    kwargs["datasets"] = {**kwargs.get("datasets", {}), "forget": _forget_rows(requests)}
    kwargs["max_questions"] = None  # each request's rows are already cut to max_questions
    forget = TOFUEvaluator(model, tokenizer, progress=False, **kwargs)
    keys = [k for r in requests for k in r.keys]
    position_log = forget.compute_logs()["forget"]
    forget_log = {m: {keys[int(i)]: v for i, v in values.items()} for m, values in position_log.items()}
    if output_dir is not None:
        write_tofu_logs({**logs, "forget": forget_log}, output_dir)
    prompts: dict[str, list[list[int]]] = {"retain": [q.prompt_ids for q in utility.questions.get("retain", [])]}
    questions = iter(forget.questions["forget"])
    for request in requests:
        prompts[f"request_{request.number}"] = [next(questions).prompt_ids for _ in request.keys]
    summary = {k: v for k, v in summary.items() if not k.startswith("forget_") and k not in ("split",)}
    return summary, forget_log, prompts


def split_prefix(text: str, words: int = MUSE_PROMPT_WORDS) -> tuple[str, str]:
    """`text` cut after its first `words` words (at most half of them in a short text, so that a continuation is
    left): (prompt, completion), the completion keeping its leading whitespace."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    n = min(words, max(1, len(ends) // 2))
    cut = ends[n - 1] if ends else 0
    return text[:cut], text[cut:]


def as_prompt_completion(texts):
    """A `Dataset` of texts as GRUN's `prompt` / `completion` rows ([`split_prefix`])."""
    from datasets import Dataset

    pairs = [split_prefix(t) for t in texts["text"]]
    return Dataset.from_dict({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]})


def text_nll(model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 8) -> dict[str, float]:
    """The mean per-token negative log-likelihood of `texts` (teacher-forced; each encoded with the tokenizer's
    special tokens and cut to `max_length` tokens, as training cuts them; every token after the first is scored,
    pooled over the texts). Returns `{"nll": ..., "tokens": ..., "texts": ...}`.

    A MUSE sustainability fold is raw news text with no questions: this is its per-fold forget measure (the
    TOFU metrics need QA pairs; MUSE's KnowMem / VerbMem exist only for the standard forget set). A GRUN model edits
    at the last token of each text's [`split_prefix`] prompt, where it trained on MUSE text (it scores the same
    tokens: the edit reaches the tokens after it)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    grun = hasattr(model, "gate_values")
    encoded, edits = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_length]
        if len(ids) > 1:  # a one-token text has nothing teacher-forced to score
            encoded.append(ids)
            if grun:
                prompt = tokenizer(split_prefix(text)[0], add_special_tokens=True)["input_ids"]
                edits.append(min(len(prompt), len(ids)) - 1)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                batch = encoded[start : start + batch_size]
                width = max(len(ids) for ids in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, row in enumerate(batch):
                    ids[i, : len(row)] = torch.tensor(row)
                    mask[i, : len(row)] = 1
                labels = ids.masked_fill(mask == 0, -100)
                labels[:, 0] = -100
                ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
                extra = {"intervention_positions": edits[start : start + batch_size]} if grun else {}
                logits = model(input_ids=ids, attention_mask=mask, **extra).logits[:, :-1].float()
                scored = labels[:, 1:] != -100
                losses = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), labels[:, 1:].clamp(min=0), reduction="none"
                )
                total += float((losses * scored).sum())
                count += int(scored.sum())
    finally:
        model.train(was_training)
    return {"nll": total / count if count else None, "tokens": count, "texts": len(texts)}


def training_max_length(config: SequentialConfig) -> int:
    """The length texts are cut to in training (`training.max_length`, else `UnlearningConfig`'s default)."""
    from ..config import UnlearningConfig

    return int(config.training.get("max_length") or UnlearningConfig.__dataclass_fields__["max_length"].default)


def evaluate_muse_model(
    model,
    tokenizer,
    config: SequentialConfig,
    requests: Sequence[Request],
    output_dir: Path | None,
    retain_auc: Any = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, list[list[int]]]]:
    """MUSE: evaluate `model` with `MUSEEvaluator` (KnowMem forget and retain, VerbMem forget, and PrivLeak when
    `config.privleak`, relative to `retain_auc`) and every fold's NLL ([`text_nll`], texts cut to the training's
    `max_length`). Returns the MUSE summary, the per-fold NLL (request number -> [`text_nll`]'s dict) and, for a
    GRUN model, its gate prompts (each fold's and the retain texts' [`split_prefix`] prompts, as `request_<n>` and
    `retain`; empty for other models). Writes the logs into `output_dir`."""
    from ..compare.worker import muse_kwargs
    from ..evaluation.muse import MUSEEvaluator, load_muse

    cc = config.compare_config()
    metrics = ["knowmem", "verbmem"] + (["privleak"] if config.privleak else [])
    evaluator = MUSEEvaluator(model, tokenizer, metrics=metrics, progress=False, **muse_kwargs(cc))
    summary = dict(evaluator.evaluate(output_dir=output_dir, retain_auc=retain_auc if config.privleak else None))
    max_length = training_max_length(config)
    batch_size = min(config.data.eval_batch_size, 8)  # full-length texts: their logits are large
    folds = {str(r.number): text_nll(model, tokenizer, r.evaluation["text"], max_length, batch_size) for r in requests}
    if output_dir is not None:
        from ..io import write_json_atomic

        write_json_atomic(Path(output_dir) / "fold_nll.json", folds)

    if not hasattr(model, "gate_values"):
        return summary, folds, {}

    def starts(texts: Sequence[str]) -> list[list[int]]:
        return [tokenizer(split_prefix(t)[0], add_special_tokens=True)["input_ids"][:max_length] for t in texts]

    retain_texts = [row["text"] for row in load_muse("raw", config.data.muse_splits()[1], config.data.data_dir)]
    prompts = {"retain": starts(retain_texts[: config.data.max_questions or len(retain_texts)])}
    prompts.update({f"request_{r.number}": starts(r.evaluation["text"]) for r in requests})
    return summary, folds, prompts


def muse_sequence_metrics(
    folds: Mapping[str, Mapping[str, Any]], requests: Sequence[Request], done: int
) -> dict[str, Any]:
    """MUSE, after `done` requests: each fold's NLL (`per_request`, with `seen` and the fold's split; higher: more
    forgotten) and the NLL of every fold's texts pooled (`all_requests`). `cumulative` is None: cumulative forget
    quality is TOFU's (the KS test of QA truth ratios), which raw-text folds do not have."""
    per_request = [
        {"request": r.number, "split": r.split, "seen": r.number <= done, **folds[str(r.number)]} for r in requests
    ]
    tokens = sum(p["tokens"] for p in per_request)
    pooled = sum(p["nll"] * p["tokens"] for p in per_request if p["nll"] is not None) / tokens if tokens else None
    return {"per_request": per_request, "cumulative": None, "all_requests": {"nll": pooled, "tokens": tokens}}


def gate_matrix(model, prompts: Mapping[str, Sequence[list[int]]], pad_token_id: int, batch_size: int = 32) -> dict:
    """GRUN's gates on groups of prompts: `mean[i][group]` the mean gate s_i(h) (over the request's edited layers and
    the prompts) of request i on the group, `fires[i][group]` the share of prompts whose mean gate exceeds 0.5.
    Gates are read at the last prompt token, where GRUN edits. Module i is the i-th GRUN request of the model (a
    request that stopped at its start, already forgotten, adds none)."""
    device = next(model.parameters()).device
    out: dict[str, dict[str, list[float]]] = {"mean": {}, "fires": {}}
    per_group: dict[str, np.ndarray] = {}
    was_training = model.training
    model.eval()
    try:
        for group, rows in prompts.items():
            per_group[group] = _gates(model, rows, pad_token_id, batch_size, device)
    finally:
        model.train(was_training)
    for index in range(len(model.requests)):
        name = f"request_{index + 1}"
        out["mean"][name] = {g: float(v[index].mean()) if v.size else None for g, v in per_group.items()}
        out["fires"][name] = {g: float((v[index] > 0.5).mean()) if v.size else None for g, v in per_group.items()}
    return out


def _gates(model, rows: Sequence[list[int]], pad_token_id: int, batch_size: int, device) -> np.ndarray:
    """`[requests, prompts]`: each request's gate, averaged over its layers, at each prompt's last token."""
    import torch

    values = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r) for r in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):  # right padding: the last attended token is the last prompt token
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        gates = model.gate_values(input_ids=ids.to(device), attention_mask=mask.to(device))
        values.append(np.stack([g.mean(dim=-1).cpu().numpy() for g in gates]))
    return np.concatenate(values, axis=1) if values else np.zeros((len(model.requests), 0))
