"""TOFU-mini v2's matched-forgetting machinery: forgetting targets, cheap evaluations along a run (its trajectory),
the first point of a run that meets each target, the learning-rate rule and the verdict rule.

Everything here is fixed before a run and written into RESULTS.md by the report: the targets, how a learning rate is
chosen (:func:`choose_learning_rate`) and how a claim is judged (:func:`paired_verdict`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from hf_unlearn.evaluation.metrics import forget_quality, truth_ratio_forget, truth_ratio_stat
from hf_unlearn.evaluation.tofu import TOFUEvaluator

# ---------------------------------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An amount of forgetting: `metric` (a trajectory metric) at most ("<=") or at least (">=") `threshold`."""

    name: str
    metric: str
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"Target {self.name!r}: op must be '<=' or '>=', got {self.op!r}.")
        if self.metric not in TRAJECTORY_METRICS:
            raise ValueError(
                f"Target {self.name!r}: unknown metric {self.metric!r}; choose from {TRAJECTORY_METRICS}."
            )

    def met(self, point: Mapping[str, float]) -> bool:
        value = point[self.metric]
        return value <= self.threshold if self.op == "<=" else value >= self.threshold

    @property
    def title(self) -> str:
        names = {"forget_probability": "forget prob.", "forget_quality": "forget quality"}
        return f"{names.get(self.metric, self.metric)} {'≤' if self.op == '<=' else '≥'} {self.threshold:g}"


#: What a cheap (teacher-forced) evaluation measures along a run.
TRAJECTORY_METRICS = ("forget_probability", "retain_probability", "forget_quality", "forget_truth_ratio")

#: TOFU-mini v2's targets: two levels of forget probability. Forget quality is reported at their matched points.
DEFAULT_TARGETS = (
    Target("p10", "forget_probability", "<=", 0.1),
    Target("p02", "forget_probability", "<=", 0.02),
)
#: TOFU's 0.01 line of forget quality, pre-registered as a third target and left out of the default run: finding it
#: along a trajectory scores 5 perturbed answers and a paraphrase per forget question at every evaluation, which
#: made the cheap evaluations two thirds of the benchmark's time (`targets=[*DEFAULT_TARGETS, FORGET_QUALITY_TARGET]`).
FORGET_QUALITY_TARGET = Target("fq", "forget_quality", ">=", 0.01)
#: The trajectory metrics that need the forget truth ratio (paraphrased and perturbed answers).
TRUTH_RATIO_METRICS = ("forget_quality", "forget_truth_ratio")


# ---------------------------------------------------------------------------------------------------------------------
# cheap evaluation
# ---------------------------------------------------------------------------------------------------------------------


class TrajectoryScorer:
    """Teacher-forced metrics of a model on the benchmark's evaluation questions, without generation: the forget and
    retain answers' probability and, with `truth_ratio`, the forget truth ratio and forget quality against the retain
    model's truth-ratio statistics. Uses the TOFU evaluator's batched scoring, so the values equal the full
    evaluation's."""

    def __init__(
        self,
        model,
        tokenizer,
        eval_sets: Mapping[str, Sequence[Mapping[str, Any]]],
        retain_stats,
        truth_ratio: bool = True,
    ):
        evaluator = TOFUEvaluator(
            model, tokenizer, datasets=eval_sets, splits=["retain", "forget"], progress=False, max_new_tokens=1
        )
        self.evaluator = evaluator
        self.retain_stats = np.asarray(retain_stats, dtype=np.float64)
        self.pairs: list[tuple[list[int], list[int]]] = []
        self.slots = {
            split: evaluator._add_pairs(evaluator.questions[split], self.pairs) for split in evaluator.splits
        }
        # retain questions: the answer alone (their truth ratio is not needed along the way)
        self.retain_answers = [answer for answer, _, _ in self.slots["retain"]]
        self.truth_ratio = truth_ratio
        forget = self.slots["forget"]
        keep = set(self.retain_answers) | (
            {i for a, p, perts in forget for i in (a, p, *perts)} if truth_ratio else {a for a, _, _ in forget}
        )
        self.index = sorted(keep)
        self.position = {slot: k for k, slot in enumerate(self.index)}

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        self.evaluator.model = model
        was_training = model.training
        model.eval()
        try:
            sums, counts = self.evaluator.score([self.pairs[i] for i in self.index], desc="trajectory")
        finally:
            model.train(was_training)
        means = sums / np.maximum(counts, 1)
        at = self.position
        forget = self.slots["forget"]
        point = {
            "forget_probability": float(np.mean([math.exp(-means[at[a]]) for a, _, _ in forget])),
            "retain_probability": float(np.mean([math.exp(-means[at[a]]) for a in self.retain_answers])),
        }
        if self.truth_ratio:
            stats = np.array([truth_ratio_stat(means[at[p]], [means[at[s]] for s in perts]) for _, p, perts in forget])
            point["forget_quality"] = forget_quality(stats, self.retain_stats)
            point["forget_truth_ratio"] = truth_ratio_forget(stats)
        return point


@dataclass
class Matched:
    """The first evaluation of a run that met a target: its step and trajectory point, then the full TOFU summary
    (and robustness results) of the model there."""

    step: int
    point: dict[str, float]
    summary: dict[str, Any] | None = None
    robustness: dict[str, Any] | None = None


class TrajectoryCallback(TrainerCallback):
    """Scores the model every `every` optimizer steps (and before the first), records the trajectory, snapshots the
    trainable parameters at the first evaluation that meets each target, and stops training once every target is met.

    After training, `trajectory` holds the points and `snapshots` target name -> (step, trainable parameters)."""

    def __init__(self, scorer: Callable[[torch.nn.Module], dict[str, float]], targets: Sequence[Target], every: int):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        self.scorer, self.targets, self.every = scorer, list(targets), every
        self.trajectory: list[dict[str, float]] = []
        self.snapshots: dict[str, tuple[int, dict[str, torch.Tensor]]] = {}
        self.scoring_seconds = 0.0

    def _record(self, model, step: int) -> None:
        tic = time.perf_counter()
        point = {"step": step, **self.scorer(model)}
        self.scoring_seconds += time.perf_counter() - tic
        self.trajectory.append(point)
        newly = [t for t in self.targets if t.name not in self.snapshots and t.met(point)]
        if newly:
            state = trainable_state(model)
            for target in newly:
                self.snapshots[target.name] = (step, state)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step >= state.max_steps
        if state.global_step % self.every == 0 or last:
            self._record(model, state.global_step)
            if len(self.snapshots) == len(self.targets):
                control.should_training_stop = True
        return control


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the parameters that training changes (all of a full-parameter run's, GRUN's edits and gates)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a :func:`trainable_state` back into `model` (the same architecture); every name must be found."""
    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise KeyError(f"The model has no parameter(s) {missing[:3]}... of the snapshot.")
    for name, value in state.items():
        params[name].copy_(value)


# ---------------------------------------------------------------------------------------------------------------------
# runs, the learning-rate rule, the verdict rule
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One unlearning run (a method at a learning rate and seed): its trajectory and its matched points."""

    method: str
    seed: int
    learning_rate: float
    steps: int
    seconds: float
    scoring_seconds: float
    trajectory: list[dict[str, float]]
    matched: dict[str, Matched | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["matched"] = {k: (asdict(v) if v is not None else None) for k, v in self.matched.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        data = dict(data)
        data["matched"] = {k: (Matched(**v) if v is not None else None) for k, v in data["matched"].items()}
        return cls(**data)

    def utility(self, target: str) -> float | None:
        matched = self.matched.get(target)
        if matched is None or matched.summary is None:
            return None
        return float(matched.summary["retain_utility"])


def choose_learning_rate(runs: Sequence[RunRecord], target: str) -> float | None:
    """THE RULE (the same for every method): among a method's seed-0 runs over its learning-rate grid, the rate whose
    run reaches `target` with the highest retain-author utility at its first matching evaluation (ties: the smaller
    rate); None when no rate reaches it."""
    reached = [(run.utility(target), -run.learning_rate, run.learning_rate) for run in runs if run.seed == 0]
    reached = [r for r in reached if r[0] is not None]
    return max(reached)[2] if reached else None


#: A paired utility difference whose mean is within this of 0 is "no clear difference", whatever its sign.
MIN_EFFECT = 0.01


@dataclass
class Verdict:
    """A claim "A keeps more retain-author utility than B at the same forgetting", judged over paired seeds."""

    claim: str
    target: str
    verdict: str
    differences: list[float]
    seeds: int

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


def paired_verdict(claim: str, target: str, a: Mapping[int, float | None], b: Mapping[int, float | None]) -> Verdict:
    """THE VERDICT RULE, written before the run. `a`, `b`: seed -> utility at the first evaluation meeting `target`
    (None: not reached). With d_s = a_s - b_s over the seeds both ran:

    - "not testable" unless both reached the target on every seed;
    - "holds" if d_s > 0 on every seed and mean(d) >= MIN_EFFECT;
    - "contradicted" if d_s < 0 on every seed and mean(d) <= -MIN_EFFECT;
    - "no clear difference" otherwise.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds or any(a[s] is None or b[s] is None for s in seeds):
        reached = "/".join(str(sum(side.get(s) is not None for s in seeds)) for side in (a, b))
        return Verdict(claim, target, f"not testable (seeds reached: {reached} of {len(seeds)})", [], len(seeds))
    d = [float(a[s] - b[s]) for s in seeds]
    mean = float(np.mean(d))
    if all(x > 0 for x in d) and mean >= MIN_EFFECT:
        verdict = "holds"
    elif all(x < 0 for x in d) and mean <= -MIN_EFFECT:
        verdict = "contradicted"
    else:
        verdict = "no clear difference"
    return Verdict(claim, target, verdict, d, len(seeds))
