"""The comparison's two rules, written before any run: which learning rate a method gets at a target (THE RATE RULE,
[`choose_learning_rate`]) and how a claim is judged over paired seeds (THE VERDICT RULE, [`paired_verdict`])."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MatchedValue", "Verdict", "choose_learning_rate", "paired_verdict"]


@dataclass(frozen=True)
class MatchedValue:
    """A run at its matched point of one target: the claim's quantity there (oriented so that higher is better:
    the utility, or minus a forget probability after an attack) and the target metric's value there."""

    value: float
    forget_metric: float


def choose_learning_rate(candidates: Mapping[float, float | None]) -> float | None:
    """THE RATE RULE: among a method's first-seed runs over its grid (rate -> utility at the matched point of a
    target, None when the run did not reach it), the rate with the highest utility; ties go to the smaller rate;
    None when no rate reached the target."""
    reached = [(utility, -rate, rate) for rate, utility in candidates.items() if utility is not None]
    return max(reached)[2] if reached else None


@dataclass
class Verdict:
    """A claim judged at one target: the verdict, the paired utility differences and the matched forget metrics."""

    claim: str
    target: str
    verdict: str
    differences: list[float] = field(default_factory=list)
    forget_gaps: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences)) if self.differences else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.differences, ddof=1)) if len(self.differences) > 1 else 0.0

    def cell(self) -> str:
        if not self.differences:
            return self.verdict
        return f"{self.verdict} ({self.mean:+.3f} ± {self.std:.3f})"


def paired_verdict(
    claim: str,
    target: str,
    a: Mapping[int, MatchedValue | None],
    b: Mapping[int, MatchedValue | None],
    *,
    tolerance: float,
    min_effect: float = 0.01,
    margin: float | None = None,
) -> Verdict:
    """THE VERDICT RULE for "A keeps more utility than B at the same forgetting" (or more of another quantity,
    oriented so that higher is better). `a`, `b`: seed -> the run's matched point at `target` (None: not reached).
    Over the seeds both ran, with d_s = U_A(s) - U_B(s):

    - *not testable* unless both reached the target on every seed, and their forget metrics at the matched points
      differ by at most `tolerance` on every seed (otherwise the difference partly measures how much more one forgot);
    - *holds* if d_s > 0 on every seed and mean(d) >= `min_effect`;
    - *contradicted* if d_s < 0 on every seed and mean(d) <= -`min_effect`;
    - *no clear difference* otherwise.

    With `margin` the claim is "A loses at most `margin` against B" (non-inferiority): *holds* if d_s >= -`margin`
    on every seed, *contradicted* if d_s < -`margin` on every seed, *no clear difference* otherwise.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds or any(a[s] is None or b[s] is None for s in seeds):
        reached = "/".join(str(sum(side.get(s) is not None for s in seeds)) for side in (a, b))
        return Verdict(claim, target, f"not testable (seeds reached: {reached} of {len(seeds)})", seeds=seeds)
    gaps = [abs(a[s].forget_metric - b[s].forget_metric) for s in seeds]  # type: ignore[union-attr]
    d = [float(a[s].value - b[s].value) for s in seeds]  # type: ignore[union-attr]
    if max(gaps) > tolerance:
        return Verdict(
            claim,
            target,
            f"not testable (matched forget metrics differ by up to {max(gaps):.3g} > tolerance {tolerance:g})",
            d,
            gaps,
            seeds,
        )
    mean = float(np.mean(d))
    if margin is not None:
        verdict = "holds" if all(x >= -margin for x in d) else "contradicted" if all(x < -margin for x in d) else None
        return Verdict(claim, target, verdict or "no clear difference", d, gaps, seeds)
    if all(x > 0 for x in d) and mean >= min_effect:
        verdict = "holds"
    elif all(x < 0 for x in d) and mean <= -min_effect:
        verdict = "contradicted"
    else:
        verdict = "no clear difference"
    return Verdict(claim, target, verdict, d, gaps, seeds)
