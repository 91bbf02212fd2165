"""TOFU-mini: a CPU-sized TOFU benchmark of every unlearning method of hf_unlearn, with GRU and GRUN.

From 40 TOFU authors (20 questions each) a tiny Llama and its byte-level BPE tokenizer are trained from scratch until
the model has memorised every answer (the *target*), and a second one on all but the 4 forget authors (the *retain*
model, the gold standard). The forget authors are then unlearned from the target with GA, GD, NPO, SimNPO, WGA,
TNPO, IDK and RMU, each with and without GRU, and with GRUN (GA and NPO), over several seeds; every result is
evaluated against the retain model with TOFU's metrics, and the script writes a table, an FQ-vs-utility plot and a
check of which claims of the GRU / GRUN / WGA-TNPO papers hold at this scale.

Which authors (see :func:`select_authors`): TOFU's perturbed answers (needed by the truth ratio and hence by forget
quality) exist only for authors 0-19 (``retain_perturbed``) and 180-199 (``forget10_perturbed``), so the benchmark
takes the first and the last N/2 authors, forgets the last 10% (as TOFU's forget splits do) and measures retention on
the first N/2 (the retain authors with perturbed answers). The rows ship in ``tofu_mini_data/`` (``--build-data``
rebuilds them from a copy of the TOFU data set).

Utility: the tiny model knows nothing of the world, so TOFU's real-authors and world-facts splits measure nothing
here (the script shows it); "retain-author utility" is the harmonic mean of the retain authors' answer probability,
ROUGE-L recall and truth ratio.

    python examples/benchmarks/tofu_mini.py --results-md examples/benchmarks/RESULTS.md   # the full benchmark
    python examples/benchmarks/tofu_mini.py --quick    # about 5 minutes: 20 authors, 5 methods, 1 seed
    python examples/benchmarks/tofu_mini.py --report-from OUTPUT_DIR --results-md RESULTS.md   # report only

Both runs use 2 worker processes with one torch thread each (``--workers``, ``--threads``): one per core of the
2-core machine they were sized for.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Dataset
from scipy import stats as sps
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from hf_unlearn.data import load_tofu, read_jsonl
from hf_unlearn.demo.quickstart import RETAIN_UTILITY_KEYS, UnlearningRecipe, unlearn_copy
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama, train_tokenizer
from hf_unlearn.evaluation.logs import (
    per_question_probability,
    per_question_rouge_l_recall,
    split_truth_ratio_stats,
)
from hf_unlearn.evaluation.metrics import model_utility
from hf_unlearn.evaluation.tofu import evaluate_tofu_model

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the worker processes are forked
# Noise of the tiny CPU runs, repeated once per unlearning run.
warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*'pin_memory' argument is set as true", category=UserWarning)
HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "tofu_mini_data"
QUESTIONS_PER_AUTHOR = 20
NUM_TOFU_AUTHORS = 200
#: Authors whose questions have paraphrased and perturbed answers in TOFU (retain_perturbed / forget10_perturbed).
RETAIN_PERTURBED_AUTHORS = range(0, 20)
FORGET_PERTURBED_AUTHORS = range(180, 200)
MAX_AUTHORS = len(RETAIN_PERTURBED_AUTHORS) + len(FORGET_PERTURBED_AUTHORS)
#: Retention is evaluated on at most this many retain authors (200 questions: the data stays small, evaluation quick).
MAX_RETAIN_EVAL_AUTHORS = 10
DATA_FILES = {"train": "train.jsonl", "forget_eval": "forget_perturbed.jsonl", "retain_eval": "retain_perturbed.jsonl"}
#: A metric "separates" the target from the retain model when the KS test on its per-question values gives p < this.
SEPARATION_P = 0.01


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorSplit:
    """Which TOFU authors (0-based, in TOFU's order) the benchmark trains on, forgets, retains and evaluates."""

    authors: tuple[int, ...]
    forget: tuple[int, ...]
    retain: tuple[int, ...]
    retain_eval: tuple[int, ...]


def select_authors(num_authors: int = 40, forget_fraction: float = 0.1) -> AuthorSplit:
    """The first and the last `num_authors / 2` TOFU authors; the last `forget_fraction` of them are forgotten.

    Only these authors have TOFU's perturbed answers (see the module docstring); retention is evaluated on the first
    half (all retain authors with perturbed answers), forgetting on the forget authors. Deterministic.
    """
    if num_authors < 2 or num_authors % 2 or num_authors > MAX_AUTHORS:
        raise ValueError(f"num_authors must be even, between 2 and {MAX_AUTHORS}; got {num_authors}.")
    if not 0 < forget_fraction < 1:
        raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction}.")
    half = num_authors // 2
    authors = tuple(range(half)) + tuple(range(NUM_TOFU_AUTHORS - half, NUM_TOFU_AUTHORS))
    num_forget = min(half, max(1, round(num_authors * forget_fraction)))
    forget = authors[-num_forget:]
    retain = tuple(a for a in authors if a not in forget)
    return AuthorSplit(
        authors=authors, forget=forget, retain=retain, retain_eval=authors[: min(half, MAX_RETAIN_EVAL_AUTHORS)]
    )


def build_data(tofu_dir: str | Path, out_dir: str | Path = DATA_DIR) -> dict[str, int]:
    """Write the benchmark's TOFU rows (the largest selection, :data:`MAX_AUTHORS` authors) as JSON Lines.

    `tofu_dir` holds TOFU in the Hub's layout (``full.json``, ``retain_perturbed.json``, ``forget10_perturbed.json``).
    Every row gets its TOFU ``author`` index. Returns file name -> rows written.
    """
    tofu_dir, out_dir = Path(tofu_dir), Path(out_dir)
    full = read_jsonl(tofu_dir / "full.json")
    if len(full) != NUM_TOFU_AUTHORS * QUESTIONS_PER_AUTHOR:
        raise ValueError(f"{tofu_dir / 'full.json'} has {len(full)} rows; TOFU's full set has 4000.")
    split = select_authors(MAX_AUTHORS)
    per = QUESTIONS_PER_AUTHOR
    train = [{"author": a, **full[a * per + i]} for a in split.authors for i in range(per)]
    retain_pert = read_jsonl(tofu_dir / "retain_perturbed.json")
    forget_pert = read_jsonl(tofu_dir / "forget10_perturbed.json")
    # retain_perturbed starts at author 0, forget10_perturbed at author 180; 20 rows per author in both
    perturbed = {a: retain_pert[a * per : (a + 1) * per] for a in RETAIN_PERTURBED_AUTHORS}
    first = FORGET_PERTURBED_AUTHORS.start
    perturbed |= {a: forget_pert[(a - first) * per : (a - first + 1) * per] for a in FORGET_PERTURBED_AUTHORS}
    keep = ("question", "answer", "paraphrased_answer", "perturbed_answer")
    # Only the rows a selection can evaluate: the forget authors and the retain-evaluation authors.
    files = {
        DATA_FILES["train"]: train,
        DATA_FILES["forget_eval"]: [
            {"author": a, **{k: r[k] for k in keep}} for a in split.forget for r in perturbed[a]
        ],
        DATA_FILES["retain_eval"]: [
            {"author": a, **{k: r[k] for k in keep}} for a in split.retain_eval for r in perturbed[a]
        ],
    }
    # The perturbed rows must be the same questions as the training rows of their author.
    for name in (DATA_FILES["forget_eval"], DATA_FILES["retain_eval"]):
        for position, row in enumerate(files[name]):
            index = row["author"] * QUESTIONS_PER_AUTHOR + position % QUESTIONS_PER_AUTHOR
            if full[index]["question"] != row["question"]:
                raise ValueError(f"{name}: the perturbed row of author {row['author']} does not match full.json.")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        with open(out_dir / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return {name: len(rows) for name, rows in files.items()}


@dataclass
class BenchmarkData:
    """The rows of one author split: training sets of both models, unlearning sets and evaluation sets."""

    split: AuthorSplit
    target_train: list[dict[str, Any]]
    retain_train: list[dict[str, Any]]
    forget: list[dict[str, Any]]
    forget_eval: list[dict[str, Any]]
    retain_eval: list[dict[str, Any]]

    def eval_sets(self) -> dict[str, list[dict[str, Any]]]:
        """The evaluator's `datasets` argument: TOFU split name -> rows."""
        return {"retain": self.retain_eval, "forget": self.forget_eval}


def load_data(split: AuthorSplit, data_dir: str | Path = DATA_DIR) -> BenchmarkData:
    """The benchmark's rows for `split`, read from `data_dir` (see :func:`build_data`)."""
    data_dir = Path(data_dir)
    missing = [n for n in DATA_FILES.values() if not (data_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir} lacks {missing}; rebuild it with --build-data --tofu-dir <a TOFU copy in the Hub's layout>."
        )
    rows = {key: read_jsonl(data_dir / name) for key, name in DATA_FILES.items()}

    def of(key: str, authors: Sequence[int]) -> list[dict[str, Any]]:
        chosen = [r for r in rows[key] if r["author"] in set(authors)]
        if len(chosen) != QUESTIONS_PER_AUTHOR * len(authors):
            raise ValueError(f"{data_dir / DATA_FILES[key]} lacks rows of some of the authors {list(authors)}.")
        return chosen

    return BenchmarkData(
        split=split,
        target_train=of("train", split.authors),
        retain_train=of("train", split.retain),
        forget=of("train", split.forget),
        forget_eval=of("forget_eval", split.forget),
        retain_eval=of("retain_eval", split.retain_eval),
    )


def _qa_dataset(rows: Sequence[Mapping[str, Any]]) -> Dataset:
    return Dataset.from_dict({"question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows]})


# ---------------------------------------------------------------------------------------------------------------------
# settings and methods
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Model size, training and unlearning budgets. `full()` is the benchmark; `quick()` a few-minute smoke run."""

    num_authors: int = 40
    hidden_size: int = 128
    num_layers: int = 2
    vocab_size: int = 1024
    finetune_epochs: int = 30
    finetune_lr: float = 2e-3
    #: One learning rate and step budget per method family, never per method (see RESULTS.md).
    #: The full-parameter family's learning rate: the largest of these at which GA (seed 0) keeps at least
    #: `utility_floor` of the target's retain-author utility (see :func:`calibrate_learning_rate`). One value: no
    #: calibration run.
    unlearn_lr_candidates: tuple[float, ...] = (4e-4, 2e-4, 1e-4, 5e-5, 2.5e-5)
    utility_floor: float = 0.5
    unlearn_epochs: int = 4  # passes over the forget set (batch 8)
    rmu_lr: float = 5e-4
    #: RMU's steering coefficient c, as a multiple of the target's mean hidden-state norm at the steered layer on the
    #: forget answers (the paper's c = 6.5 is for Zephyr-7B's activation scale; a tiny model has its own).
    rmu_norm_scale: float = 2.0
    grun_lr: float = 5e-2
    grun_steps_factor: int = 3
    max_new_tokens: int = 48
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] | None = None  # None: all of METHODS
    #: Processes (one torch thread each) training the two models and running the unlearning runs in parallel.
    workers: int = 2
    #: Stop when forget quality does not separate the target from the retain model (off only in tests).
    require_separation: bool = True

    @classmethod
    def full(cls) -> Settings:
        return cls()

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            num_authors=20,
            finetune_epochs=24,
            seeds=(0,),
            methods=("ga", "npo", "npo_gru", "grun_npo", "rmu"),
            unlearn_lr_candidates=(1e-4,),  # the full run's calibration picks among several
        )

    def unlearn_steps(self, num_forget_questions: int, batch_size: int = 8) -> int:
        return self.unlearn_epochs * math.ceil(num_forget_questions / batch_size)


RMU_LAYER = 0


def methods_for(settings: Settings, rmu_steering_coeff: float = 20.0) -> dict[str, UnlearningRecipe]:
    """The benchmark's methods (name -> :class:`~hf_unlearn.demo.quickstart.UnlearningRecipe`), for a model of
    `settings`' depth.

    GA, NPO, SimNPO, WGA and TNPO are the forget objectives alone; GD is GA + retain NLL; IDK trains refusals with a
    retain NLL (TOFU's recipe); RMU steers layer 0's output with the embed-diff retain term (the model has two
    layers), training only that layer's MLP. "+GRU" is the same objective with `rectification="gru"`: its whole
    gradient is projected against the moving average of the retain-NLL gradient (tmlr-group/GRU). GRUN edits the last
    prompt token at every layer.
    """
    rmu_layer = RMU_LAYER
    rmu = dict(
        forget_loss_kwargs={"layer": rmu_layer, "steering_coeff": rmu_steering_coeff},
        learning_rate=settings.rmu_lr,
    )
    rmu_config = {
        "retain_loss_kwargs": {"layer": rmu_layer},
        "trainable_parameters": rf"model\.layers\.{rmu_layer}\.mlp\.",
    }
    base: dict[str, UnlearningRecipe] = {
        "ga": UnlearningRecipe("ga", retain_loss="none"),
        "gd": UnlearningRecipe("ga", retain_loss="nll"),
        "npo": UnlearningRecipe("npo", retain_loss="none", forget_loss_kwargs={"beta": 0.1}),
        "simnpo": UnlearningRecipe("simnpo", retain_loss="none", forget_loss_kwargs={"beta": 4.5}),
        "wga": UnlearningRecipe("wga", retain_loss="none", forget_loss_kwargs={"beta": 1.0}),
        "tnpo": UnlearningRecipe("tnpo", retain_loss="none", forget_loss_kwargs={"beta": 4.0}),
        "idk": UnlearningRecipe("idk", retain_loss="nll"),
        "rmu": UnlearningRecipe("rmu", retain_loss="embed_diff", **rmu, config_overrides=rmu_config),
    }
    methods: dict[str, UnlearningRecipe] = {}
    for name, method in base.items():
        methods[name] = method
        methods[f"{name}_gru"] = replace(method, rectification="gru")
    grun = dict(grun=True, learning_rate=settings.grun_lr, steps_factor=settings.grun_steps_factor)
    methods["grun_ga"] = UnlearningRecipe("ga", **grun)
    methods["grun_npo"] = UnlearningRecipe("npo", forget_loss_kwargs={"beta": 0.1}, **grun)
    return methods


LABELS = {"ga": "GA", "gd": "GD", "npo": "NPO", "simnpo": "SimNPO", "wga": "WGA", "tnpo": "TNPO", "idk": "IDK"}
LABELS |= {"rmu": "RMU", "grun_ga": "GRUN(GA)", "grun_npo": "GRUN(NPO)"}


def label(name: str) -> str:
    """Display name of a method key (``"npo_gru"`` -> ``"NPO+GRU"``)."""
    if name.endswith("_gru"):
        return LABELS[name.removesuffix("_gru")] + "+GRU"
    return LABELS.get(name, name)


# ---------------------------------------------------------------------------------------------------------------------
# models, evaluation, metric separation
# ---------------------------------------------------------------------------------------------------------------------


#: State the worker processes inherit through fork (set before the pool starts; read-only in the workers).
_SHARED: dict[str, Any] = {}


def _pool(workers: int, jobs: int):
    """A fork-based process pool of `min(workers, jobs)` processes (one torch thread each), or None for serial runs."""
    workers = min(workers, jobs)
    if workers <= 1:
        return None
    import multiprocessing

    return multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,))


def _train_one(job: tuple[str, int]) -> tuple[str, dict[str, torch.Tensor], float]:
    name, seed = job
    settings, tokenizer, rows = _SHARED["settings"], _SHARED["tokenizer"], _SHARED["train_rows"][name]
    model = tiny_llama(len(tokenizer), settings.num_layers, settings.hidden_size, seed=seed)
    losses = finetune_on_qa(
        model,
        tokenizer,
        [r["question"] for r in rows],
        [r["answer"] for r in rows],
        epochs=settings.finetune_epochs,
        learning_rate=settings.finetune_lr,
        seed=seed,
        progress=_SHARED["progress"],
    )
    return name, model.state_dict(), losses[-1]


def train_models(data: BenchmarkData, settings: Settings, seed: int = 0, progress: bool = True, workers: int = 1):
    """A tokenizer trained on the target's data, the target (all authors) and the retain model (no forget author),
    the two models trained in parallel processes when `workers` > 1."""
    texts = [f"{r['question']} {r['answer']}" for r in data.target_train]
    tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
    _SHARED.update(
        settings=settings,
        tokenizer=tokenizer,
        progress=progress,
        train_rows={"target": data.target_train, "retain": data.retain_train},
    )
    jobs = [("target", seed), ("retain", seed)]
    pool = _pool(workers, len(jobs))
    if pool is None:
        results = list(map(_train_one, jobs))
    else:
        with pool:
            results = pool.map(_train_one, jobs)
    models = {}
    for name, state, loss in results:
        model = tiny_llama(len(tokenizer), settings.num_layers, settings.hidden_size, seed=seed)
        model.load_state_dict(state)
        model.eval()
        print(f"  {name}: {len(_SHARED['train_rows'][name])} questions, final training loss {loss:.3f}")
        models[name] = model
    return tokenizer, models["target"], models["retain"]


@torch.no_grad()
def mean_hidden_norm(model, tokenizer, rows: Sequence[Mapping[str, Any]], layer: int, batch_size: int = 16) -> float:
    """Mean L2 norm of decoder layer `layer`'s output over the answer tokens of `rows` (RMU's scale)."""
    from hf_unlearn.data.collator import pad_examples
    from hf_unlearn.data.formatting import PromptEncoder

    encoder = PromptEncoder(tokenizer)
    examples = [encoder.encode([{"role": "user", "content": r["question"]}], r["answer"]) for r in rows]
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = pad_examples(examples[start : start + batch_size], tokenizer.pad_token_id)
        hidden = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states[layer + 1]
        mask = batch["labels"] != -100
        total += hidden[mask].norm(dim=-1).sum().item()
        count += int(mask.sum())
    return total / count


def evaluate(model, tokenizer, eval_sets, output_dir: Path, retain_logs: Path | None, settings, progress):
    """TOFU summary of `model` on the benchmark's evaluation sets (logs written to `output_dir`)."""
    return evaluate_tofu_model(
        model,
        tokenizer,
        output_dir=output_dir,
        retain_logs=retain_logs,
        forget_split="forget10",  # a label: the rows come from `eval_sets`
        data_dir="bundled",
        datasets=eval_sets,
        splits=list(eval_sets),
        max_new_tokens=settings.max_new_tokens,
        progress=progress,
    )


def per_question_metrics(logs: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """``"<split>_<metric>"`` -> per-question values (probability, ROUGE-L recall, truth-ratio statistic)."""
    values = {}
    for split, log in logs.items():
        values[f"{split}_probability"] = np.asarray(per_question_probability(log, split))
        if "rougeL_recall" in log or "generated_text" in log:
            values[f"{split}_rougeL_recall"] = np.asarray(per_question_rouge_l_recall(log, split))
        values[f"{split}_truth_ratio"] = split_truth_ratio_stats(log, split)
    return values


@dataclass
class Separation:
    """Does a metric tell the target from the retain model? KS test on the per-question values of both models."""

    metric: str
    target_mean: float
    retain_mean: float
    p_value: float

    @property
    def separates(self) -> bool:
        return self.p_value < SEPARATION_P


def metric_separation(target_logs, retain_logs) -> list[Separation]:
    """One :class:`Separation` per metric both models' logs have. For the forget split's truth ratio the p-value is
    the target's TOFU forget quality against the retain model."""
    ours, theirs = per_question_metrics(target_logs), per_question_metrics(retain_logs)
    rows = []
    for metric in ours:
        if metric in theirs:
            a, b = ours[metric], theirs[metric]
            rows.append(Separation(metric, float(a.mean()), float(b.mean()), float(sps.ks_2samp(a, b).pvalue)))
    return rows


def check_separation(separation: Sequence[Separation]) -> None:
    """Forget quality is only meaningful if the target's is well below 0.01; stop the benchmark otherwise."""
    fq = next((s for s in separation if s.metric == "forget_truth_ratio"), None)
    if fq is None or not fq.separates:
        raise RuntimeError(
            "Forget quality does not separate the target from the retain model "
            f"(target FQ {fq.p_value if fq else 'n/a'}); train the models longer before unlearning."
        )


# ---------------------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One evaluated model (a method and a seed, or the target / retain model)."""

    method: str
    seed: int | None
    forget_probability: float
    forget_rougeL_recall: float
    forget_truth_ratio: float
    forget_quality: float | None
    retain_probability: float
    retain_rougeL_recall: float
    retain_truth_ratio: float
    retain_utility: float
    seconds: float = 0.0

    @classmethod
    def from_summary(cls, method: str, seed: int | None, summary: Mapping[str, Any], seconds: float = 0.0) -> Row:
        values = {f.name: summary.get(f.name) for f in fields(cls) if f.name in summary}
        utility = model_utility([summary[k] for k in RETAIN_UTILITY_KEYS])
        return cls(method=method, seed=seed, retain_utility=utility, seconds=seconds, **values)


METRICS = [
    ("forget_probability", "forget prob. ↓"),
    ("forget_rougeL_recall", "forget ROUGE-L ↓"),
    ("forget_truth_ratio", "forget truth ratio"),
    ("log10_fq", "log10 FQ ↑"),
    ("retain_probability", "retain prob. ↑"),
    ("retain_rougeL_recall", "retain ROUGE-L ↑"),
    ("retain_utility", "retain-author utility ↑"),
    ("seconds", "unlearning s"),
]


def _value(row: Row, key: str) -> float:
    if key == "log10_fq":
        return math.log10(max(row.forget_quality, 1e-300)) if row.forget_quality is not None else float("nan")
    return float(getattr(row, key))


def aggregate(rows: Sequence[Row]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """method -> metric -> (mean, sample standard deviation, number of seeds), in the order methods first appear."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for method in dict.fromkeys(r.method for r in rows):
        group = [r for r in rows if r.method == method]
        out[method] = {}
        for key, _ in METRICS:
            values = np.array([_value(r, key) for r in group])
            spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[method][key] = (float(values.mean()), spread, len(values))
    return out


def format_table(stats: Mapping[str, Mapping[str, tuple[float, float, int]]]) -> str:
    """Markdown table: mean ± standard deviation over seeds."""
    header = "| model | seeds | " + " | ".join(title for _, title in METRICS) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(METRICS)]
    for method, metrics in stats.items():
        cells = []
        for key, _ in METRICS:
            mean, std, n = metrics[key]
            if key == "seconds" and mean == 0:
                cells.append("-")
            elif key in ("log10_fq", "seconds"):
                cells.append(f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}")
            else:
                cells.append(f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}")
        n = next(iter(metrics.values()))[2]
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_separation(separation: Sequence[Separation]) -> str:
    lines = [
        "| metric | target | retain model | KS p-value (per question) | separates (p < 0.01) |",
        "|---|---:|---:|---:|---|",
    ]
    for s in separation:
        lines.append(
            f"| {s.metric} | {s.target_mean:.3f} | {s.retain_mean:.3f} | {s.p_value:.2e} | "
            f"{'yes' if s.separates else 'no'} |"
        )
    return "\n".join(lines)


def plot(stats, path: Path, title: str) -> Path:
    """Two panels, mean ± std over seeds, one labelled point per model: log10 forget quality against retain-author
    utility (every model), and forget probability against it, zoomed on the models near the target's utility."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 6))
    axes = fig.subplots(1, 2)
    target_u = stats["target"]["retain_utility"][0] if "target" in stats else None
    for ax, key, ylabel in (
        (axes[0], "log10_fq", "log10 forget quality (KS p-value vs the retain model)"),
        (axes[1], "forget_probability", "forget probability (lower: more forgotten)"),
    ):
        zoom = key == "forget_probability" and target_u is not None
        for method, metrics in stats.items():
            (y, y_std, _), (mu, mu_std, _) = metrics[key], metrics["retain_utility"]
            if zoom and mu < target_u - 0.06:
                continue
            marker = "*" if method in ("target", "retain model") else "s" if "GRUN" in method else "o"
            color = "C1" if "+GRU" in method else "C2" if "GRUN" in method else "C3" if marker == "*" else "C0"
            ax.errorbar(mu, y, xerr=mu_std, yerr=y_std, fmt=marker, color=color, ms=7 if marker != "*" else 12)
            ax.annotate(method, (mu, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if key == "log10_fq":
            ax.axhline(math.log10(SEPARATION_P), color="grey", lw=0.8, ls="--")
        ax.set_xlabel("retain-author utility (hmean of retain prob., ROUGE-L, truth ratio)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title(title + " (orange: +GRU, green: GRUN)", fontsize=9)
    axes[1].set_title("zoom: models within 0.06 of the target's utility", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _mean(stats, method: str, key: str) -> float | None:
    return stats[method][key][0] if method in stats else None


#: Two models forget to a "similar level" when their mean forget probabilities differ by at most this much.
SIMILAR_FORGETTING = 0.05


def _verdict(retains_better: bool, forget_prob_difference: float) -> str:
    """A claim "X retains better than Y at a similar forgetting level", given X's forget prob. minus Y's."""
    if retains_better:
        if forget_prob_difference > SIMILAR_FORGETTING:
            return "retains better, but forgets less (not at a similar level)"
        return "holds"
    if forget_prob_difference < -SIMILAR_FORGETTING:
        return "does not hold (forgets more: not at a similar level)"
    return "does not hold"


def _better(stats, a: str, b: str) -> tuple[float, bool]:
    """a's retain-author utility minus b's, and whether it exceeds the seeds' spread (and 0.01)."""
    diff = _mean(stats, a, "retain_utility") - _mean(stats, b, "retain_utility")
    noise = math.hypot(stats[a]["retain_utility"][1], stats[b]["retain_utility"][1])
    return diff, diff > max(noise, 0.01)


def _summary(verdicts: Sequence[str]) -> str:
    held = sum(v == "holds" for v in verdicts)
    return f"\nHolds in {held} of {len(verdicts)} comparisons.\n"


def claims(stats: Mapping[str, Mapping[str, tuple[float, float, int]]]) -> str:
    """The papers' claims, checked on the measured means (markdown). "Retains better": the retain-author utility is
    higher by more than the seeds' spread (sqrt of the sum of both variances) and 0.01; "similar forgetting": mean
    forget probabilities within 0.05."""
    lines = []
    # 1. GRU improves retention over its base method at a similar forgetting level.
    lines.append("**GRU vs its base method** (Δ = method+GRU − method):\n")
    lines.append("| base | Δ retain-author utility | Δ forget prob. | Δ log10 FQ | verdict |")
    lines.append("|---|---:|---:|---:|---|")
    verdicts = []
    for base in LABELS:
        name, gru = label(base), label(base) + "+GRU"
        if name not in stats or gru not in stats or base.startswith("grun"):
            continue
        du, better = _better(stats, gru, name)
        dp = _mean(stats, gru, "forget_probability") - _mean(stats, name, "forget_probability")
        dfq = _mean(stats, gru, "log10_fq") - _mean(stats, name, "log10_fq")
        verdicts.append(_verdict(better, dp))
        lines.append(f"| {name} | {du:+.3f} | {dp:+.3f} | {dfq:+.1f} | {verdicts[-1]} |")
    if verdicts:
        lines.append(_summary(verdicts))
    # 2. GRUN keeps the retain metrics closer to the target's than full-parameter GA / NPO.
    target_u = _mean(stats, "target", "retain_utility")
    pairs = [(g, f) for g, f in (("GRUN(GA)", "GA"), ("GRUN(GA)", "GD"), ("GRUN(NPO)", "NPO")) if {g, f} <= set(stats)]
    if target_u is not None and pairs:
        lines.append(
            f"**GRUN vs full-parameter training** (target's retain-author utility {target_u:.3f}; gap = target − "
            "model):\n"
        )
        lines.append("| pair | utility gap, GRUN | utility gap, full | forget prob. GRUN / full | verdict |")
        lines.append("|---|---:|---:|---|---|")
        verdicts = []
        for grun, full in pairs:
            gap_g = target_u - _mean(stats, grun, "retain_utility")
            gap_f = target_u - _mean(stats, full, "retain_utility")
            pg, pf = _mean(stats, grun, "forget_probability"), _mean(stats, full, "forget_probability")
            verdicts.append(_verdict(_better(stats, grun, full)[1], pg - pf))
            lines.append(f"| {grun} vs {full} | {gap_g:.3f} | {gap_f:.3f} | {pg:.3f} / {pf:.3f} | {verdicts[-1]} |")
        lines.append(_summary(verdicts))
    # 3. WGA and TNPO retain better than GA.
    others = [name for name in ("WGA", "TNPO") if name in stats]
    if "GA" in stats and others:
        lines.append("**WGA / TNPO vs GA** (all three without a retain term):\n")
        lines.append("| method | retain-author utility | GA's | forget prob. (GA's) | verdict |")
        lines.append("|---|---:|---:|---|---|")
        ga_u, ga_p = _mean(stats, "GA", "retain_utility"), _mean(stats, "GA", "forget_probability")
        verdicts = []
        for name in others:
            u, p = _mean(stats, name, "retain_utility"), _mean(stats, name, "forget_probability")
            verdicts.append(_verdict(_better(stats, name, "GA")[1], p - ga_p))
            lines.append(f"| {name} | {u:.3f} | {ga_u:.3f} | {p:.3f} ({ga_p:.3f}) | {verdicts[-1]} |")
        lines.append(_summary(verdicts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    rows: list[Row]
    separation: list[Separation]
    stats: dict[str, dict[str, tuple[float, float, int]]]
    seconds: dict[str, float] = field(default_factory=dict)
    rmu_steering_coeff: float | None = None
    learning_rate: float | None = None  # the full-parameter family's
    calibration: list[tuple[float, Row]] = field(default_factory=list)
    load_average: float | None = None  # the machine's 1-minute load average when the run ended


def run_benchmark(
    settings: Settings,
    output_dir: str | Path = "tofu_mini_output",
    data_dir: str | Path = DATA_DIR,
    progress: bool = True,
) -> BenchmarkResult:
    """Train the target and the retain model, check the metrics, unlearn with every method and seed, evaluate.

    Writes ``rows.json`` (every model and seed), ``results.md`` and ``fq_vs_utility.png`` to `output_dir`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()  # the unlearning loop has its own bar
    names = list(settings.methods or methods_for(settings))
    unknown = [m for m in names if m not in methods_for(settings)]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(methods_for(settings))}.")
    split = select_authors(settings.num_authors)
    data = load_data(split, data_dir)
    eval_sets = data.eval_sets()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    print(
        f"1/4 Training a tokenizer, the target ({len(split.authors)} authors, {len(data.target_train)} questions) and "
        f"the retain model (without the {len(split.forget)} forget authors {list(split.forget)})"
    )
    tokenizer, target, retain_model = train_models(data, settings, progress=progress, workers=settings.workers)
    timings["training target and retain model"] = time.perf_counter() - started

    print("2/4 Evaluating both models and checking which metrics separate them")
    tic = time.perf_counter()
    retain_logs = output_dir / "retain_model" / "eval"
    # real authors / world facts (the bundled TOFU subset): only to show they measure nothing at this scale
    world = {s: load_tofu(f"{s}_perturbed", "bundled") for s in ("real_authors", "world_facts")}
    summaries, logs = {}, {}
    for name, model, theirs in (("retain model", retain_model, None), ("target", target, retain_logs)):
        sets = {**eval_sets, **world}
        out = retain_logs if theirs is None else output_dir / "target" / "eval"
        summaries[name] = evaluate(model, tokenizer, sets, out, theirs, settings, progress)
        logs[name] = _read_logs(out)
    summaries["retain model"]["forget_quality"] = 1.0  # by definition (the KS test against itself)
    separation = metric_separation(logs["target"], logs["retain model"])
    print(format_separation(separation))
    if settings.require_separation:
        check_separation(separation)
    rows = [Row.from_summary(name, None, summaries[name]) for name in ("target", "retain model")]
    timings["evaluating target and retain model"] = time.perf_counter() - tic

    norm = mean_hidden_norm(target, tokenizer, data.forget, RMU_LAYER)
    rmu_coeff = settings.rmu_norm_scale * norm
    print(
        f"  RMU: mean hidden-state norm at layer {RMU_LAYER} on the forget answers {norm:.2f} -> c = {rmu_coeff:.2f}"
    )
    all_methods = methods_for(settings, rmu_coeff)
    forget, retain = _qa_dataset(data.forget), _qa_dataset(data.retain_train)
    steps = settings.unlearn_steps(len(forget))
    _SHARED.update(
        settings=settings,
        target=target,
        tokenizer=tokenizer,
        methods=all_methods,
        forget=forget,
        retain=retain,
        steps=steps,
        eval_sets=eval_sets,
        retain_logs=retain_logs,
        output_dir=output_dir,
    )
    tic = time.perf_counter()
    lr, calibration = calibrate_learning_rate(settings, rows[0].retain_utility, progress)
    if calibration:
        print(format_calibration(calibration, lr))
        timings["learning-rate calibration (GA)"] = time.perf_counter() - tic
    print(f"  full-parameter learning rate: {lr:g}")
    runs = [(name, seed, lr, f"{name}_seed{seed}") for seed in settings.seeds for name in names]
    print(
        f"3/4 Unlearning {len(forget)} questions: {len(names)} methods x {len(settings.seeds)} seeds "
        f"({min(settings.workers, len(runs))} worker process(es))"
    )
    tic = time.perf_counter()
    rows += _run_jobs(runs, settings.workers, "unlearning + evaluation", progress)
    timings["unlearning and evaluation"] = time.perf_counter() - tic

    print("4/4 Writing the results")
    stats = aggregate(rows)
    timings["total"] = time.perf_counter() - started
    result = BenchmarkResult(rows, separation, stats, timings, rmu_coeff, lr, calibration, os.getloadavg()[0])
    (output_dir / "rows.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    record = {
        "settings": asdict(settings),
        "seconds": timings,
        "learning_rate": lr,
        "rmu_steering_coeff": rmu_coeff,
        "calibration": [{"learning_rate": c_lr, **asdict(c_row)} for c_lr, c_row in calibration],
        "separation": [asdict(sep) for sep in separation],
        "command": " ".join(["python", *sys.argv]) if sys.argv and sys.argv[0].endswith("tofu_mini.py") else None,
        "load_average": result.load_average,
    }
    (output_dir / "run.json").write_text(json.dumps(record, indent=2))
    (output_dir / "results.md").write_text(format_table(stats) + "\n\n" + claims(stats) + "\n")
    plot(stats, output_dir / "fq_vs_utility.png", f"TOFU-mini, {len(settings.seeds)} seed(s): FQ vs utility")
    print()
    print(format_table(stats))
    print()
    print(claims(stats))
    print(f"\nDone in {timings['total']:.0f} s; results in {output_dir.resolve()}")
    return result


def _unlearn_and_evaluate(job: tuple[str, int, float, str]) -> Row:
    """One method, seed and learning rate on a copy of the target (in a worker process or not); its row of the table.

    `job` is ``(method key, seed, learning rate, run directory name)``; the method's own rate (GRUN, RMU) wins.
    """
    name, seed, lr, run_name = job
    shared = _SHARED
    settings, method = shared["settings"], shared["methods"][name]
    run_dir = shared["output_dir"] / "runs" / run_name
    lr = method.learning_rate or lr
    tic = time.perf_counter()
    # The Trainer prints its final metrics when its progress bar is off: keep the benchmark's output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        unlearned = unlearn_copy(
            shared["target"],
            shared["tokenizer"],
            method,
            shared["forget"],
            shared["retain"],
            run_dir,
            shared["steps"],
            lr,
            seed,
            progress=False,
            save=False,
        )
    seconds = time.perf_counter() - tic
    summary = evaluate(
        unlearned, shared["tokenizer"], shared["eval_sets"], run_dir / "eval", shared["retain_logs"], settings, False
    )
    return Row.from_summary(label(name), seed, summary, seconds)


def _run_jobs(jobs: Sequence[tuple[str, int, float, str]], workers: int, desc: str, progress: bool) -> list[Row]:
    pool = _pool(workers, len(jobs))
    done = map(_unlearn_and_evaluate, jobs) if pool is None else pool.imap(_unlearn_and_evaluate, jobs)
    try:
        return list(tqdm(done, total=len(jobs), desc=desc, disable=not progress))
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def calibrate_learning_rate(
    settings: Settings, target_utility: float, progress: bool = True
) -> tuple[float, list[tuple[float, Row]]]:
    """The full-parameter family's learning rate, chosen once for all its methods from GA alone (seed 0): the largest
    of `settings.unlearn_lr_candidates` at which GA keeps at least `settings.utility_floor` x `target_utility` of the
    retain-author utility (the most forgetting before GA collapses the model); the smallest if none does.
    Returns the rate and (rate, GA's row) per candidate. Needs `_SHARED` set up as for the unlearning runs."""
    candidates = sorted(settings.unlearn_lr_candidates, reverse=True)
    if len(candidates) == 1:
        return candidates[0], []
    jobs = [("ga", 0, lr, f"calibration_ga_lr{lr:g}") for lr in candidates]
    rows = _run_jobs(jobs, settings.workers, "calibrating the learning rate on GA", progress)
    table = list(zip(candidates, rows))
    kept = [lr for lr, row in table if row.retain_utility >= settings.utility_floor * target_utility]
    return (max(kept) if kept else candidates[-1]), table


def format_calibration(table: Sequence[tuple[float, Row]], chosen: float) -> str:
    lines = [
        "| GA learning rate | forget prob. | log10 FQ | retain-author utility | chosen |",
        "|---:|---:|---:|---:|---|",
    ]
    for lr, row in table:
        fq = math.log10(max(row.forget_quality, 1e-300))
        mark = "yes" if lr == chosen else ""
        lines.append(f"| {lr:g} | {row.forget_probability:.3f} | {fq:.1f} | {row.retain_utility:.3f} | {mark} |")
    return "\n".join(lines)


def _read_logs(path: Path) -> dict[str, dict[str, Any]]:
    from hf_unlearn.evaluation.logs import read_tofu_logs

    return read_tofu_logs(path)


def write_results_md(result: BenchmarkResult, settings: Settings, command: str, path: Path, plot_path: Path) -> None:
    """RESULTS.md: the command, the setup, the metric check, the table and the claims, from `result`."""
    split = select_authors(settings.num_authors)
    timing = "\n".join(f"- {k}: {v:.0f} s" for k, v in result.seconds.items())
    load = "not recorded" if result.load_average is None else f"{result.load_average:.1f}"
    forget_rows = [s for s in result.separation if s.metric.startswith("forget")]
    forget_yes = ", ".join(s.metric for s in forget_rows if s.separates) or "none"
    forget_no = ", ".join(s.metric for s in forget_rows if not s.separates) or "none"
    world_rows = [s for s in result.separation if s.metric.startswith(("real_authors", "world_facts"))]
    world = "some separate (see the table)" if any(s.separates for s in world_rows) else "none separates"
    text = f"""# TOFU-mini results

Measured by `examples/benchmarks/tofu_mini.py` (generated file: rerun the command to regenerate it).

```
{command}
```

Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (1-minute load average at the end \
of the run: {load}); {settings.workers} worker processes with one torch \
thread each; Python {platform.python_version()}, torch {torch.__version__}. Wall-clock times of this run:

{timing}

## Setup

- Data: TOFU authors {split.authors[0]}-{split.authors[len(split.authors) // 2 - 1]} and \
{split.authors[len(split.authors) // 2]}-{split.authors[-1]} ({len(split.authors)} authors x 20 questions, \
`tofu_mini_data/`); forget authors {list(split.forget)} ({len(split.forget) * 20} questions, 10%); retention is \
evaluated on the retain authors {split.retain_eval[0]}-{split.retain_eval[-1]} ({len(split.retain_eval) * 20} \
questions: the retain authors for which TOFU has paraphrased and perturbed answers).
- Models: a Llama with {settings.num_layers} layers, hidden size {settings.hidden_size}, a byte-level BPE tokenizer \
of {settings.vocab_size} tokens trained on the {len(split.authors)} authors' questions and answers; target and \
retain model trained from scratch with the same recipe ({settings.finetune_epochs} epochs, AdamW, lr \
{settings.finetune_lr}, cosine, batch 16, seed 0).
- Unlearning, batch 8 forget + 8 retain questions, constant learning rate, seeds {list(settings.seeds)} (the seed \
changes the batch order, RMU's random direction and GRUN's initialisation; target and retain model are the same for \
every seed):
  - full-parameter methods (GA, GD, NPO, SimNPO, WGA, TNPO, IDK, each ± GRU): lr {result.learning_rate:g}, \
{settings.unlearn_epochs} epochs over the forget set ({settings.unlearn_steps(len(split.forget) * 20)} steps);
  - RMU ± GRU (layer 0's output steered, only layer 0's MLP trained; steering coefficient c = \
{settings.rmu_norm_scale} x the target's mean layer-0 hidden-state norm on the forget answers = \
{result.rmu_steering_coeff:.2f}): lr {settings.rmu_lr}, same steps;
  - GRUN (rank-4 gated edit at the last prompt token of both layers, model frozen): lr {settings.grun_lr}, \
{settings.grun_steps_factor}x the steps.
- Generation: greedy, {settings.max_new_tokens} new tokens (ROUGE-L recall).
- How the hyperparameters were chosen: one learning rate and step budget per family, never per method. Step
  budgets: {settings.unlearn_epochs} epochs over the forget set (GRUN {settings.grun_steps_factor}x: its steps are
  cheap). Full-parameter family: the run itself picks the rate from GA alone (seed 0), as the largest of \
{", ".join(f"{lr:g}" for lr in sorted(settings.unlearn_lr_candidates, reverse=True))} at which GA keeps at least \
{settings.utility_floor:.0%} of the target's retain-author utility (the most forgetting before GA collapses the
  model); every full-parameter method, with and without GRU, then uses that rate (table below). A first quick run at
  the quickstart's 5e-4 had collapsed GA, NPO and NPO+GRU to zero utility, which is why the rate is calibrated at all.
  GRUN: 5e-2 (tests/test_grun.py and the quickstart; it trains a few thousand parameters). RMU: the quickstart's 5e-4
  (it trains one MLP), coefficient from the activation scale. The losses' own hyperparameters are their papers' /
  library defaults (NPO beta 0.1, SimNPO beta 4.5, WGA beta 1, TNPO beta 4).

{format_calibration(result.calibration, result.learning_rate) if result.calibration else ""}

## Do the metrics separate the target from the retain model?

KS two-sample test on the per-question values of the target and the retain model (for the forget truth ratio this is
the target's forget quality). Real-author and world-fact questions: the first 40 rows of each (bundled TOFU subset).

{format_separation(result.separation)}

The "truth_ratio" rows compare the per-question statistic exp(mean perturbed NLL − paraphrased NLL) (higher: the
model prefers the paraphrased answer to the perturbed ones); the results table shows TOFU's aggregates of it.

- Forget metrics that separate the two models (usable to measure forgetting here): {forget_yes}; that do not: \
{forget_no}.
- Real-author and world-fact metrics: {world}; a model trained only on fictitious authors knows neither, so
  they say nothing about unlearning here, and TOFU's 9-component model utility is replaced by the retain-author
  utility (retain split only).
- Retain metrics are utility, not separation: both models were trained on these authors. Small systematic
  differences between the two runs can still give a low KS p-value over 200 questions (compare the means).

## Results (mean ± standard deviation over seeds)

Forget quality is shown as log10 (TOFU's forget quality is a p-value; -2 is the 0.01 line, 0 is indistinguishable
from the retain model). Retain-author utility = harmonic mean of retain prob., retain ROUGE-L and retain truth ratio.

{format_table(result.stats)}

![FQ vs utility]({plot_path.name})

## The papers' claims at this scale

{claims(result.stats)}
"""
    path.write_text(text)


def _write_report(result: BenchmarkResult, settings: Settings, command: str, path: Path) -> None:
    plot_path = path.parent / "tofu_mini_fq_vs_utility.png"
    plot(result.stats, plot_path, f"TOFU-mini, {len(settings.seeds)} seed(s): FQ vs retain-author utility")
    write_results_md(result, settings, command, path, plot_path)


def load_result(output_dir: str | Path) -> tuple[BenchmarkResult, Settings, str | None]:
    """The result of a finished run from its output directory (``rows.json``, ``run.json``), to rebuild the report
    without rerunning; also its settings and command line (None if the run did not record it)."""
    output_dir = Path(output_dir)
    rows = [Row(**r) for r in json.loads((output_dir / "rows.json").read_text())]
    record = json.loads((output_dir / "run.json").read_text())
    settings_dict = record["settings"]
    for key in ("unlearn_lr_candidates", "seeds", "methods"):
        if settings_dict.get(key) is not None:
            settings_dict[key] = tuple(settings_dict[key])
    calibration = []
    for entry in record["calibration"]:
        entry = dict(entry)
        calibration.append((entry.pop("learning_rate"), Row(**entry)))
    result = BenchmarkResult(
        rows=rows,
        separation=[Separation(**sep) for sep in record["separation"]],
        stats=aggregate(rows),
        seconds=record["seconds"],
        rmu_steering_coeff=record["rmu_steering_coeff"],
        learning_rate=record["learning_rate"],
        calibration=calibration,
        load_average=record.get("load_average"),
    )
    return result, Settings(**settings_dict), record.get("command")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A few-minute run: 20 authors, 5 methods, 1 seed.")
    parser.add_argument("--output-dir", default="tofu_mini_output", help="Models' logs, rows.json, results.md, plot.")
    parser.add_argument("--methods", default=None, help="Comma-separated method keys (default: all).")
    parser.add_argument("--seeds", default=None, help="Comma-separated unlearning seeds (default: 0,1,2).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1).")
    parser.add_argument("--workers", type=int, default=2, help="Parallel processes (default 2, one per CPU core).")
    parser.add_argument("--results-md", default=None, help="Also write RESULTS.md here (and the plot beside it).")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="The benchmark's TOFU rows.")
    parser.add_argument("--build-data", action="store_true", help="Rebuild --data-dir from --tofu-dir, then exit.")
    parser.add_argument("--tofu-dir", default=None, help="TOFU in the Hub's layout (for --build-data).")
    parser.add_argument(
        "--report-from",
        default=None,
        help="Rebuild --results-md and the plot from a finished run's output directory (rows.json, run.json).",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.build_data:
        if not args.tofu_dir:
            parser.error("--build-data needs --tofu-dir")
        print(build_data(args.tofu_dir, args.data_dir))
        return 0
    if args.report_from:
        if not args.results_md:
            parser.error("--report-from needs --results-md")
        result, settings, command = load_result(args.report_from)
        if command is None:
            command = "python examples/benchmarks/tofu_mini.py " + " ".join(
                ["--results-md", args.results_md, "--output-dir", args.report_from]
            )
        _write_report(result, settings, command, Path(args.results_md))
        return 0
    torch.set_num_threads(args.threads)
    settings = Settings.quick() if args.quick else Settings.full()
    if args.methods:
        settings = replace(settings, methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()))
    settings = replace(settings, workers=args.workers)
    if args.seeds:
        settings = replace(settings, seeds=tuple(int(s) for s in args.seeds.split(",")))
    result = run_benchmark(settings, args.output_dir, args.data_dir, progress=not args.no_progress)
    if args.results_md:
        command = "python examples/benchmarks/tofu_mini.py " + " ".join(sys.argv[1:] if argv is None else argv)
        _write_report(result, settings, command.strip(), Path(args.results_md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
