"""What a comparison runs: the models, the data, the methods with their learning-rate grids, the forgetting targets,
the seeds and budget, the attacks on the matched models and the claims to judge ([`CompareConfig`], from YAML).

Everything here is fixed before the first run: the report prints it as the comparison's pre-registration. This
module imports nothing heavy (torch, transformers), so `hf-unlearn compare --dry-run` starts quickly.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..evaluation.targets import TARGET_BENCHMARKS, Target, parse_target

__all__ = [
    "ATTACK_METRIC_PREFIX",
    "AttackSpec",
    "Claim",
    "CompareConfig",
    "DataSpec",
    "MethodSpec",
    "NamedTarget",
    "REFINE_MODES",
    "UTILITY_METRICS",
]

#: How the matched point is placed at the target (see [`CompareConfig.refine`]).
REFINE_MODES = ("replay", "none")
#: The utility a claim compares: TOFU's model utility (9 components over 4 splits) or the retain authors' only
#: (harmonic mean of their answer probability, ROUGE-L recall and truth ratio: for a model that knows nothing else);
#: on MUSE data, KnowMem on the retain questions (ROUGE-L F1).
UTILITY_METRICS = ("model_utility", "retain_utility", "knowmem_retain_rougeL_f1")
#: The utilities each benchmark's evaluation computes (`tofu` and `files` data: TOFU's; `muse`: MUSE's).
UTILITY_OF_BENCHMARK = {"tofu": ("model_utility", "retain_utility"), "muse": ("knowmem_retain_rougeL_f1",)}
#: The retain-author utility's components.
RETAIN_UTILITY_KEYS = ("retain_probability", "retain_rougeL_recall", "retain_truth_ratio")
DATA_SOURCES = ("tofu", "files", "muse")
#: The raw-text splits a MUSE comparison trains on by default (MUSE's `raw` configuration).
MUSE_TRAIN_SPLITS = ("forget", "retain1")
#: A method's name names its runs' folders: keep it simple.
METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_keys(where: str, given: Mapping[str, Any], cls: type) -> None:
    """Raise when `given` has a key that is not a field of the dataclass `cls`, naming the closest field."""
    known = [f.name for f in fields(cls)]
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}.{hint} The keys are: {', '.join(known)}.")


def _positive_numbers(where: str, values: Any) -> list[float]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a list of positive numbers, got {values!r}.") from None
    if not numbers or any(v <= 0 for v in numbers):
        raise ValueError(f"{where} must be a non-empty list of positive numbers, got {values!r}.")
    return numbers


@dataclass
class MethodSpec:
    """One method of the comparison: the trainer's losses, GRU or not, the model kind (full weights, a peft
    adapter, GRUN) and its learning-rate grid.

    Args:
        forget_loss: a registered forget loss (`hf_unlearn.losses.list_losses("forget")`).
        retain_loss: a registered retain loss or `"none"`.
        forget_loss_kwargs, retain_loss_kwargs: the losses' keyword arguments (NPO's `beta`, ...).
        rectification: `"gru"` projects the objective's gradient off the retain gradient's moving average.
        kind: the method's registry name (`"full"`, `"peft"`, `"grun"`, or one registered by the user).
        method_kwargs: the kind's config: `peft.LoraConfig(**method_kwargs)` (`r`, `lora_alpha`,
            `target_modules`, ...) or `GRUNConfig(**method_kwargs)` (`layers`: a list, or `"paper"` for the
            paper's relative depths 20/32, 25/32 and the last layer; `rank`, ...).
        learning_rates: the grid the rate rule chooses from (half a decade apart is a good spacing).
        steps_factor: this method's step cap and evaluation interval, in multiples of the comparison's (GRUN trains
            a few thousand parameters and takes more, cheaper steps).
        config: further `UnlearningConfig` fields for this method (`trainable_parameters`, `gru_retain_weight`, ...).
        label: the name in the report (default: derived from the losses, e.g. `GRU(npo + nll)`).
        targets: the targets this method is run to and judged at (default: all). Methods that do not lower the
            answer's probability (IDK, DPO) are judged at a target on what they do lower (forget ROUGE-L, truth
            ratio) without every other run paying for that metric's evaluations.
    """

    forget_loss: str
    learning_rates: list[float]
    retain_loss: str = "nll"
    forget_loss_kwargs: dict[str, Any] = field(default_factory=dict)
    retain_loss_kwargs: dict[str, Any] = field(default_factory=dict)
    rectification: str | None = None
    kind: str = "full"
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    steps_factor: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    targets: list[str] | None = None

    def __post_init__(self) -> None:
        self.learning_rates = _positive_numbers("learning_rates", self.learning_rates)
        if self.rectification not in (None, "none", "gru"):
            raise ValueError(f"rectification must be 'gru' or None, got {self.rectification!r}.")
        if self.rectification == "none":
            self.rectification = None
        if isinstance(self.steps_factor, bool) or not isinstance(self.steps_factor, int) or self.steps_factor < 1:
            raise ValueError(f"steps_factor must be an integer >= 1, got {self.steps_factor!r}.")
        for name in ("forget_loss_kwargs", "retain_loss_kwargs", "method_kwargs", "config"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a mapping, got {getattr(self, name)!r}.")
        reserved = {"learning_rate", "seed", "output_dir", "max_steps", "forget_loss", "retain_loss"}
        clash = sorted(reserved & set(self.config))
        if clash:
            raise ValueError(f"config may not set {clash}: the comparison sets them (learning_rates, seeds, budget).")

    def display_label(self) -> str:
        if self.label:
            return self.label
        objective = self.forget_loss if self.retain_loss == "none" else f"{self.forget_loss} + {self.retain_loss}"
        if self.kind == "grun":
            return f"GRUN({self.forget_loss})"
        if self.kind == "peft":
            objective = f"LoRA {objective}"
        return f"GRU({objective})" if self.rectification == "gru" else objective


@dataclass
class DataSpec:
    """The comparison's data: TOFU (from the Hub, the bundled subset or a folder in the Hub's layout), local files,
    or MUSE.

    Args:
        source: `"tofu"`, `"files"` or `"muse"`. MUSE: the model unlearns MUSE's raw forget text (retaining its raw
            retain text, as `hf-unlearn train` does with `dataset_config: raw`); its targets are MUSE metrics
            (`knowmem_forget_rougeL_f1`, `verbmem_forget_rougeL_f1`, `knowmem_retain_rougeL_f1`), evaluated along
            the runs with `MUSEEvaluator`; the full evaluation at matched points is `MUSEEvaluator`'s (KnowMem,
            VerbMem and, where the data has it, PrivLeak); the utility is `knowmem_retain_rougeL_f1`.
        forget_split: TOFU's forget configuration (`forget01`, `forget05`, `forget10`); its retain complement is
            trained on, `<forget_split>_perturbed` and `retain_perturbed` are evaluated. Not used by MUSE.
        data_dir: where TOFU is read: None for the Hub (`locuslab/TOFU`), `"bundled"`, or a folder. MUSE: None for
            the Hub (`muse-bench/MUSE-News`), or a folder in its layout (`<data_dir>/<config>/<split>.json` or
            `.jsonl`: `raw/forget`, `raw/retain1`, `knowmem/forget_qa`, ..., `verbmem/forget`, and optionally
            `privleak/forget`, `privleak/holdout`).
        forget, retain: `files`: the training rows (JSON Lines, CSV or Parquet with `question` and `answer`).
            MUSE: the `raw` splits trained on (default `forget` and `retain1`).
        forget_eval, retain_eval: `files`: the evaluation rows, TOFU's perturbed layout (`question`, `answer`,
            `paraphrased_answer`, `perturbed_answer`); default: the training rows (no truth ratio then).
        eval_splits: the TOFU splits of the full evaluation at matched points (default: `retain` and `forget`, and
            `real_authors` and `world_facts` when the utility is `model_utility`).
        max_questions: evaluate at most this many questions per split (None: all); MUSE: items per split
            (`max_items`).
        max_new_tokens: greedy generation length of the full evaluation (ROUGE-L). MUSE: a cap on KnowMem's 32
            and VerbMem's 128 new tokens (the default, 200, keeps MUSE's lengths).
        eval_batch_size: the evaluator's batch size.
    """

    source: str = "tofu"
    forget_split: str = "forget10"
    data_dir: str | None = None
    forget: str | None = None
    retain: str | None = None
    forget_eval: str | None = None
    retain_eval: str | None = None
    eval_splits: list[str] | None = None
    max_questions: int | None = None
    max_new_tokens: int = 200
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data.source must be one of {list(DATA_SOURCES)}, got {self.source!r}.")
        if self.source == "files" and not (self.forget and self.retain):
            raise ValueError("data.source 'files' needs data.forget and data.retain (the training rows' files).")
        if self.source == "tofu" and self.forget_split not in ("forget01", "forget05", "forget10"):
            raise ValueError(f"data.forget_split must be forget01, forget05 or forget10, got {self.forget_split!r}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"data.max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    @property
    def benchmark(self) -> str:
        """`"muse"` or `"tofu"` (TOFU and local files): the evaluator of the targets and the matched points."""
        return "muse" if self.source == "muse" else "tofu"

    def muse_splits(self) -> tuple[str, str]:
        """MUSE: the `raw` forget and retain splits trained on."""
        return self.forget or MUSE_TRAIN_SPLITS[0], self.retain or MUSE_TRAIN_SPLITS[1]

    def describe(self) -> str:
        if self.source == "muse":
            where = "the Hub (muse-bench/MUSE-News)" if self.data_dir is None else f"{self.data_dir}"
            forget, retain = self.muse_splits()
            return f"MUSE from {where}: training on raw/{forget} (forget) and raw/{retain} (retain)"
        if self.source == "files":
            return f"local files: forget {self.forget}, retain {self.retain}"
        where = {None: "the Hub (locuslab/TOFU)", "bundled": "the bundled TOFU subset"}.get(
            self.data_dir, f"TOFU in {self.data_dir}"
        )
        return f"TOFU {self.forget_split} from {where}"


@dataclass(frozen=True)
class NamedTarget:
    """A forgetting target with a short name (`p10`) and the largest difference between two methods' forget metric
    at their matched points (`tolerance`, in the metric's units) for a claim to be testable there."""

    name: str
    target: Target
    tolerance: float

    @property
    def title(self) -> str:
        return f"{self.target.metric} {'≤' if self.target.direction == 'below' else '≥'} {self.target.threshold:g}"


#: A claim's metric on an attack: `attack:<name>`, the forget answers' probability after the attack `<name>`
#: (`relearning`, `quantization` or a preset of `hf_unlearn.evaluation.robustness.presets`); lower is better.
ATTACK_METRIC_PREFIX = "attack:"


@dataclass
class Claim:
    """A claim about two methods at the same forgetting, judged at each of `targets` (default: every target both
    methods run to).

    By default "`better` keeps more utility than `than`". `metric` names another quantity at the matched points: a
    key of the full evaluation's summary (higher is better, e.g. `forget_quality`) or `attack:<name>`, the forget
    answers' probability after that attack (lower is better: the forgotten answers came back less). With `margin`
    the claim is one of non-inferiority: "`better` loses at most `margin` of the metric against `than`".
    """

    better: str
    than: str
    targets: list[str] | None = None
    text: str | None = None
    metric: str = "utility"
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.margin is not None and (not isinstance(self.margin, (int, float)) or self.margin < 0):
            raise ValueError(f"Claim {self.better} > {self.than}: margin must be a number >= 0, got {self.margin!r}.")

    @property
    def attack(self) -> str | None:
        """The attack a claim on `attack:<name>` compares, else None."""
        return self.metric.removeprefix(ATTACK_METRIC_PREFIX) if self.metric.startswith(ATTACK_METRIC_PREFIX) else None

    @property
    def higher_is_better(self) -> bool:
        return self.attack is None

    def describe(self, labels: Mapping[str, str]) -> str:
        if self.text:
            return self.text
        a, b = labels.get(self.better, self.better), labels.get(self.than, self.than)
        quantity = f"forget probability after {self.attack}" if self.attack else self.metric
        if self.margin is not None:
            return f"{a} loses at most {self.margin:g} {quantity} against {b}"
        return f"{a} keeps {'more' if self.higher_is_better else 'less'} {quantity} than {b}"


@dataclass
class AttackSpec:
    """The attacks on the matched models of `seeds` (default: the first seed) at `target`.

    `relearning`: keyword arguments of `relearning_attack` (`steps`, `learning_rate`; the forget evaluation rows are
    split in halves: relearn the even questions, measure the odd ones); `quantization`: of `quantization_attack`
    (`bits`, `scheme`). An empty mapping runs the attack with its defaults; a missing key does not run it.
    `presets`: attacks as papers run them (`hf-unlearn robustness --preset list`), on every forget evaluation
    question, with `preset_overrides` (preset -> settings) for what a preset lets scale.
    """

    target: str
    seeds: list[int] | None = None
    relearning: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    presets: list[str] | None = None
    preset_overrides: dict[str, dict[str, Any]] | None = None

    def names(self) -> list[str]:
        """What the attacks' results are called (`relearning`, `quantization`, the presets)."""
        own = [name for name in ("relearning", "quantization") if getattr(self, name) is not None]
        return own + list(self.presets or [])


@dataclass
class CompareConfig:
    """A matched-forgetting comparison (`hf-unlearn compare --config FILE`).

    The protocol ([`hf_unlearn.compare.run_comparison`]): every method unlearns a copy of `target_model` at each
    rate of its grid with the first seed, evaluated cheaply every `eval_every` steps (and before the first) until it
    has met every target or its budget; the first evaluation meeting a target is refined to the step where it is
    first met (`refine`), and the model there gets the full TOFU evaluation. Per method and target, THE RATE RULE
    picks the rate whose first-seed run reached the target with the highest utility (ties: the smaller rate); the
    other seeds run that rate. A claim "A keeps more utility than B" is judged per target over the paired seeds
    (THE VERDICT RULE): *holds* if A's utility is higher on every seed by `min_effect` on average, *contradicted*
    if lower on every seed by as much, *no clear difference* otherwise; *not testable* unless both reached the
    target on every seed with matched forget metrics within the target's tolerance.

    Args:
        target_model: the model to unlearn (a Hub id or a folder).
        retain_model: the gold standard trained without the forget data (its logs give forget quality), or
        retain_logs: its TOFU logs from an earlier evaluation (a folder).
        tokenizer: where the tokenizer is (default: the target model's).
        data: a [`DataSpec`].
        methods: name -> [`MethodSpec`].
        targets: name -> target (`"forget_probability<=0.1"`) or `{target:, tolerance:}`.
        match_tolerance: the default tolerance of a target.
        seeds: the first picks the rates, the others repeat the chosen ones.
        max_steps, max_epochs: the budget of a run (one of them; epochs are passes over the forget set), times
            each method's `steps_factor`.
        eval_every: the cheap evaluation's interval in optimizer steps (times `steps_factor`).
        refine: `"replay"` reruns a run (same seed and data order) up to the evaluation that met a target,
            evaluating every step since the one before, so the matched point is the first STEP meeting it; `"none"`
            keeps the first evaluation meeting it.
        training: `UnlearningConfig` fields of every run (batch size, scheduler, `bf16`, ...).
        utility: `"model_utility"` or `"retain_utility"`.
        min_effect: the verdict rule's smallest mean difference.
        claims: [`Claim`]s.
        attacks: an [`AttackSpec`] or None.
        workers: parallel runs (processes). On a machine with GPUs, one run per GPU by default.
        threads_per_worker: torch threads of each CPU worker (default: the cores shared among the workers).
        gpus_per_run: > 1 launches each run with `accelerate launch` on that many GPUs (DDP).
        keep_checkpoints: keep the matched checkpoints' weights (default: deleted after their evaluation).
        dtype: the models' dtype (`float32`, `bfloat16`).
    """

    target_model: str
    methods: dict[str, MethodSpec]
    targets: dict[str, NamedTarget]
    data: DataSpec = field(default_factory=DataSpec)
    retain_model: str | None = None
    retain_logs: str | None = None
    tokenizer: str | None = None
    match_tolerance: float = 0.02
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_steps: int | None = None
    max_epochs: float | None = None
    eval_every: int = 10
    refine: str = "replay"
    training: dict[str, Any] = field(default_factory=dict)
    utility: str = "model_utility"
    min_effect: float = 0.01
    claims: list[Claim] = field(default_factory=list)
    attacks: AttackSpec | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    gpus_per_run: int = 1
    keep_checkpoints: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("A comparison needs at least one method.")
        for name in self.methods:
            if not METHOD_NAME.match(name):
                raise ValueError(f"Method name {name!r}: use letters, digits, '_', '-', '.', '+' (it names folders).")
        if not self.targets:
            raise ValueError("A comparison needs at least one target, e.g. targets: {p10: forget_probability<=0.1}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {self.seeds!r}.")
        if (self.max_steps is None) == (self.max_epochs is None):
            raise ValueError("Give the budget of a run as exactly one of max_steps and max_epochs.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}.")
        if self.max_epochs is not None and self.max_epochs <= 0:
            raise ValueError(f"max_epochs must be > 0, got {self.max_epochs}.")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}.")
        if self.refine not in REFINE_MODES:
            raise ValueError(f"refine must be one of {list(REFINE_MODES)}, got {self.refine!r}.")
        if self.utility not in UTILITY_METRICS:
            raise ValueError(f"utility must be one of {list(UTILITY_METRICS)}, got {self.utility!r}.")
        benchmark = self.data.benchmark
        if self.utility not in UTILITY_OF_BENCHMARK[benchmark]:
            raise ValueError(
                f"utility {self.utility!r} is not computed on {self.data.source} data: its evaluation "
                f"({benchmark.upper()}) gives {list(UTILITY_OF_BENCHMARK[benchmark])}."
            )
        wrong = [
            f"{n} ({t.target})" for n, t in self.targets.items() if TARGET_BENCHMARKS[t.target.metric] != benchmark
        ]
        if wrong:
            raise ValueError(
                f"The target(s) {wrong} are not {benchmark.upper()} metrics, which {self.data.source} data is "
                f"evaluated with: choose among {[m for m, b in TARGET_BENCHMARKS.items() if b == benchmark]}."
            )
        if benchmark == "muse" and self.retain_logs:
            raise ValueError("retain_logs are TOFU logs (forget quality); a MUSE comparison does not read them.")
        if self.retain_model and self.retain_logs:
            raise ValueError("Give retain_model or retain_logs, not both.")
        if self.gpus_per_run < 1:
            raise ValueError(f"gpus_per_run must be >= 1, got {self.gpus_per_run}.")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}.")
        if self.match_tolerance < 0:
            raise ValueError(f"match_tolerance must be >= 0, got {self.match_tolerance}.")
        for name, spec in self.methods.items():
            unknown = [t for t in spec.targets or [] if t not in self.targets]
            if unknown or spec.targets == []:
                raise ValueError(
                    f"methods.{name}.targets: {unknown or '[]'} are not among targets {list(self.targets)}."
                )
        needs_retain = [n for n, t in self.targets.items() if t.target.metric == "forget_quality"]
        if needs_retain and not (self.retain_model or self.retain_logs):
            raise ValueError(f"The target(s) {needs_retain} need forget quality: give retain_model or retain_logs.")
        for claim in self.claims:
            for side in (claim.better, claim.than):
                if side not in self.methods:
                    raise ValueError(f"Claim {claim.better} > {claim.than}: no method {side!r} in methods.")
            for name in claim.targets or []:
                if name not in self.targets:
                    raise ValueError(f"Claim {claim.better} > {claim.than}: no target {name!r} in targets.")
                for side in (claim.better, claim.than):
                    if name not in (t.name for t in self.targets_of(side)):
                        raise ValueError(
                            f"Claim {claim.better} > {claim.than} at {name!r}: method {side!r} does not run to it "
                            f"(methods.{side}.targets: {self.methods[side].targets}); drop it from the claim."
                        )
            if not self.claim_targets(claim):
                raise ValueError(
                    f"Claim {claim.better} > {claim.than}: the two methods run to no common target "
                    "(see their targets:); they cannot be compared at the same forgetting."
                )
            if claim.attack is not None:
                attacks = self.attacks
                if attacks is None or claim.attack not in attacks.names():
                    known = attacks.names() if attacks else []
                    raise ValueError(
                        f"Claim {claim.better} > {claim.than} on {claim.metric}: the attacks run {known}."
                    )
                if set(attacks.seeds or self.seeds[:1]) != set(self.seeds):
                    raise ValueError(
                        f"Claim {claim.better} > {claim.than} on {claim.metric} is judged over seeds {self.seeds}: "
                        f"attack them all (attacks.seeds: {self.seeds})."
                    )
                if self.claim_targets(claim) != [attacks.target]:
                    raise ValueError(
                        f"Claim {claim.better} > {claim.than} on {claim.metric}: the attacks run at target "
                        f"{attacks.target!r} only; give the claim targets: [{attacks.target}]."
                    )
        if self.attacks is not None and self.attacks.target not in self.targets:
            raise ValueError(f"attacks.target {self.attacks.target!r} is none of the targets {list(self.targets)}.")

    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CompareConfig:
        """A config from plain data (a YAML document's), with errors that name the bad key."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"A comparison config is a mapping of keys, got {type(raw).__name__}.")
        check_keys("compare config", raw, cls)
        values = dict(raw)
        values["methods"] = parse_methods(values.get("methods"))
        tolerance = float(values.get("match_tolerance", 0.02))
        values["targets"] = parse_named_targets(values.get("targets") or {}, tolerance)
        data = values.get("data") or {}
        if isinstance(data, Mapping):
            check_keys("data", data, DataSpec)
            values["data"] = DataSpec(**data)
        values["claims"] = [parse_claim(c) for c in values.get("claims") or []]
        attacks = values.get("attacks")
        if isinstance(attacks, Mapping):
            check_keys("attacks", attacks, AttackSpec)
            values["attacks"] = AttackSpec(**attacks)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CompareConfig:
        """Read a config file (YAML or JSON). Relative paths in it are taken from the file's folder."""
        path = Path(path)
        return cls.from_dict(read_yaml(path, "comparison config")).relative_to(path.parent)

    def relative_to(self, folder: Path) -> CompareConfig:
        """Paths starting with `./` or `../` are taken from `folder` (the config file's)."""

        def resolve(value: str | None) -> str | None:
            if value and (value.startswith("./") or value.startswith("../")):
                return str((folder / value).resolve())
            return value

        for name in ("target_model", "retain_model", "retain_logs", "tokenizer"):
            setattr(self, name, resolve(getattr(self, name)))
        for name in ("data_dir", "forget", "retain", "forget_eval", "retain_eval"):
            setattr(self.data, name, resolve(getattr(self.data, name)))
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able); `from_dict(to_dict())` gives the same config."""
        out = asdict(self)
        out["targets"] = {
            name: {"target": str(t.target), "tolerance": t.tolerance} for name, t in self.targets.items()
        }
        return out

    def fingerprint(self, keys: Sequence[str] | None = None) -> str:
        data = self.to_dict()
        if keys is not None:
            data = {k: data[k] for k in keys}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------------------------------------------------

    def targets_of(self, method: str) -> list[NamedTarget]:
        """The targets `method` runs to (all, or those its spec names), in the config's order."""
        wanted = self.methods[method].targets
        return [t for name, t in self.targets.items() if wanted is None or name in wanted]

    def claim_targets(self, claim: Claim) -> list[str]:
        """The targets `claim` is judged at: its own, or else every target that both of its methods run to."""
        if claim.targets:
            return list(claim.targets)
        both = {t.name for t in self.targets_of(claim.better)} & {t.name for t in self.targets_of(claim.than)}
        return [name for name in self.targets if name in both]

    @property
    def labels(self) -> dict[str, str]:
        return {name: spec.display_label() for name, spec in self.methods.items()}

    def target_metrics(self) -> list[str]:
        return list(dict.fromkeys(t.target.metric for t in self.targets.values()))

    def eval_splits(self) -> list[str]:
        if self.data.eval_splits:
            return list(self.data.eval_splits)
        if self.utility == "model_utility":
            return ["retain", "real_authors", "world_facts", "forget"]
        return ["retain", "forget"]


def read_yaml(path: str | Path, what: str) -> Any:
    """A config file's data (YAML or JSON; an empty file is an empty mapping), with errors naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {path}.")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err


def parse_methods(raw: Any, rename: Mapping[str, str] | None = None) -> dict[str, MethodSpec]:
    """`methods:` of a config: name -> [`MethodSpec`], with errors naming the method and the bad key. `rename` maps
    a key a config may use to the spec's (a sequence's `learning_rate` -> `learning_rates`, as a one-rate grid)."""
    if not isinstance(raw, Mapping):
        raise ValueError("methods must map a name to a method (forget_loss, learning_rates, ...).")
    parsed = {}
    for name, spec in raw.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"methods.{name} must be a mapping (forget_loss, learning_rates, ...).")
        spec = dict(spec)
        for given, field_name in (rename or {}).items():
            if given in spec and field_name not in spec:
                spec[field_name] = [spec.pop(given)]
        check_keys(f"methods.{name}", spec, MethodSpec)
        try:
            parsed[str(name)] = MethodSpec(**spec)
        except (TypeError, ValueError) as err:
            raise ValueError(f"methods.{name}: {err}") from err
    return parsed


def parse_named_targets(raw: Any, tolerance: float) -> dict[str, NamedTarget]:
    """Targets from a config: name -> `"metric<=x"` or `{target:, tolerance:}`, or a list of strings (named by
    themselves); `tolerance` is the default matched-forgetting tolerance."""
    if isinstance(raw, (list, tuple)):  # a list of strings: each names itself
        raw = {str(item): item for item in raw}
    if not isinstance(raw, Mapping):
        raise ValueError("targets must map a name to a target such as 'forget_probability<=0.1'.")
    targets = {}
    for name, spec in raw.items():
        own_tolerance = tolerance
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"target", "tolerance"}
            if unknown or "target" not in spec:
                raise ValueError(f"targets.{name}: give 'target' (and optionally 'tolerance'), got {sorted(spec)}.")
            own_tolerance = float(spec.get("tolerance", tolerance))
            spec = spec["target"]
        try:
            target = parse_target(str(spec))
        except ValueError as err:
            raise ValueError(f"targets.{name}: {err}") from err
        if own_tolerance < 0:
            raise ValueError(f"targets.{name}: tolerance must be >= 0, got {own_tolerance}.")
        targets[str(name)] = NamedTarget(str(name), target, own_tolerance)
    return targets


_CLAIM = re.compile(r"^\s*(\S+)\s*>\s*(\S+)\s*$")


def parse_claim(raw: Any) -> Claim:
    """`"A > B"` or `{better: A, than: B, targets: [...], text: ...}`."""
    if isinstance(raw, str):
        match = _CLAIM.match(raw)
        if match is None:
            raise ValueError(
                f"Cannot read the claim {raw!r}: write 'A > B' (A keeps more utility than B), or a mapping."
            )
        return Claim(*match.groups())
    if isinstance(raw, Mapping):
        check_keys("claim", raw, Claim)
        return Claim(**raw)
    raise ValueError(f"A claim is 'A > B' or a mapping with better/than, got {raw!r}.")
