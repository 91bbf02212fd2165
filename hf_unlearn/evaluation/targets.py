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
    "TARGET_METRICS",
    "TRUTH_RATIO_METRICS",
    "Target",
    "parse_target",
    "parse_targets",
]

#: What a target can be set on: the TOFU summary numbers of the forget split, forget quality (against the retain
#: model's logs), the retain split's probability and the model utility (all four splits, with generation).
TARGET_METRICS: tuple[str, ...] = (
    "forget_probability",
    "forget_rougeL_recall",
    "forget_truth_ratio",
    "forget_quality",
    "retain_probability",
    "model_utility",
)
#: Metrics that need greedy generation (costly): ask for them only when a target needs them.
GENERATION_METRICS: tuple[str, ...] = ("forget_rougeL_recall", "model_utility")
#: Metrics that need the paraphrased and perturbed answers scored.
TRUTH_RATIO_METRICS: tuple[str, ...] = ("forget_truth_ratio", "forget_quality", "model_utility")

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
            raise ValueError(f"Unknown target metric {self.metric!r}; the allowed metrics are {list(TARGET_METRICS)}.")
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


def parse_target(text: str) -> Target:
    """A [`Target`] from `"<metric><=<threshold>"` or `"<metric>>=<threshold>"`, e.g. `"forget_quality>=0.05"`."""
    if isinstance(text, Target):
        return text
    match = _PATTERN.match(str(text))
    if match is None:
        raise ValueError(
            f"Cannot read the target {text!r}: write <metric><=<number> or <metric>>=<number>, e.g. "
            f"'forget_probability<=0.1'; the allowed metrics are {list(TARGET_METRICS)}."
        )
    metric, op, number = match.groups()
    if metric not in TARGET_METRICS:
        raise ValueError(
            f"Unknown target metric {metric!r} in {text!r}; the allowed metrics are {list(TARGET_METRICS)}."
        )
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
