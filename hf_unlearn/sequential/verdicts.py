"""The claims of a sequence, judged over the seeds from the requests' records ([`judge`]): THE VERDICT RULE of
[`hf_unlearn.compare.rules.paired_verdict`] on the claim's metric after request k, where the forgetting is matched
by the targets (a claim is testable only where both methods met every request's target up to request k on every
seed). Nothing heavy is imported here: the report recomputes verdicts from `results.json` alone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ..compare.rules import MatchedValue, paired_verdict
from .config import SequentialClaim, _target

__all__ = ["check_claims", "claim_value", "judge", "met_every_target", "seed_records"]

#: A claim's metric read from the cumulative forget metrics of requests 1..k (`cumulative_forget_quality`).
CUMULATIVE_PREFIX = "cumulative_"


def check_claims(claims: Sequence[SequentialClaim], num_requests: int) -> None:
    """A claim after a request the sequence does not make is an error before anything runs."""
    for claim in claims:
        if claim.after(num_requests) > num_requests:
            raise ValueError(
                f"Claim {claim.better} > {claim.than}: request {claim.request}, but the sequence has "
                f"{num_requests} requests."
            )


def seed_records(entry: Mapping[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """A method's records per seed from its entry of `results.json` (one-seed results have only `requests`)."""
    if "seeds" in entry:
        return {int(seed): list(records) for seed, records in entry["seeds"].items()}
    return {0: list(entry.get("requests", []))}


def met_every_target(records: Sequence[Mapping[str, Any]], targets: Sequence[str], request: int) -> list[int]:
    """The requests among 1..`request` that did NOT meet every target (or did not run): empty when all did."""
    by_number = {r["request"]: r for r in records}
    missed = []
    for k in range(1, request + 1):
        record = by_number.get(k)
        if record is None or any(str(t) not in record.get("met", {}) for t in targets):
            missed.append(k)
    return missed


def claim_value(record: Mapping[str, Any], metric: str, utility: str) -> float | None:
    """The claim's quantity in a request's record (higher is better): the utility, a key of its utility summary,
    or `cumulative_<key>` of its cumulative forget metrics."""
    if metric == "utility":
        value = record["utility"].get(utility)
    elif metric.startswith(CUMULATIVE_PREFIX):
        value = (record["forget"].get("cumulative") or {}).get(metric.removeprefix(CUMULATIVE_PREFIX))
    else:
        value = record["utility"].get(metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def judge(
    claims: Sequence[SequentialClaim],
    methods: Mapping[str, Mapping[str, Any]],
    *,
    targets: Sequence[str],
    utility: str,
    num_requests: int,
    min_effect: float,
    labels: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every claim after its request, over the seeds both methods ran. `methods`: `results.json`'s `methods`.

    Seed s gives a value only where the method met every target on requests 1..k; then d_s = A's value - B's after
    request k. The matched-forgetting tolerance is the targets themselves: the forget metric of request k's own
    questions is recorded (`forget_gaps`) but every gap is accepted (tolerance = inf).
    """
    labels = labels or {name: entry.get("label", name) for name, entry in methods.items()}
    first = _target(targets[0]).metric
    verdicts = []
    for claim in claims:
        k = claim.after(num_requests)
        where = f"after request {k}"
        sides: list[dict[int, MatchedValue | None]] = []
        reasons: list[str] = []
        for name in (claim.better, claim.than):
            per_seed = seed_records(methods[name]) if name in methods else {}
            values: dict[int, MatchedValue | None] = {}
            for seed, records in sorted(per_seed.items()):
                missed = met_every_target(records, targets, k)
                record = next((r for r in records if r["request"] == k), None)
                value = None if record is None else claim_value(record, claim.metric, utility)
                if missed:
                    reasons.append(f"{labels.get(name, name)} seed {seed}: target not met at request(s) {missed}")
                    values[seed] = None
                elif value is None:
                    reasons.append(f"{labels.get(name, name)} seed {seed}: no {claim.metric} after request {k}")
                    values[seed] = None
                else:
                    own = record["forget"]["per_request"][k - 1].get(first)
                    values[seed] = MatchedValue(value, math.nan if own is None else float(own))
            sides.append(values)
        if k > num_requests:
            reasons.insert(0, f"the sequence has {num_requests} requests")
        verdict = paired_verdict(
            claim.describe(labels),
            where,
            sides[0],
            sides[1],
            tolerance=math.inf,
            min_effect=min_effect,
            margin=claim.margin,
        )
        if verdict.verdict.startswith("not testable") and reasons:
            # the rule's own words count seeds; say which request missed its target where
            verdict.verdict = f"{verdict.verdict}: {'; '.join(reasons)}"
        verdicts.append(
            {
                **asdict(verdict),
                "request": k,
                "metric": claim.metric,
                "better": claim.better,
                "than": claim.than,
                "mean": verdict.mean,
                "std": verdict.std,
                "cell": verdict.cell(),
            }
        )
    return verdicts
