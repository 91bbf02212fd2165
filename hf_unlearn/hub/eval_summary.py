"""Evaluation summaries (`summary.json` of the TOFU and MUSE evaluators) for model cards: finding, reading, and
turning them into `model-index` entries."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from ..constants import EVAL_SUMMARY_FILE
from .folder import read_json

__all__ = [
    "MUSE_DATASET_ID",
    "MUSE_SUMMARY_METRICS",
    "TOFU_DATASET_ID",
    "TOFU_METRICS",
    "eval_results_from_summary",
    "find_eval_summary",
    "load_eval_summary",
    "summary_benchmark",
]

TOFU_DATASET_ID = "locuslab/TOFU"
MUSE_DATASET_ID = "muse-bench/MUSE-News"

#: TOFU summary keys reported in `model-index`, in this order, with their display names.
TOFU_METRICS: dict[str, str] = {
    "forget_quality": "Forget quality",
    "model_utility": "Model utility",
    "forget_rougeL_recall": "Forget ROUGE-L recall",
    "forget_probability": "Forget probability",
    "forget_truth_ratio": "Forget truth ratio",
    "retain_rougeL_recall": "Retain ROUGE-L recall",
    "retain_probability": "Retain probability",
    "retain_truth_ratio": "Retain truth ratio",
    "real_authors_rougeL_recall": "Real authors ROUGE-L recall",
    "real_authors_probability": "Real authors probability",
    "real_authors_truth_ratio": "Real authors truth ratio",
    "world_facts_rougeL_recall": "World facts ROUGE-L recall",
    "world_facts_probability": "World facts probability",
    "world_facts_truth_ratio": "World facts truth ratio",
}

#: MUSE summary keys (hf_unlearn.evaluation.MUSEEvaluator) reported in `model-index`, with their display names.
MUSE_SUMMARY_METRICS: dict[str, str] = {
    "knowmem_forget_rougeL_f1": "KnowMem forget ROUGE-L F1",
    "knowmem_retain_rougeL_f1": "KnowMem retain ROUGE-L F1",
    "verbmem_forget_rougeL_f1": "VerbMem forget ROUGE-L F1",
    "privleak": "PrivLeak",
    "privleak_auc_muse": "PrivLeak Min-K% AUC",
}


def summary_benchmark(summary: Mapping[str, Any]) -> str | None:
    """ "tofu" or "muse" for an evaluation summary of either evaluator, None for anything else."""
    if any(key in summary for key in TOFU_METRICS):
        return "tofu"
    if any(key in summary for key in MUSE_SUMMARY_METRICS):
        return "muse"
    return None


def load_eval_summary(path: str | Path) -> dict[str, Any]:
    """Read an evaluation summary (the `summary.json` of the TOFU or MUSE evaluator, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Evaluation results file {path} does not exist.")
    summary = read_json(path)
    if not isinstance(summary, Mapping) or summary_benchmark(summary) is None:
        keys = sorted(summary) if isinstance(summary, Mapping) else type(summary).__name__
        raise ValueError(
            f"{path} is not a TOFU or MUSE evaluation summary: expected some of {sorted(TOFU_METRICS)} or of "
            f"{sorted(MUSE_SUMMARY_METRICS)} (the keys of the `summary.json` that `TOFUEvaluator` / "
            f"`MUSEEvaluator` write); it has {keys}."
        )
    return dict(summary)


def find_eval_summary(folder: str | Path) -> Path | None:
    """The TOFU evaluation summary saved in a model folder or one of its direct subfolders, if there is exactly one.

    Raises ValueError when several subfolders hold one (pass the right one explicitly).
    """
    folder = Path(folder)
    if (folder / EVAL_SUMMARY_FILE).is_file():
        return folder / EVAL_SUMMARY_FILE
    found = sorted(p for p in folder.glob(f"*/{EVAL_SUMMARY_FILE}") if not p.parent.name.startswith("checkpoint-"))
    if len(found) > 1:
        raise ValueError(
            f"Several evaluation summaries in {folder}: {[str(p.relative_to(folder)) for p in found]}. "
            "Choose one with `eval_results=` (`--eval-results FILE` on the command line)."
        )
    return found[0] if found else None


def eval_results_from_summary(summary: Mapping[str, Any]) -> list[EvalResult]:
    """`model-index` entries for the TOFU or MUSE metrics of a summary that have a value (None values are left
    out)."""
    if summary_benchmark(summary) == "muse":
        metrics = MUSE_SUMMARY_METRICS
        dataset = str(summary.get("dataset") or MUSE_DATASET_ID)
        dataset_name, dataset_config = f"MUSE ({dataset.split('/')[-1]})", None
    else:
        metrics = TOFU_METRICS
        split = summary.get("split") or "forget"
        dataset, dataset_name, dataset_config = TOFU_DATASET_ID, f"TOFU ({split})", str(split)
    results = []
    for key, name in metrics.items():
        value = summary.get(key)
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Machine unlearning",
                dataset_type=dataset,
                dataset_name=dataset_name,
                dataset_config=dataset_config,
                metric_type=key,
                metric_name=name,
                metric_value=float(f"{float(value):.6g}"),  # significant digits: forget quality can be 1e-12
            )
        )
    return results
