"""What a sequence of deletion requests runs: the model, the data and how it is cut into requests, the methods, the
stopping target and budget of each request, and the reference of NPO-like losses ([`SequentialConfig`], from YAML).

The methods, the data and the models are those of a comparison ([`hf_unlearn.compare.MethodSpec`],
[`hf_unlearn.compare.DataSpec`]); [`SequentialConfig.compare_config`] turns a sequence into the comparison whose
worker functions train and evaluate its requests. Nothing heavy is imported here (`--dry-run` starts quickly).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..compare.config import (
    METHOD_NAME,
    UTILITY_METRICS,
    UTILITY_OF_BENCHMARK,
    Claim,
    CompareConfig,
    DataSpec,
    MethodSpec,
    check_keys,
    parse_claim,
    parse_methods,
    parse_named_targets,
    read_yaml,
)
from ..evaluation.targets import TARGET_BENCHMARKS, Target, parse_target

__all__ = [
    "MUSE_FOLDS",
    "REFERENCES",
    "RequestsSpec",
    "SequentialClaim",
    "SequentialConfig",
    "TOFU_QUESTIONS_PER_AUTHOR",
    "muse_fold_split",
]

#: The reference model of NPO-like losses from the second request on: the model the previous request left
#: (MUSE's sustainability runs and the TOFU continual protocol rebuild the trainer, and NPO's reference, per request),
#: or the original target model.
REFERENCES = ("previous", "original")
#: TOFU asks 20 questions about each fictitious author (forget05 = 10 authors = 200 questions).
TOFU_QUESTIONS_PER_AUTHOR = 20
#: MUSE-News's sustainability folds (jaechan-repo/muse_bench `baselines/scripts/unlearn_bbc_sust.sh`): fold 1 is the
#: `raw/forget` run, folds 2-4 are `sust/forget_2` .. `sust/forget_4` (disjoint), each unlearned from the model the
#: fold before it left.
MUSE_FOLDS = (1, 2, 3, 4)


def muse_fold_split(fold: int, first: str = "forget") -> tuple[str, str]:
    """The MUSE (configuration, split) of sustainability fold `fold`: `("raw", first)` for fold 1 (`first`: the
    data's raw forget split), `("sust", "forget_<fold>")` after it."""
    return ("raw", first) if fold == 1 else ("sust", f"forget_{fold}")


@dataclass
class RequestsSpec:
    """How the forget data is cut into deletion requests (give one of `size`, `authors`, `count`, `files`,
    `muse_folds`).

    Args:
        size: questions per request: the forget split's rows in consecutive chunks (the last may be smaller).
        authors: TOFU only: authors per request (20 questions each); the default of a TOFU sequence is 2, as the
            TOFU continual protocol cuts forget05 into 5 requests of 40 questions (forget10: 10 requests).
        count: the number of requests: the forget rows in `count` consecutive chunks of (nearly) equal size.
        files: one data file per request (JSON Lines, CSV or Parquet with `question` and `answer`; TOFU's perturbed
            layout, with `paraphrased_answer` and `perturbed_answer`, for the truth ratio and forget quality).
        eval_files: the requests' evaluation rows, one file per request (default: the training files).
        muse_folds: MUSE data only (and its default there: `[1, 2, 3, 4]`): MUSE-News's sustainability folds, in
            order, one request each: fold 1 is `raw/forget`, fold k is `sust/forget_k` ([`MUSE_FOLDS`]).
        limit: run only the first `limit` requests (a shorter sequence over the same cut).
    """

    size: int | None = None
    authors: int | None = None
    count: int | None = None
    files: list[str] | None = None
    eval_files: list[str] | None = None
    muse_folds: list[int] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("size", "authors", "count", "files", "muse_folds") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"requests: give one of size, authors, count and files (MUSE: muse_folds), got {given}.")
        for key in ("size", "authors", "count", "limit"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"requests.{key} must be an integer >= 1, got {value!r}.")
        if self.files is not None:
            if isinstance(self.files, str) or not self.files:
                raise ValueError("requests.files must be a non-empty list of data files, one per request.")
            self.files = [str(f) for f in self.files]
        if self.eval_files is not None:
            if self.files is None or len(self.eval_files) != len(self.files):
                raise ValueError("requests.eval_files needs requests.files and one evaluation file per request file.")
            self.eval_files = [str(f) for f in self.eval_files]
        if self.muse_folds is not None:
            self.muse_folds = _check_folds(self.muse_folds)

    def chunks(self, num_rows: int) -> list[list[int]]:
        """The requests' row indices into the forget rows (`num_rows` of them), for `size` / `authors` / `count`."""
        if self.files is not None:
            raise ValueError("Requests from files are not chunks of one forget set.")
        if self.count is not None:
            if self.count > num_rows:
                raise ValueError(f"requests.count {self.count} exceeds the {num_rows} forget rows.")
            bounds = [round(i * num_rows / self.count) for i in range(self.count + 1)]
        else:
            size = self.size if self.size is not None else TOFU_QUESTIONS_PER_AUTHOR * (self.authors or 2)
            bounds = list(range(0, num_rows, size)) + [num_rows]
        chunks = [list(range(a, b)) for a, b in zip(bounds, bounds[1:]) if b > a]
        return chunks[: self.limit] if self.limit is not None else chunks

    def describe(self) -> str:
        if self.muse_folds is not None:
            folds = self.muse_folds[: self.limit] if self.limit else self.muse_folds
            return "MUSE-News sustainability folds " + ", ".join(str(f) for f in folds)
        if self.files is not None:
            return f"{len(self.files)} request(s) from files"
        if self.count is not None:
            return f"the forget rows in {self.count} chunks"
        if self.size is not None:
            return f"{self.size} questions a request"
        return f"{self.authors or 2} authors ({TOFU_QUESTIONS_PER_AUTHOR * (self.authors or 2)} questions) a request"


def _check_folds(folds: Any) -> list[int]:
    """`requests.muse_folds`: distinct folds of [`MUSE_FOLDS`] in increasing order (the protocol's order)."""
    if isinstance(folds, (str, int)) or not isinstance(folds, Sequence) or not folds:
        raise ValueError(f"requests.muse_folds must be a non-empty list of folds among {list(MUSE_FOLDS)}, got "
                         f"{folds!r}.")  # fmt: skip
    folds = list(folds)
    if any(isinstance(f, bool) or f not in MUSE_FOLDS for f in folds) or folds != sorted(set(folds)):
        raise ValueError(
            f"requests.muse_folds must list folds among {list(MUSE_FOLDS)} once each, in increasing order (each "
            f"fold is unlearned from the model the fold before it left), got {folds!r}."
        )
    return folds


@dataclass
class SequentialClaim(Claim):
    """A [`hf_unlearn.compare.Claim`] on a sequence: "`better` keeps more `metric` than `than` after request
    `request`" (default: the last request), judged over the seeds by THE VERDICT RULE
    ([`hf_unlearn.compare.rules.paired_verdict`], d_s = A's value - B's after request `request` on seed s).

    The forgetting is matched by the targets: the claim is testable only where both methods met every request's
    target, requests 1..`request`, on every seed. `metric`: `"utility"` (the sequence's utility) or a key of the
    evaluation after a request (its utility summary, e.g. `model_utility`, or `cumulative_forget_quality`: the
    cumulative forget quality of requests 1..k); higher is better. `targets` and attack metrics do not apply.
    """

    request: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"Claim {self.better} > {self.than}"
        if self.request is not None and (
            isinstance(self.request, bool) or not isinstance(self.request, int) or self.request < 1
        ):
            raise ValueError(f"{where}: request must be an integer >= 1 (a request number), got {self.request!r}.")
        if self.targets is not None:
            raise ValueError(
                f"{where}: a sequence's claim is judged after a request (request: k), where both methods met every "
                "request's target; drop 'targets'."
            )
        if self.attack is not None:
            raise ValueError(f"{where}: a sequence runs no attacks; metric {self.metric!r} is not measured.")

    def after(self, num_requests: int) -> int:
        """The request after which the claim is judged (the last by default)."""
        return num_requests if self.request is None else self.request

    def describe(self, labels: Mapping[str, str]) -> str:
        text = super().describe(labels)
        when = f"request {self.request}" if self.request else "the last request"
        return text if self.text else f"{text} after {when}"


def parse_sequential_claim(raw: Any) -> SequentialClaim:
    """`"A > B"` (after the last request) or a mapping of [`SequentialClaim`]'s keys (`request: k`)."""
    if isinstance(raw, Mapping):
        check_keys("claim", raw, SequentialClaim)
        raw = dict(raw)
        request = raw.pop("request", None)
        return SequentialClaim(**asdict(parse_claim(raw)), request=request)
    return SequentialClaim(**asdict(parse_claim(raw)))


@dataclass
class SequentialConfig:
    """A sequence of deletion requests, each unlearned from the model the previous one left
    (`hf-unlearn sequential --config FILE`).

    Every method runs the whole sequence on its own copy of the target model. Request k is unlearned (forget rows
    of request k, the retain rows of the data) until the first cheap evaluation on request k's questions meets every
    target in `targets`, or its step budget; then the model is evaluated: forget metrics on every request (those
    seen so far and those to come), cumulative forget quality (the KS test of the truth-ratio statistics of all the
    requests so far against the retain model's on the same questions), model utility, cost. How the model carries
    over, by kind:

    - `full`: the weights trained by request k are request k+1's starting point.
    - `peft` (LoRA): a fresh adapter per request, MERGED into the weights after the request (the next adapter trains
      on the merged model). One model is served; the adapters are kept (their bytes are the request's cost).
    - `grun`: one new gated module per request on top of the frozen earlier ones (h + sum_i s_i(h) edit_i(h)); the
      base model never changes.

    MUSE data (`data: {source: muse}`): the requests are MUSE-News's sustainability folds (`requests.muse_folds`,
    default 1 to 4: `raw/forget`, then `sust/forget_2` .. `sust/forget_4`), trained as raw text with MUSE's raw
    retain text (`raw/retain1`), as a MUSE comparison trains; the targets are MUSE metrics on MUSE's standard forget
    set (`knowmem_forget_rougeL_f1`, `verbmem_forget_rougeL_f1`), the utility is `knowmem_retain_rougeL_f1`, and
    after each request the model gets MUSE's evaluation and each fold's mean per-token NLL
    ([`hf_unlearn.sequential.evaluate.muse_sequence_metrics`]). Cumulative forget quality is TOFU's (truth ratios of
    QA pairs) and is not computed.

    Args:
        target_model: the model to unlearn (a Hub id or a folder).
        methods: name -> [`hf_unlearn.compare.MethodSpec`] with ONE learning rate.
        targets: what a request must reach on its own questions before it stops (a target string such as
            `"forget_probability<=0.1"`, a list of them, or name -> target); at least one. MUSE: MUSE targets,
            measured on MUSE's standard forget set (KnowMem and VerbMem of `raw/forget`, fold 1's news) for every
            fold, as a MUSE comparison measures them: a later fold starts where fold 1 left them, so a target fold 1
            met would stop it at its start; MUSE's sustainability script trains every fold its budget
            (`stop_at_targets: false`).
        stop_at_targets: True (default): a request stops at the first evaluation meeting every target (matched
            forgetting). False: every request trains its whole budget; the targets are still evaluated every
            `eval_every` steps (the trajectory, and the step where each was first met). Claims need the stop: a
            fixed budget does not match the forgetting.
        data: a [`hf_unlearn.compare.DataSpec`]: the forget rows (TOFU's forget split, or `files`) and the retain rows
            trained on and evaluated. `max_questions` caps every utility split and each request's forget
            evaluation.
        requests: a [`RequestsSpec`] (default: 2 TOFU authors a request, or 4 chunks of a files forget set).
        retain_model, retain_logs: the retain model (evaluated here on every request's questions) or its TOFU logs
            (a folder whose forget log's question indices are the forget split's), for forget quality. MUSE: a
            retain model is evaluated as a reference (and is PrivLeak's reference); `retain_logs` do not apply.
        tokenizer: where the tokenizer is (default: the target model's).
        reference: `"previous"` (default) or `"original"`: the reference model of NPO-like losses from request 2 on.
            GRUN's reference is always the base model with every edit off (the original model).
        seeds: the training seeds: every method runs its whole sequence once per seed (folders `seed_<s>`).
        seed: a one-seed shorthand (`seed: 0` is `seeds: [0]`; give one of them; default: seed 0).
        claims: [`SequentialClaim`]s written before the run (`"A > B"`, or a mapping with `request: k`), judged
            after request k over the seeds; `min_effect`: the verdict rule's smallest mean difference.
        max_steps, max_epochs: each request's budget (one of them; epochs are passes over the request's rows),
            times the method's `steps_factor`.
        eval_every: the cheap evaluation's interval in optimizer steps (times `steps_factor`); a request is also
            evaluated before its first step, so one already forgotten by earlier requests trains 0 steps.
        training: `UnlearningConfig` fields of every request (batch size, scheduler, `bf16`, ...).
        utility: `"model_utility"` (the default on TOFU and files data) or `"retain_utility"`; MUSE:
            `"knowmem_retain_rougeL_f1"` (its default and only utility).
        privleak: MUSE only: also MUSE's PrivLeak after each request (needs `privleak/forget` and `privleak/holdout`;
            relative to the retain model's AUC when there is one, else, on the Hub, to MUSE's published retrain AUC).
        gate_matrix: for GRUN, record the gates' firing matrix after each request.
        keep_models: keep every request's model (default: only the latest full or merged model, which a resumed
            sequence starts from; GRUN modules and LoRA adapters are small and always kept).
        dtype: the models' dtype (`float32`, `bfloat16`).
        workers: how many (method, seed) sequences run at once, each in its own process (default 1: in this
            process). With GPUs, each worker process is pinned to one of them.
        threads_per_worker: torch threads of each worker on the CPU (default: the CPU cores over `workers`).
    """

    target_model: str
    methods: dict[str, MethodSpec]
    targets: dict[str, Any]
    stop_at_targets: bool = True
    data: DataSpec = field(default_factory=DataSpec)
    requests: RequestsSpec = field(default_factory=RequestsSpec)
    retain_model: str | None = None
    retain_logs: str | None = None
    tokenizer: str | None = None
    reference: str = "previous"
    seeds: list[int] | None = None
    seed: int | None = None
    claims: list[SequentialClaim] = field(default_factory=list)
    min_effect: float = 0.01
    max_steps: int | None = None
    max_epochs: float | None = None
    eval_every: int = 10
    training: dict[str, Any] = field(default_factory=dict)
    utility: str | None = None
    privleak: bool = False
    gate_matrix: bool = True
    keep_models: bool = False
    dtype: str = "float32"
    workers: int = 1
    threads_per_worker: int | None = None

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("A sequence needs at least one method.")
        for name, spec in self.methods.items():
            if not METHOD_NAME.match(name):
                raise ValueError(f"Method name {name!r}: use letters, digits, '_', '-', '.', '+' (it names folders).")
            if len(spec.learning_rates) != 1:
                raise ValueError(
                    f"methods.{name}: a sequence runs one learning rate per method, got {spec.learning_rates}; "
                    "choose it first (e.g. with hf-unlearn compare), or add one method per rate."
                )
        if isinstance(self.targets, (str, Target)) or (
            isinstance(self.targets, Sequence) and not isinstance(self.targets, Mapping)
        ):
            items = [self.targets] if isinstance(self.targets, (str, Target)) else list(self.targets)
            self.targets = {str(t): str(t) for t in items}
        if not self.targets:
            raise ValueError("A sequence needs a target per request, e.g. targets: [forget_probability<=0.1].")
        self.targets = {name: str(_target(value)) for name, value in dict(self.targets).items()}
        if self.seeds is not None and self.seed is not None:
            raise ValueError(f"Give seeds (a list) or seed (one seed), not both: seeds {self.seeds}, seed {self.seed}")
        if self.seeds is None:
            self.seeds = [0 if self.seed is None else self.seed]
        self.seed = None  # normalised: `seeds` holds them
        if isinstance(self.seeds, (int, str)) or not self.seeds:
            raise ValueError(f"seeds must be a non-empty list of integers, got {self.seeds!r}.")
        if any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds) or len(set(self.seeds)) != len(
            self.seeds
        ):
            raise ValueError(f"seeds must be distinct integers, got {self.seeds!r}.")
        self.seeds = list(self.seeds)
        self.claims = [c if isinstance(c, SequentialClaim) else parse_sequential_claim(c) for c in self.claims]
        if not isinstance(self.stop_at_targets, bool):
            raise ValueError(f"stop_at_targets must be true or false, got {self.stop_at_targets!r}.")
        if self.claims and not self.stop_at_targets:
            raise ValueError(
                "Claims are judged at matched forgetting, which the targets' stop gives: with stop_at_targets: false "
                "every request trains its budget and the forgetting differs between methods; drop the claims or "
                "the stop_at_targets line."
            )
        for claim in self.claims:
            for side in (claim.better, claim.than):
                if side not in self.methods:
                    raise ValueError(f"Claim {claim.better} > {claim.than}: no method {side!r} in methods.")
        self._check_benchmark()
        if self.min_effect < 0:
            raise ValueError(f"min_effect must be >= 0, got {self.min_effect}.")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {list(REFERENCES)}, got {self.reference!r}.")
        if (self.max_steps is None) == (self.max_epochs is None):
            raise ValueError("Give the budget of a request as exactly one of max_steps and max_epochs.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}.")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise ValueError(f"max_epochs must be > 0, got {self.max_epochs}.")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}.")
        for key in ("workers", "threads_per_worker"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}.")
        if self.workers is None:
            self.workers = 1
        if self.retain_model and self.retain_logs:
            raise ValueError("Give retain_model or retain_logs, not both.")
        if self.requests.authors is not None and self.data.source == "files":
            raise ValueError("requests.authors cuts TOFU's forget split; with files give size, count or files.")
        needs_retain = [t for t in self.targets.values() if t.startswith("forget_quality")]
        if needs_retain and not (self.retain_model or self.retain_logs):
            raise ValueError(f"The target(s) {needs_retain} need forget quality: give retain_model or retain_logs.")

    def _check_benchmark(self) -> None:
        """The targets, the utility, the requests and the claims must be those of the data's benchmark (TOFU for
        TOFU and files data, MUSE for MUSE data); sets the benchmark's defaults (utility, MUSE's folds)."""
        benchmark = self.data.benchmark
        kinds = {t: TARGET_BENCHMARKS[_target(t).metric] for t in self.targets.values()}
        tofu = [t for t, kind in kinds.items() if kind == "tofu"]
        muse = [t for t, kind in kinds.items() if kind == "muse"]
        if tofu and muse:
            raise ValueError(
                f"targets mix TOFU metrics {tofu} and MUSE metrics {muse}: a request is evaluated by one benchmark, "
                f"its data's ({self.data.source}: {benchmark.upper()}); keep the {benchmark.upper()} targets."
            )
        if benchmark == "tofu" and muse:
            raise ValueError(
                f"targets {muse}: {self.data.source} data is evaluated with TOFU metrics; MUSE targets are not "
                "supported here (they need data: {source: muse} and MUSE's folds)."
            )
        if benchmark == "muse" and tofu:
            raise ValueError(
                f"targets {tofu}: MUSE data is evaluated with MUSE metrics (its folds are raw text, no TOFU "
                "questions); use knowmem_forget_rougeL_f1<=x or verbmem_forget_rougeL_f1<=x."
            )
        if self.utility is None:
            self.utility = UTILITY_OF_BENCHMARK[benchmark][0]
        if self.utility not in UTILITY_METRICS:
            raise ValueError(f"utility must be one of {list(UTILITY_METRICS)}, got {self.utility!r}.")
        if self.utility not in UTILITY_OF_BENCHMARK[benchmark]:
            raise ValueError(
                f"utility {self.utility!r} is not computed on {self.data.source} data: its evaluation "
                f"({benchmark.upper()}) gives {list(UTILITY_OF_BENCHMARK[benchmark])}; drop `utility` for the default."
            )
        if benchmark != "muse":
            if self.requests.muse_folds is not None:
                raise ValueError("requests.muse_folds are MUSE's sustainability folds; they need data: {source: muse}")
            if self.privleak:
                raise ValueError("privleak is MUSE's PrivLeak: it needs data: {source: muse}.")
            return
        cut = [k for k in ("size", "authors", "count", "files") if getattr(self.requests, k) is not None]
        if cut:
            raise ValueError(
                f"requests.{cut[0]}: a MUSE sequence's requests are MUSE-News's sustainability folds (raw/forget, "
                "sust/forget_2..4), not cuts of one forget set; drop it, or choose folds with requests.muse_folds "
                "(and requests.limit)."
            )
        if self.requests.muse_folds is None:
            self.requests = replace(self.requests, muse_folds=list(MUSE_FOLDS))
        if self.retain_logs:
            raise ValueError("retain_logs are TOFU logs (forget quality); a MUSE sequence does not read them.")
        cumulative = [c.metric for c in self.claims if c.metric.startswith("cumulative_")]
        if cumulative:
            raise ValueError(f"Claims on {cumulative}: cumulative forget metrics are TOFU's; not on MUSE data.")

    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SequentialConfig:
        """A config from plain data (a YAML document's), with errors that name the bad key."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"A sequence config is a mapping of keys, got {type(raw).__name__}.")
        check_keys("sequential config", raw, cls)
        values = dict(raw)
        values["methods"] = parse_methods(values.get("methods"), rename={"learning_rate": "learning_rates"})
        for key, cls_ in (("requests", RequestsSpec), ("data", DataSpec)):
            section = values.get(key)
            if section is None:
                values.pop(key, None)
            elif isinstance(section, Mapping):
                check_keys(key, section, cls_)
                section = dict(section)
                files = getattr(values.get("requests"), "files", None)
                if key == "data" and files and section.get("source") == "files" and not section.get("forget"):
                    section["forget"] = files[0]  # DataSpec wants a forget file; each request reads its own
                try:
                    values[key] = cls_(**section)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{key}: {err}") from err
        values.setdefault("targets", {})
        claims = values.get("claims") or []
        if not isinstance(claims, Sequence) or isinstance(claims, (str, Mapping)):
            raise ValueError("claims must be a list of claims ('A > B' or mappings with better/than/request).")
        values["claims"] = [parse_sequential_claim(c) for c in claims]
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SequentialConfig:
        """Read a config file (YAML or JSON). Paths starting with `./` or `../` are taken from the file's folder."""
        path = Path(path)
        return cls.from_dict(read_yaml(path, "sequence config")).relative_to(path.parent)

    def relative_to(self, folder: Path) -> SequentialConfig:
        """Paths starting with `./` or `../` are taken from `folder` (the config file's)."""

        def resolve(value: str | None) -> str | None:
            if value and (value.startswith("./") or value.startswith("../")):
                return str((Path(folder) / value).resolve())
            return value

        for name in ("target_model", "retain_model", "retain_logs", "tokenizer"):
            setattr(self, name, resolve(getattr(self, name)))
        for name in ("data_dir", "forget", "retain", "forget_eval", "retain_eval"):
            setattr(self.data, name, resolve(getattr(self.data, name)))
        for name in ("files", "eval_files"):
            value = getattr(self.requests, name)
            if value is not None:
                setattr(self.requests, name, [resolve(v) for v in value])
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able); `from_dict(to_dict())` gives the same config."""
        return asdict(self)

    def stable_dict(self) -> dict[str, Any]:
        """`to_dict()` without the later keys at their defaults (`privleak`, `requests.muse_folds`,
        `stop_at_targets`): what the fingerprints hash, so that sequences keep the fingerprints (and resume) they had
        before those keys existed."""
        data = self.to_dict()
        if not data["privleak"]:
            data.pop("privleak")
        if data["stop_at_targets"]:
            data.pop("stop_at_targets")
        if data["requests"]["muse_folds"] is None:
            data["requests"].pop("muse_folds")
        return data

    def for_seed(self, seed: int) -> SequentialConfig:
        """This config with one seed (what one run of each method's sequence computes)."""
        return replace(self, seeds=[seed], seed=None)

    def fingerprint(self, method: str, seed: int | None = None) -> str:
        """What a method's sequence on `seed` (default: the first seed) computes: everything but the other
        methods, the other seeds, the claims and the bookkeeping (the same as before seeds and claims existed)."""
        data = self.stable_dict()
        for key in ("methods", "keep_models", "seeds", "claims", "min_effect", "workers", "threads_per_worker"):
            data.pop(key)
        data["seed"] = self.seeds[0] if seed is None else seed
        payload = [data, asdict(self.methods[method])]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def labels(self) -> dict[str, str]:
        return {name: spec.display_label() for name, spec in self.methods.items()}

    def target_objects(self) -> list[Target]:
        return [_target(t) for t in self.targets.values()]

    def compare_config(self) -> CompareConfig:
        """The comparison whose worker functions load, train and evaluate this sequence's requests (one seed, the
        sequence's targets and budget; no refinement)."""
        return CompareConfig(
            target_model=self.target_model,
            methods=self.methods,
            targets=parse_named_targets(dict(self.targets), 0.0),
            data=self.data,
            retain_model=self.retain_model,
            retain_logs=self.retain_logs,
            tokenizer=self.tokenizer,
            seeds=list(self.seeds),
            max_steps=self.max_steps,
            max_epochs=self.max_epochs,
            eval_every=self.eval_every,
            refine="none",
            training=dict(self.training),
            utility=self.utility,
            workers=1,
            dtype=self.dtype,
        )


def _target(value: Any) -> Target:
    if isinstance(value, Target):
        return value
    if isinstance(value, Mapping) and "target" in value:
        value = value["target"]
    try:
        return parse_target(str(value))
    except ValueError as err:
        raise ValueError(f"targets: {err}") from err
