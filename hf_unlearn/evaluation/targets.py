"""Forgetting targets: an amount of forgetting a run should reach ("forget_probability<=0.1"), parsed from strings.

[`Target`] is what [`~hf_unlearn.evaluation.callback.StopAtTargetCallback`] (and `UnlearningConfig.stop_at_targets`)
checks along a run. This module imports nothing heavy: `UnlearningConfig` parses its targets with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "GENERATION_METRICS",
    "MUSE_TARGET_METRICS",
    "TARGET_BENCHMARKS",
    "TARGET_METRICS",
    "TOFU_TARGET_METRICS",
    "TRUTH_RATIO_METRICS",
    "Target",
    "benchmark_of",
    "parse_target",
    "parse_targets",
]

#: The TOFU targets ([`~hf_unlearn.evaluation.TOFUEvaluator`]'s summary keys): the forget split's numbers, forget
#: quality (against the retain model's logs), the retain split's probability and the model utility (all four splits,
#: with generation).
TOFU_TARGET_METRICS: tuple[str, ...] = (
    "forget_probability",
    "forget_rougeL_recall",
    "forget_truth_ratio",
    "forget_quality",
    "retain_probability",
    "model_utility",
)
#: The MUSE targets ([`~hf_unlearn.evaluation.MUSEEvaluator`]'s summary keys): KnowMem on the forget and retain
#: questions and VerbMem on the forget texts (ROUGE-L F1 of greedy generations).
MUSE_TARGET_METRICS: tuple[str, ...] = (
    "knowmem_forget_rougeL_f1",
    "verbmem_forget_rougeL_f1",
    "knowmem_retain_rougeL_f1",
)
#: What a target can be set on: every TOFU and MUSE target metric.
TARGET_METRICS: tuple[str, ...] = TOFU_TARGET_METRICS + MUSE_TARGET_METRICS
#: Which evaluator computes each target metric: `"tofu"` (TOFUEvaluator) or `"muse"` (MUSEEvaluator).
TARGET_BENCHMARKS: dict[str, str] = {
    **{metric: "tofu" for metric in TOFU_TARGET_METRICS},
    **{metric: "muse" for metric in MUSE_TARGET_METRICS},
}
#: Metrics that need greedy generation (costly): ask for them only when a target needs them.
GENERATION_METRICS: tuple[str, ...] = ("forget_rougeL_recall", "model_utility")
#: Metrics that need the paraphrased and perturbed answers scored.
TRUTH_RATIO_METRICS: tuple[str, ...] = ("forget_truth_ratio", "forget_quality", "model_utility")

_ALLOWED = f"TOFU's {list(TOFU_TARGET_METRICS)} and MUSE's {list(MUSE_TARGET_METRICS)}"
_DIRECTIONS = {"<=": "below", ">=": "above"}
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Target:
    """An amount of forgetting: `metric` at most (`direction="below"`) or at least (`"above"`) `threshold`.

    `"forget_probability<=0.1"` is `Target("forget_probability", 0.1, "below")` ([`parse_target`]).
    """

    metric: str
    threshold: float
    direction: str = "below"

    def __post_init__(self) -> None:
        if self.metric not in TARGET_METRICS:
            raise ValueError(f"Unknown target metric {self.metric!r}; the allowed metrics are {_ALLOWED}.")
        if self.direction not in ("below", "above"):
            raise ValueError(f"A target's direction must be 'below' or 'above', got {self.direction!r}.")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ValueError(f"A target's threshold must be a number, got {self.threshold!r}.")
        if not math.isfinite(self.threshold):
            raise ValueError(f"A target's threshold must be finite, got {self.threshold}.")
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def op(self) -> str:
        return "<=" if self.direction == "below" else ">="

    def met(self, point: Mapping[str, float | None]) -> bool:
        """Whether the evaluation `point` (metric -> value) meets the target (a missing or None value does not)."""
        value = point.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return False
        return float(value) <= self.threshold if self.direction == "below" else float(value) >= self.threshold

    @property
    def name(self) -> str:
        """`target-<metric>-<threshold>`: the folder of the checkpoint saved where the target is first met."""
        return f"target-{self.metric}-{self.threshold:g}"

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def benchmark_of(targets: Iterable[Target | str]) -> str:
    """`"tofu"` or `"muse"`: the evaluator that computes every one of `targets` (parsed if strings). Targets of both
    (one run is evaluated by one evaluator) and no target at all are errors."""
    parsed = parse_targets(list(targets))
    if not parsed:
        raise ValueError("No target given.")
    found = {TARGET_BENCHMARKS[t.metric]: [] for t in parsed}
    for target in parsed:
        found[TARGET_BENCHMARKS[target.metric]].append(str(target))
    if len(found) > 1:
        raise ValueError(
            f"The targets mix TOFU metrics ({found['tofu']}) and MUSE metrics ({found['muse']}); one run is evaluated "
            "by one evaluator: give targets of one benchmark only."
        )
    return next(iter(found))


def parse_target(text: str) -> Target:
    """A [`Target`] from `"<metric><=<threshold>"` or `"<metric>>=<threshold>"`, e.g. `"forget_quality>=0.05"`."""
    if isinstance(text, Target):
        return text
    match = _PATTERN.match(str(text))
    if match is None:
        raise ValueError(
            f"Cannot read the target {text!r}: write <metric><=<number> or <metric>>=<number>, e.g. "
            f"'forget_probability<=0.1'; the allowed metrics are {_ALLOWED}."
        )
    metric, op, number = match.groups()
    if metric not in TARGET_METRICS:
        raise ValueError(f"Unknown target metric {metric!r} in {text!r}; the allowed metrics are {_ALLOWED}.")
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"The target {text!r} has no number after {op!r} (got {number!r}).") from None
    return Target(metric, threshold, _DIRECTIONS[op])


def parse_targets(spec: str | Target | Iterable[str | Target] | None) -> list[Target]:
    """Targets from a comma-separated string, a list of strings (each may hold several, comma-separated) or
    [`Target`]s. Duplicates are an error (each target names its own checkpoint folder)."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, Target)) else list(spec)
    targets: list[Target] = []
    for item in items:
        if isinstance(item, Target):
            targets.append(item)
            continue
        targets += [parse_target(part) for part in str(item).split(",") if part.strip()]
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"The same target is given twice: {duplicates}.")
    return targets
