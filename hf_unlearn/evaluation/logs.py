"""TOFU per-question evaluation logs: layout, reading (ours or published by others) and the summary computed from them.

Layout (the one of TOFU's published logs, `locuslab/tofu` `data/*/eval_results/ds_size300/`): one JSON file per
split, each a dict `metric -> {question index as a string -> value}`.

========================================  =================================================================
file                                      split
========================================  =================================================================
`eval_log.json`                         retain (`retain_perturbed`)
`eval_log_forget.json`                  forget (`forgetNN_perturbed`)
`eval_real_author_wo_options.json`      real authors (`real_authors_perturbed`)
`eval_real_world_wo_options.json`       world facts (`world_facts_perturbed`)
========================================  =================================================================

Metrics (per question):

* `avg_gt_loss`: mean-NLL (per answer token) of the answer; `gt_loss` the sum, `num_token_gt` the token count.
* `avg_paraphrased_loss`: mean-NLL of the paraphrased answer (on real authors / world facts TOFU uses the answer
  itself); `paraphrased_loss`, `num_token_paraphrased` likewise.
* `average_perturb_loss`: list of the mean-NLLs of the perturbed answers; `perturb_loss`, `num_token_perturb`.
* `truth_ratio`: as TOFU logs it, `exp(avg_paraphrased_loss - mean(average_perturb_loss))` = P_perturbed /
  P_paraphrased, i.e. the INVERSE of the statistic of [`~hf_unlearn.evaluation.metrics.truth_ratio_stat`]
  (open-unlearning's per-question truth-ratio `score` is the same number). The summary never reads it when the
  losses are there; it recomputes the statistic from the losses, as TOFU's aggregation does.
* `rougeL_recall`: ROUGE-L recall of the greedy generation against the answer.
* `generated_text`: `[input text, generation, ground-truth answer]`.
* `normalized_gt_loss` (real authors / world facts): `-log` of the answer's probability normalised over the
  options.

Besides these, a directory written by [`~hf_unlearn.evaluation.tofu.TOFUEvaluator`] holds
`eval_log_aggregated.json` (TOFU's `{file name: log}` bundle, readable by TOFU's own `aggregate_eval_stat.py`)
and `summary.json`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import AGGREGATED_LOG_FILE, EVAL_SUMMARY_FILE
from ..io import write_json_atomic
from .metrics import (
    TOFU_UTILITY_KEYS,
    answer_probability,
    forget_quality,
    normalized_option_probability,
    rouge_l_recall,
    tofu_model_utility,
    truth_ratio_forget,
    truth_ratio_retain,
    truth_ratio_stat,
)
from .record import RECORD_KEY, read_record, warn_if_incomparable

__all__ = [
    "TOFU_LOG_FILES",
    "TOFU_SPLITS",
    "load_retain_truth_ratio_stats",
    "per_question_probability",
    "per_question_rouge_l_recall",
    "read_tofu_logs",
    "split_truth_ratio_stats",
    "summarize_tofu_logs",
    "tofu_summary_from_logs",
    "write_tofu_logs",
]

#: The four TOFU evaluation splits, in the order TOFU evaluates them.
TOFU_SPLITS: tuple[str, ...] = ("retain", "real_authors", "world_facts", "forget")

#: Split -> log file name (TOFU's names).
TOFU_LOG_FILES: dict[str, str] = {
    "retain": "eval_log.json",
    "real_authors": "eval_real_author_wo_options.json",
    "world_facts": "eval_real_world_wo_options.json",
    "forget": "eval_log_forget.json",
}
# open-unlearning writes one TOFU_EVAL.json whose "forget_truth_ratio" holds per-question truth ratios (P_pert/P_para).
_OPEN_UNLEARNING_FILE = "TOFU_EVAL.json"

# On these splits the "probability" is the answer's probability normalised over the options (TOFU's
# "eval_log" files use the plain probability).
_OPTION_SPLITS = ("real_authors", "world_facts")


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): give TOFU evaluation logs.") from err


# ----------------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------------


def read_tofu_logs(logs_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Read TOFU per-question logs: split -> log (`metric -> {index: value}`).

    `logs_dir` may be a directory holding the per-split files (:data:`TOFU_LOG_FILES`) or TOFU's
    `eval_log_aggregated.json`, or the path of such an aggregated file or of one per-split file. Splits whose file is
    absent are left out; a directory with none of them is an error that lists what it does hold.
    """
    path = Path(logs_dir)
    by_file = {name: split for split, name in TOFU_LOG_FILES.items()}
    if path.is_file():
        if path.name in by_file:
            return {by_file[path.name]: _check_log(_load_json(path), path)}
        return _from_aggregated(_load_json(path), path)
    if not path.is_dir():
        raise FileNotFoundError(f"TOFU logs directory {path} does not exist.")
    logs = {
        split: _check_log(_load_json(path / name), path / name)
        for split, name in TOFU_LOG_FILES.items()
        if (path / name).is_file()
    }
    if not logs and (path / AGGREGATED_LOG_FILE).is_file():
        logs = _from_aggregated(_load_json(path / AGGREGATED_LOG_FILE), path / AGGREGATED_LOG_FILE)
    if not logs:
        found = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(
            f"No TOFU evaluation logs in {path}: expected any of {sorted(TOFU_LOG_FILES.values())} or "
            f"{AGGREGATED_LOG_FILE}; found {found or 'nothing'}."
        )
    return logs


def _from_aggregated(bundle: Any, path: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(bundle, Mapping):
        raise ValueError(f"{path} must hold a JSON object, got {type(bundle).__name__}")
    logs = {}
    for split, name in TOFU_LOG_FILES.items():
        # TOFU's aggregated file keys its logs by file name ("eval_log.json"); accept the stem too.
        log = bundle.get(name, bundle.get(name.removesuffix(".json")))
        if log is not None:
            logs[split] = _check_log(log, path)
    if not logs:
        raise ValueError(
            f"{path} holds none of the TOFU logs {sorted(TOFU_LOG_FILES.values())}; its keys are {sorted(bundle)}"
        )
    return logs


def _check_log(log: Any, where: Path) -> dict[str, Any]:
    if not isinstance(log, Mapping):
        raise ValueError(f"{where}: a TOFU log must be a JSON object metric -> {{question index: value}}.")
    # Entries that are not per-question (a scalar someone added) are not TOFU metrics: leave them out.
    return {k: v for k, v in log.items() if isinstance(v, Mapping)}


def _require(log: Mapping[str, Any], split: str, name: str, why: str) -> dict[str, Any]:
    values = log.get(name)
    if values is None:
        raise ValueError(
            f"The {split} log ({TOFU_LOG_FILES[split]}) has no {name!r}, needed for the {why}; it has {sorted(log)}."
        )
    return values


def _ordered_keys(*metrics: Mapping[str, Any]) -> list[str]:
    """Question indices present (and not None) in every metric, in numeric order."""
    keys = set(metrics[0])
    for m in metrics[1:]:
        keys &= set(m)
    keys = {k for k in keys if all(m[k] is not None for m in metrics)}
    return sorted(keys, key=lambda k: (int(k), k) if str(k).lstrip("-").isdigit() else (math.inf, str(k)))


def _perturbed(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]


def split_truth_ratio_stats(log: Mapping[str, Any], split: str = "forget") -> np.ndarray:
    """Per-question truth-ratio statistics `exp(mean(perturbed mean-NLLs) - paraphrased mean-NLL)` of one log.

    Computed from `avg_paraphrased_loss` (on real authors / world facts `avg_gt_loss` when absent: TOFU uses the
    answer there) and `average_perturb_loss`, as TOFU's aggregation does. Logs without the losses fall back to
    the logged per-question `truth_ratio` (TOFU / open-unlearning's P_perturbed / P_paraphrased, so 1 / stat).
    """
    para = log.get("avg_paraphrased_loss")
    if para is None and split in _OPTION_SPLITS:
        para = log.get("avg_gt_loss")
    pert = log.get("average_perturb_loss")
    if para is not None and pert is not None:
        keys = _ordered_keys(para, pert)
        if not keys:
            raise ValueError(f"The {split} log has no question with both a paraphrased and perturbed loss.")
        return np.array([truth_ratio_stat(float(para[k]), _perturbed(pert[k])) for k in keys])
    ratio = log.get("truth_ratio")
    if ratio is None:
        raise ValueError(
            f"The {split} log ({TOFU_LOG_FILES.get(split, split)}) can give no truth ratio: it needs "
            f"'avg_paraphrased_loss' and 'average_perturb_loss' (or a per-question 'truth_ratio'); "
            f"it has {sorted(log)}."
        )
    keys = _ordered_keys(ratio)
    values = np.array([float(ratio[k]["score"] if isinstance(ratio[k], Mapping) else ratio[k]) for k in keys])
    with np.errstate(divide="ignore"):
        return 1.0 / values


def per_question_rouge_l_recall(log: Mapping[str, Any], split: str) -> list[float]:
    """ROUGE-L recall of each question of a TOFU split's log, in question order (recomputed from
    `generated_text` when the log has no `rougeL_recall`)."""
    rouge = log.get("rougeL_recall")
    if rouge is not None:
        return [float(rouge[k]) for k in _ordered_keys(rouge)]
    generated = log.get("generated_text")
    if generated is None:
        raise ValueError(
            f"The {split} log ({TOFU_LOG_FILES[split]}) has neither 'rougeL_recall' nor 'generated_text' to compute "
            f"it from; it has {sorted(log)}."
        )
    keys = _ordered_keys(generated)
    # TOFU stores [input, generation, ground truth] per question.
    return rouge_l_recall([str(generated[k][1]) for k in keys], [str(generated[k][2]) for k in keys])


def per_question_probability(log: Mapping[str, Any], split: str) -> list[float]:
    """TOFU's probability of each question of a split's log, in question order: exp(-answer loss), or, on the
    real-author and world-fact splits, the correct answer's share among the options."""
    gt = _require(log, split, "avg_gt_loss", "probability")
    if split not in _OPTION_SPLITS:
        return [float(answer_probability(float(gt[k]))) for k in _ordered_keys(gt)]
    pert = _require(log, split, "average_perturb_loss", "probability normalised over the options")
    return [normalized_option_probability(float(gt[k]), _perturbed(pert[k])) for k in _ordered_keys(gt, pert)]


def _split_metrics(log: Mapping[str, Any], split: str) -> dict[str, float]:
    stats = split_truth_ratio_stats(log, split)
    aggregate = truth_ratio_forget if split == "forget" else truth_ratio_retain
    return {
        f"{split}_probability": float(np.mean(per_question_probability(log, split))),
        f"{split}_rougeL_recall": float(np.mean(per_question_rouge_l_recall(log, split))),
        f"{split}_truth_ratio": aggregate(stats),
    }


def load_retain_truth_ratio_stats(retain_logs: str | Path) -> np.ndarray:
    """The retain model's per-question forget-split truth-ratio statistics, for forget quality.

    Accepts what [`read_tofu_logs`] accepts (it must hold the forget log, `eval_log_forget.json`), and also
    open-unlearning's `TOFU_EVAL.json` (its `forget_truth_ratio` per-question scores, 1 / stat) or a directory
    holding one.
    """
    path = Path(retain_logs)
    ou_file = path / _OPEN_UNLEARNING_FILE if path.is_dir() else path
    if ou_file.is_file() and ou_file.name == _OPEN_UNLEARNING_FILE:
        data = _load_json(ou_file)
        entry = data.get("forget_truth_ratio") if isinstance(data, Mapping) else None
        if not isinstance(entry, Mapping) or "value_by_index" not in entry:
            raise ValueError(f"{ou_file} has no 'forget_truth_ratio' with 'value_by_index'.")
        return split_truth_ratio_stats({"truth_ratio": entry["value_by_index"]}, "forget")
    logs = read_tofu_logs(path)
    if "forget" not in logs:
        raise ValueError(
            f"The retain logs at {path} hold no forget-split log ({TOFU_LOG_FILES['forget']}); forget quality "
            "compares the forget-split truth ratios of the unlearned and the retain model."
        )
    return split_truth_ratio_stats(logs["forget"], "forget")


# ----------------------------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------------------------


def summarize_tofu_logs(
    logs: Mapping[str, Mapping[str, Any]],
    retain_stats: np.ndarray | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """The TOFU summary from per-question logs (split -> log), with TOFU's formulas.

    Keys: the nine :data:`~hf_unlearn.evaluation.metrics.TOFU_UTILITY_KEYS` and `model_utility` (None when a
    non-forget split is missing), `forget_probability`, `forget_rougeL_recall`, `forget_truth_ratio`,
    `forget_quality` (None without `retain_stats`, the retain model's forget-split statistics), `split` (the
    forget split's name, as given) and `num_questions` (split -> number of questions).
    """
    unknown = sorted(set(logs) - set(TOFU_SPLITS))
    if unknown:
        raise ValueError(f"Unknown TOFU split(s) {unknown}; expected some of {list(TOFU_SPLITS)}.")
    summary: dict[str, Any] = {}
    for name in TOFU_SPLITS:
        if name in logs:
            summary.update(_split_metrics(logs[name], name))
    have_utility = all(k in summary for k in TOFU_UTILITY_KEYS)
    summary["model_utility"] = tofu_model_utility(summary) if have_utility else None
    summary["forget_quality"] = None
    if retain_stats is not None:
        if "forget" not in logs:
            raise ValueError("Forget quality needs the forget-split log of the evaluated model; there is none.")
        ours = split_truth_ratio_stats(logs["forget"], "forget")
        if len(ours) != len(retain_stats):
            warnings.warn(
                f"Forget quality compares {len(ours)} forget questions with {len(retain_stats)} of the retain model; "
                "the two evaluations used different question sets (e.g. another max_questions / ds_size).",
                stacklevel=2,
            )
        summary["forget_quality"] = forget_quality(ours, retain_stats)
    summary["split"] = split
    summary["num_questions"] = {name: _num_questions(logs[name]) for name in TOFU_SPLITS if name in logs}
    return summary


def _num_questions(log: Mapping[str, Any]) -> int:
    for name in ("avg_gt_loss", "avg_paraphrased_loss", "rougeL_recall", "truth_ratio", "generated_text"):
        if name in log:
            return len(log[name])
    return max((len(v) for v in log.values()), default=0)


def tofu_summary_from_logs(logs_dir: str | Path, retain_logs_dir: str | Path | None = None) -> dict[str, Any]:
    """The TOFU summary of a model from its per-question logs alone (the logic of `hf-unlearn tofu-summary`).

    Args:
        logs_dir: the evaluated model's logs (see [`read_tofu_logs`]): ours or TOFU's published ones.
        retain_logs_dir: the retain model's logs (see [`load_retain_truth_ratio_stats`]), for forget quality;
            None leaves `forget_quality` None.

    Returns the dict of [`summarize_tofu_logs`]; `split` and the evaluation record (how the logs were made:
    `hf_unlearn.evaluation.record`) come from a `summary.json` beside the logs when there is one. A warning says
    when the retain logs were made with other data or settings.
    """
    logs = read_tofu_logs(logs_dir)
    retain_stats = load_retain_truth_ratio_stats(retain_logs_dir) if retain_logs_dir is not None else None
    split = None
    summary_file = Path(logs_dir) / EVAL_SUMMARY_FILE
    if summary_file.is_file():
        previous = _load_json(summary_file)
        split = previous.get("split") if isinstance(previous, Mapping) else None
    record = read_record(logs_dir)
    if retain_logs_dir is not None:
        warn_if_incomparable(record, retain_logs_dir)
    summary = summarize_tofu_logs(logs, retain_stats, split=split)
    if record is not None:
        summary[RECORD_KEY] = record
    return summary


# ----------------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------------


def write_tofu_logs(
    logs: Mapping[str, Mapping[str, Any]], output_dir: str | Path, summary: Mapping[str, Any] | None = None
) -> Path:
    """Write per-split log files, TOFU's `eval_log_aggregated.json` and (when given) `summary.json`; the
    summary's evaluation record (how the logs were made) goes into the aggregated log too."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, log in logs.items():
        _dump(log, out / TOFU_LOG_FILES[split])
    bundle: dict[str, Any] = {TOFU_LOG_FILES[split]: log for split, log in logs.items()}
    record = (summary or {}).get(RECORD_KEY)
    if record is not None:  # how the logs were made; TOFU's readers look up their files by name only
        bundle[RECORD_KEY] = record
    _dump(bundle, out / AGGREGATED_LOG_FILE)
    if summary is not None:
        _dump(summary, out / EVAL_SUMMARY_FILE)
    return out


def _dump(obj: Any, path: Path) -> None:
    write_json_atomic(path, obj, indent=4)
