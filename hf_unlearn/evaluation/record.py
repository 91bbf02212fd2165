"""How an evaluation was made: its settings and data, recorded beside its numbers and compared before two are mixed.

An evaluator's record goes into `summary.json` and TOFU's aggregated log under [`RECORD_KEY`]:

```json
{"benchmark": "TOFU", "forget_split": "forget01", "splits": ["retain", "forget"], "max_new_tokens": 32,
 "max_questions": null, "use_chat_template": false, "date_string": "...", "hf_unlearn_version": "...",
 "data": {"forget": {"kind": "bundled", "dataset": "locuslab/TOFU", "config": "forget01_perturbed", "num_rows": 40,
                     "fingerprint": "...", "questions": 40, "questions_fingerprint": "..."}, ...},
 "partial": ["generations of at most 32 new tokens (TOFU generates 200)"]}
```

`partial` says why the numbers are not the benchmark's own (a subset of the questions, a short generation, missing
splits); data that is not the Hub's benchmark says so in `data`. Model cards read both: only a complete evaluation
on the Hub's data becomes a `model-index` result. Forget quality compares an evaluation with a retain model's logs:
[`compare_records`] lists what differs between the two (different forget questions make it meaningless).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import constants

__all__ = [
    "FULL_TOFU_MAX_NEW_TOKENS",
    "RECORD_KEY",
    "compare_records",
    "hf_unlearn_version",
    "is_benchmark_result",
    "read_record",
    "warn_if_incomparable",
]

#: Where the record sits in `summary.json` and in the aggregated log.
RECORD_KEY = "evaluation"
#: TOFU's generation length (its evaluation config's `generation.max_new_tokens`).
FULL_TOFU_MAX_NEW_TOKENS = 200

# What changes the forget-split truth ratios, hence forget quality; other differences change only the generations.
_FORGET_QUALITY_KEYS = ("use_chat_template", "date_string")


def hf_unlearn_version() -> str:
    """hf_unlearn's version, for records. The package is always imported before any of its modules, so it is read
    from there rather than imported (an import would make every evaluation module depend on the package root)."""
    return sys.modules[__name__.partition(".")[0]].__version__


def read_record(logs: str | Path | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The record of an evaluation: from a summary dict, or from a logs folder / file (its `summary.json`, else the
    aggregated log). None when there is none (e.g. TOFU's published logs)."""
    if logs is None:
        return None
    if isinstance(logs, Mapping):
        record = logs.get(RECORD_KEY)
        return dict(record) if isinstance(record, Mapping) else None
    path = Path(logs)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / constants.EVAL_SUMMARY_FILE, folder / constants.AGGREGATED_LOG_FILE):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                continue
            record = data.get(RECORD_KEY) if isinstance(data, Mapping) else None
            if isinstance(record, Mapping):
                return dict(record)
    return None


def _forget_data(record: Mapping[str, Any]) -> Mapping[str, Any]:
    data = record.get("data") or {}
    return data.get("forget") or {}


def compare_records(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """What differs between two evaluation records, one phrase each; those that change forget quality come first
    and say so. Empty when they match (or neither says)."""
    differences: list[str] = []
    ours_forget, theirs_forget = _forget_data(ours), _forget_data(theirs)
    a, b = ours_forget.get("questions_fingerprint"), theirs_forget.get("questions_fingerprint")
    if a and b and a != b:
        differences.append(
            f"other forget questions ({ours_forget.get('questions')} here, {theirs_forget.get('questions')} there, "
            "different texts): forget quality compares different questions"
        )
    for key in _FORGET_QUALITY_KEYS:
        if key in ours and key in theirs and ours[key] != theirs[key]:
            differences.append(f"{key} {ours[key]!r} here, {theirs[key]!r} there: the prompts differ")
    for key in ("max_new_tokens", "max_questions", "forget_split"):
        if key in ours and key in theirs and ours[key] != theirs[key]:
            differences.append(f"{key} {ours[key]!r} here, {theirs[key]!r} there")
    return differences


def warn_if_incomparable(ours: Mapping[str, Any] | None, retain_logs: str | Path | Mapping[str, Any]) -> list[str]:
    """Warn when the retain model's logs were made with other settings or data than `ours`; returns the
    differences (empty when comparable or when the retain logs carry no record)."""
    if ours is None:
        return []
    theirs = read_record(retain_logs)
    if theirs is None:
        return []
    differences = compare_records(ours, theirs)
    if differences:
        warnings.warn(
            f"The retain model's logs ({retain_logs if not isinstance(retain_logs, Mapping) else 'given'}) were made "
            f"differently: {'; '.join(differences)}. Evaluate both models with the same data and settings.",
            stacklevel=3,
        )
    return differences


def is_benchmark_result(record: Mapping[str, Any] | None) -> bool:
    """Whether a record is of a complete evaluation on the Hub's benchmark data (what a card may report in
    `model-index`). Summaries written before records existed say nothing, and are not."""
    if not record or record.get("partial"):
        return False
    data = record.get("data") or {}
    return bool(data) and all(isinstance(d, Mapping) and d.get("kind") == "hub" for d in data.values())
