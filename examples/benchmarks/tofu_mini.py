"""TOFU-mini v2: every unlearning method of hf_unlearn compared at matched forgetting on a CPU-sized TOFU.

From 40 TOFU authors (20 questions each) a 4-layer Llama (hidden 256) and its byte-level BPE tokenizer are trained
from scratch until the model has memorised every answer (the *target*), and a second one the same way without the 4
forget authors (the *retain* model, the gold standard); both are cached (``--cache-dir``) and reused across runs.
Every method - GA, GD, NPO, NPO+KL, SimNPO, WGA, TNPO, IDK, DPO, RMU, each with and without GRU, and GRUN with GA and
NPO - then unlearns the forget authors from the target at a few learning rates, with a cheap teacher-forced
evaluation every few steps (its *trajectory*: forget and retain probability, forget quality) until it meets every
forgetting target fixed in advance (:data:`tofu_mini_matched.DEFAULT_TARGETS`) or a step cap. At the first evaluation
that meets each target the model gets the full TOFU evaluation (and, on seed 0, the relearning and quantization
attacks). One rule picks each method's learning rate per target from seed 0; seeds 1 and 2 rerun that rate; the
papers' claims are judged by a paired rule over the seeds, written before the run (see tofu_mini_matched.py).

Which authors (see :func:`select_authors`): TOFU's perturbed answers (needed by the truth ratio and hence by forget
quality) exist only for authors 0-19 (``retain_perturbed``) and 180-199 (``forget10_perturbed``), so the benchmark
takes the first and the last N/2 authors, forgets the last 10% (as TOFU's forget splits do) and measures retention on
the first N/2 (the retain authors with perturbed answers). The rows ship in ``tofu_mini_data/`` (``--build-data``
rebuilds them from a copy of the TOFU data set).

Utility: the tiny model knows nothing of the world, so TOFU's real-authors and world-facts splits measure nothing
here (the script shows it); "retain-author utility" is the harmonic mean of the retain authors' answer probability,
ROUGE-L recall and truth ratio.

    python examples/benchmarks/tofu_mini.py --results-md examples/benchmarks/RESULTS.md   # the full benchmark
    python examples/benchmarks/tofu_mini.py --quick    # a few minutes: 20 authors, 2 layers, 4 methods, 1 seed
    python examples/benchmarks/tofu_mini.py --report-from OUTPUT_DIR --results-md RESULTS.md   # report only
    python examples/benchmarks/tofu_mini.py --methods grun_npo,grun_ga --seeds 0 --grun-learning-rates 4e-3,1e-2 \
        --grun-steps-factor 7 --no-attacks --output-dir grun_budget   # GRUN at the reference's rate, 7x the steps

They use 2 worker processes with one torch thread each (``--workers``, ``--threads``): one per core of the 2-core
machine they were sized for. A run that stops keeps every finished unlearning run in ``OUTPUT_DIR/runs/``; running the
same command again reuses them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Dataset
from scipy import stats as sps
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmark's sibling modules

from tofu_mini_matched import (  # noqa: E402
    DEFAULT_TARGETS,
    TRUTH_RATIO_METRICS,
    Matched,
    RunRecord,
    Target,
    TrajectoryCallback,
    TrajectoryScorer,
    choose_learning_rate,
    load_trainable_state,
)

from hf_unlearn.data import load_tofu, read_jsonl  # noqa: E402
from hf_unlearn.demo.quickstart import RETAIN_UTILITY_KEYS, UnlearningRecipe, unlearn_copy  # noqa: E402
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama, train_tokenizer  # noqa: E402
from hf_unlearn.evaluation.logs import (  # noqa: E402
    load_retain_truth_ratio_stats,
    per_question_probability,
    per_question_rouge_l_recall,
    read_tofu_logs,
    split_truth_ratio_stats,
)
from hf_unlearn.evaluation.metrics import model_utility  # noqa: E402
from hf_unlearn.evaluation.robustness import (  # noqa: E402
    quantization_attack,
    relearning_attack,
)
from hf_unlearn.evaluation.tofu import TOFUEvaluator  # noqa: E402
from hf_unlearn.io import write_json_atomic, write_text_atomic  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the worker processes are forked
# Noise of the tiny CPU runs, repeated once per unlearning run.
warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*'pin_memory' argument is set as true", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*generations on the TOFU .* are empty", category=UserWarning)

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
    """Model size, training, the learning-rate grids, step caps and evaluation cadence. `full()` is the benchmark,
    `quick()` a few-minute run of the same pipeline."""

    num_authors: int = 40
    hidden_size: int = 256
    num_layers: int = 4
    vocab_size: int = 1024
    finetune_epochs: int = 40
    finetune_lr: float = 2e-3
    #: Learning-rate grids, one per family, half a decade apart (the rule of :func:`choose_learning_rate` picks).
    #: Two rates each: a first full run with three (3e-5 lowest) and an evaluation every 5 steps measured about
    #: two hours on 2 cores, most of it in the cheap evaluations, and GA at 3e-5 did not reach any target in 60 steps.
    learning_rates: tuple[float, ...] = (1e-4, 3e-4)
    rmu_learning_rates: tuple[float, ...] = (1e-3, 3e-3)
    grun_learning_rates: tuple[float, ...] = (3e-2, 1e-1)
    #: Step cap in passes over the forget set (batch 8 forget + 8 retain questions); GRUN takes `grun_steps_factor`x
    #: the steps (and evaluates that much less often): its steps train a few thousand parameters.
    max_epochs: int = 6
    grun_steps_factor: int = 3
    #: A cheap evaluation every this many optimizer steps (and before the first): one pass over the forget set.
    #: Each scores 760 sequences (the forget answers, paraphrases and 5 perturbations each, the retain answers),
    #: about 7 s on one thread at this size, twice the cost of the ten steps between two evaluations (2.7 s without
    #: the truth ratio, which the default targets do not need).
    eval_every: int = 10
    #: RMU steers this decoder layer's output (training the MLPs of it and the layers below); its coefficient c is
    #: `rmu_norm_scale` x the target's mean hidden-state norm there on the forget answers (the paper's c = 6.5 is for
    #: Zephyr-7B's activation scale).
    rmu_layer: int = 1
    rmu_norm_scale: float = 2.0
    max_new_tokens: int = 48
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] | None = None  # None: all of `methods_for`
    #: Processes (one torch thread each) training the two models and running the unlearning runs in parallel.
    workers: int = 2
    #: Stop when forget quality does not separate the target from the retain model (off only in tests).
    require_separation: bool = True
    #: Relearning and quantization attacks on the seed-0 models at this target ("" for none).
    robustness_target: str = "p10"
    relearn_steps: int = 10
    relearn_lr: float = 3e-4
    quantization_bits: int = 4

    @classmethod
    def full(cls) -> Settings:
        return cls()

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            num_authors=20,
            hidden_size=128,
            num_layers=2,
            finetune_epochs=24,
            learning_rates=(1e-4, 3e-4),
            grun_learning_rates=(1e-1,),
            max_epochs=8,
            eval_every=5,  # 5 steps per pass over its 40 forget questions
            rmu_layer=0,
            seeds=(0,),
            methods=("ga", "ga_gru", "npo", "grun_npo"),
        )

    def steps_per_epoch(self, num_forget_questions: int, batch_size: int = 8) -> int:
        return -(-num_forget_questions // batch_size)

    def grid(self, method: UnlearningRecipe) -> tuple[float, ...]:
        """The learning-rate grid of `method`'s family."""
        if method.grun:
            return self.grun_learning_rates
        return self.rmu_learning_rates if method.forget_loss == "rmu" else self.learning_rates

    def grun_layers(self) -> tuple[int, ...]:
        """GRUN's edited layers at the paper's relative depths (layers 20, 25 and 31 of Llama-3.1-8B's 32)."""
        n = self.num_layers
        return tuple(sorted({min(n - 1, round(n * 20 / 32)), min(n - 1, round(n * 25 / 32)), n - 1}))


def methods_for(settings: Settings, rmu_steering_coeff: float = 20.0) -> dict[str, UnlearningRecipe]:
    """The benchmark's methods (key -> :class:`~hf_unlearn.demo.quickstart.UnlearningRecipe`).

    GA, NPO, SimNPO, WGA and TNPO are the forget objectives alone; GD is GA + retain NLL, NPO+KL is NPO + KL to the
    target on the retain data; IDK and DPO train refusals with a retain NLL (TOFU's recipes); RMU steers
    `settings.rmu_layer`'s output with the embed-diff retain term, training the MLPs up to that layer. "+GRU" is the
    same objective with `rectification="gru"`: its whole gradient is projected against the moving average of the
    retain-NLL gradient (tmlr-group/GRU). GRUN edits the last prompt token at the paper's relative depths, with the
    reference's loss weights (renjie3/GRUN).
    """
    layer = settings.rmu_layer
    rmu = dict(
        forget_loss_kwargs={"layer": layer, "steering_coeff": rmu_steering_coeff},
        config_overrides={
            "retain_loss_kwargs": {"layer": layer},
            "trainable_parameters": rf"model\.layers\.({'|'.join(str(i) for i in range(layer + 1))})\.mlp\.",
        },
    )
    base: dict[str, UnlearningRecipe] = {
        "ga": UnlearningRecipe("ga", retain_loss="none"),
        "gd": UnlearningRecipe("ga", retain_loss="nll"),
        "npo": UnlearningRecipe("npo", retain_loss="none", forget_loss_kwargs={"beta": 0.1}),
        "npo_kl": UnlearningRecipe("npo", retain_loss="kl", forget_loss_kwargs={"beta": 0.1}),
        "simnpo": UnlearningRecipe("simnpo", retain_loss="none", forget_loss_kwargs={"beta": 4.5}),
        "wga": UnlearningRecipe("wga", retain_loss="none", forget_loss_kwargs={"beta": 1.0}),
        "tnpo": UnlearningRecipe("tnpo", retain_loss="none", forget_loss_kwargs={"beta": 4.0}),
        "idk": UnlearningRecipe("idk", retain_loss="nll"),
        "dpo": UnlearningRecipe("dpo", retain_loss="nll", forget_loss_kwargs={"beta": 0.1}),
        "rmu": UnlearningRecipe("rmu", retain_loss="embed_diff", **rmu),
    }
    methods: dict[str, UnlearningRecipe] = {}
    for name, method in base.items():
        methods[name] = method
        methods[f"{name}_gru"] = replace(method, rectification="gru")
    grun = dict(grun=True, steps_factor=settings.grun_steps_factor, grun_layers=settings.grun_layers())
    methods["grun_ga"] = UnlearningRecipe("ga", **grun)
    methods["grun_npo"] = UnlearningRecipe("npo", forget_loss_kwargs={"beta": 0.1}, **grun)
    return methods


LABELS = {"ga": "GA", "gd": "GD", "npo": "NPO", "npo_kl": "NPO+KL", "simnpo": "SimNPO", "wga": "WGA", "tnpo": "TNPO"}
LABELS |= {"idk": "IDK", "dpo": "DPO", "rmu": "RMU", "grun_ga": "GRUN(GA)", "grun_npo": "GRUN(NPO)"}


def label(name: str) -> str:
    """Display name of a method key (``"npo_gru"`` -> ``"GRU(NPO)"``: GRU rectifies the NPO objective)."""
    if name.endswith("_gru"):
        return f"GRU({LABELS[name.removesuffix('_gru')]})"
    return LABELS.get(name, name)


# ---------------------------------------------------------------------------------------------------------------------
# the target and the retain model, cached
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


def default_cache_dir() -> Path:
    return Path(os.environ.get("HF_UNLEARN_CACHE", Path.home() / ".cache" / "hf_unlearn")) / "tofu_mini"


def model_cache_key(settings: Settings, data: BenchmarkData) -> str:
    """What the two models depend on: their shape and training recipe, the training rows, torch's version."""
    recipe = {k: getattr(settings, k) for k in ("num_authors", "hidden_size", "num_layers", "vocab_size")}
    recipe |= {k: getattr(settings, k) for k in ("finetune_epochs", "finetune_lr")}
    payload = json.dumps(
        [recipe, data.target_train, data.retain_train, torch.__version__.split("+")[0]], sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _train_one(job: tuple[str, int]) -> tuple[str, dict[str, torch.Tensor], list[float], float]:
    name, seed = job
    settings, tokenizer, rows = _SHARED["settings"], _SHARED["tokenizer"], _SHARED["train_rows"][name]
    tic = time.perf_counter()
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
    return name, model.state_dict(), losses, time.perf_counter() - tic


def train_models(
    data: BenchmarkData, settings: Settings, cache_dir: Path | None, progress: bool = True, workers: int = 1
):
    """The tokenizer, the target (all authors) and the retain model (no forget author), from `cache_dir` when an
    earlier run trained them with the same recipe and rows, else trained here (in parallel processes when `workers`
    > 1) and saved there. Returns `(tokenizer, target, retain_model, info)`; `info` holds the training times and
    losses (of the run that trained them) and whether they came from the cache."""
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    folder = cache_dir / model_cache_key(settings, data) if cache_dir is not None else None
    if folder is not None and (folder / "training.json").is_file():
        info = json.loads((folder / "training.json").read_text())
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "target")
        models = {
            n: LlamaForCausalLM.from_pretrained(folder / n, dtype=torch.float32).eval() for n in ("target", "retain")
        }
        print(f"  loaded both models from the cache {folder} (trained in {info['seconds']:.0f} s by an earlier run)")
        return tokenizer, models["target"], models["retain"], {**info, "cached": True, "cache": str(folder)}
    tic = time.perf_counter()
    texts = [f"{r['question']} {r['answer']}" for r in data.target_train]
    tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
    _SHARED.update(
        settings=settings,
        tokenizer=tokenizer,
        progress=progress,
        train_rows={"target": data.target_train, "retain": data.retain_train},
    )
    jobs = [("target", 0), ("retain", 0)]
    pool = _pool(workers, len(jobs))
    if pool is None:
        results = list(map(_train_one, jobs))
    else:
        with pool:
            results = pool.map(_train_one, jobs)
    models, info = {}, {"seconds": 0.0, "losses": {}, "per_model_seconds": {}}
    for name, state, losses, seconds in results:
        model = tiny_llama(len(tokenizer), settings.num_layers, settings.hidden_size, seed=0)
        model.load_state_dict(state)
        models[name] = model.eval()
        info["losses"][name], info["per_model_seconds"][name] = losses, seconds
        print(f"  {name}: {len(_SHARED['train_rows'][name])} questions, final training loss {losses[-1]:.3f}")
    info["seconds"] = time.perf_counter() - tic
    if folder is not None:
        for name, model in models.items():
            model.save_pretrained(folder / name)
            tokenizer.save_pretrained(folder / name)
        write_json_atomic(folder / "training.json", info)  # last: its presence marks a complete cache entry
    return tokenizer, models["target"], models["retain"], {**info, "cached": False, "cache": str(folder)}


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


def evaluate(model, tokenizer, eval_sets, output_dir: Path | None, retain_logs: Path | None, settings, progress):
    """TOFU summary of `model` on the benchmark's evaluation sets (logs written to `output_dir` unless None), with
    the retain-author utility added."""
    summary = TOFUEvaluator(
        model,
        tokenizer,
        forget_split="forget10",  # a label: the rows come from `eval_sets`
        data_dir="bundled",
        datasets=eval_sets,
        splits=list(eval_sets),
        max_new_tokens=settings.max_new_tokens,
        progress=progress,
    ).evaluate(output_dir=output_dir, retain_logs=retain_logs)
    if all(k in summary for k in RETAIN_UTILITY_KEYS):
        summary["retain_utility"] = model_utility([summary[k] for k in RETAIN_UTILITY_KEYS])
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# which metrics separate the target from the retain model
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# unlearning runs
# ---------------------------------------------------------------------------------------------------------------------


def run_name(method: str, seed: int, learning_rate: float) -> str:
    return f"{method}_lr{learning_rate:g}_seed{seed}"


def _relearn_split(rows: Sequence[Mapping[str, Any]]) -> tuple[Dataset, Dataset]:
    """The relearning attack's data: it relearns the even forget questions and is measured on the odd ones."""
    return _qa_dataset(rows[0::2]), _qa_dataset(rows[1::2])


def robustness_attacks(model, tokenizer, forget_eval: Sequence[Mapping[str, Any]], settings: Settings) -> dict:
    """Relearning (all weights, `relearn_steps` AdamW steps) and `quantization_bits`-bit quantization of a copy of
    `model`: the forget probability before and after each."""
    relearn, held_out = _relearn_split(forget_eval)
    relearned = relearning_attack(
        model, tokenizer, relearn, held_out, steps=settings.relearn_steps, learning_rate=settings.relearn_lr
    )
    quantized = quantization_attack(model, tokenizer, _qa_dataset(forget_eval), bits=settings.quantization_bits)
    return {"relearning": relearned.to_dict(), "quantization": quantized.to_dict()}


def _trajectory(name: str, seed: int, lr: float, targets: Sequence[Target], folder: str):
    """Unlearn a copy of the target with method `name` at rate `lr` and `seed`, scored along the way until every one of
    `targets` is met or the step cap; returns `(unlearned model, TrajectoryCallback)`."""
    shared = _SHARED
    settings: Settings = shared["settings"]
    method: UnlearningRecipe = shared["methods"][name]
    truth_ratio = any(t.metric in TRUTH_RATIO_METRICS for t in targets)
    scorer = TrajectoryScorer(
        shared["target"], shared["tokenizer"], shared["eval_sets"], shared["retain_stats"], truth_ratio
    )
    callback = TrajectoryCallback(scorer, targets, settings.eval_every * method.steps_factor)
    # The Trainer prints its final metrics when its progress bar is off: keep the benchmark's output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        unlearned = unlearn_copy(
            shared["target"],
            shared["tokenizer"],
            replace(method, learning_rate=lr),
            shared["forget"],
            shared["retain"],
            shared["output_dir"] / folder / run_name(name, seed, lr),
            _step_cap(settings, shared["steps_per_epoch"]),
            lr,
            seed,
            progress=False,
            save=False,
            callbacks=[callback],
        )
    return unlearned, callback


def _unlearn_job(job: tuple[str, int, float]) -> dict[str, Any]:
    """One method at one learning rate and seed on a copy of the target (in a worker process or not): its
    trajectory, and the full evaluation at the first point meeting each target."""
    name, seed, lr = job
    shared = _SHARED
    settings: Settings = shared["settings"]
    targets: Sequence[Target] = shared["targets"]
    tokenizer = shared["tokenizer"]
    tic = time.perf_counter()
    unlearned, callback = _trajectory(name, seed, lr, targets, "runs")
    seconds = time.perf_counter() - tic
    matched: dict[str, Matched | None] = {t.name: None for t in targets}
    evaluated: dict[int, dict[str, Any]] = {}  # one full evaluation per distinct step
    for target in targets:
        if target.name not in callback.snapshots:
            continue
        step, state = callback.snapshots[target.name]
        point = next(p for p in callback.trajectory if p["step"] == step)
        load_trainable_state(unlearned, state)
        if step not in evaluated:
            evaluated[step] = evaluate(
                unlearned, tokenizer, shared["eval_sets"], None, shared["retain_logs"], settings, False
            )
        matched[target.name] = Matched(step=step, point=point, summary=evaluated[step])
    steps = callback.trajectory[-1]["step"]
    record = RunRecord(label(name), seed, lr, steps, seconds, callback.scoring_seconds, callback.trajectory, matched)
    return {"key": name, **record.to_dict()}


def _robustness_job(job: tuple[str, int, float]) -> dict[str, Any]:
    """The attacks on one method's model at the robustness target: the run is repeated (same seed, rate and data
    order, so the same trajectory) until its first evaluation meeting that target, then attacked there."""
    name, seed, lr = job
    shared = _SHARED
    settings: Settings = shared["settings"]
    target = next(t for t in shared["targets"] if t.name == settings.robustness_target)
    tokenizer = shared["tokenizer"]
    unlearned, callback = _trajectory(name, seed, lr, [target], "robustness")
    if target.name not in callback.snapshots:
        return {"key": name, "seed": seed, "learning_rate": lr, "target": target.name, "step": None}
    step, state = callback.snapshots[target.name]
    load_trainable_state(unlearned, state)
    point = next(p for p in callback.trajectory if p["step"] == step)
    attacks = robustness_attacks(unlearned, tokenizer, shared["forget_eval"], settings)
    return {"key": name, "seed": seed, "learning_rate": lr, "target": target.name, "step": step, "point": point,
            **attacks}  # fmt: skip


def _step_cap(settings: Settings, steps_per_epoch: int) -> int:
    """The step cap of a full-parameter run: `max_epochs` passes, rounded up to whole evaluation intervals."""
    cap = settings.max_epochs * steps_per_epoch
    return -(-cap // settings.eval_every) * settings.eval_every


def _run_jobs(
    jobs: Sequence[tuple[str, int, float]],
    settings: Settings,
    desc: str,
    progress: bool,
    worker=None,
    folder: str = "runs",
) -> list[dict]:
    """Run the jobs (`worker`, default `_unlearn_job`) not already recorded in `OUTPUT_DIR/<folder>/` (each finished
    job is written there at once, so an interrupted benchmark resumes); returns every job's record, in order."""
    worker = worker or _unlearn_job
    runs_dir: Path = _SHARED["output_dir"] / folder
    fingerprint = _SHARED["fingerprint"]
    records: dict[tuple[str, int, float], dict] = {}
    todo = []
    for job in jobs:
        path = runs_dir / f"{run_name(*job)}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") == fingerprint:
                records[job] = saved
                continue
        todo.append(job)
    if len(todo) < len(jobs):
        print(f"  reusing {len(jobs) - len(todo)} finished run(s) from {runs_dir}")
    pool = _pool(settings.workers, len(todo))
    done = map(worker, todo) if pool is None else pool.imap_unordered(worker, todo)
    try:
        for record in tqdm(done, total=len(todo), desc=desc, disable=not progress):
            record["fingerprint"] = fingerprint
            job = (record["key"], record["seed"], record["learning_rate"])
            write_json_atomic(runs_dir / f"{run_name(*job)}.json", record)
            records[job] = record
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return [records[job] for job in jobs]


# ---------------------------------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    """Everything the report needs: settings, the two models' summaries, the metric check, every run, the chosen
    learning rates, the verdicts and the timings."""

    settings: dict[str, Any]
    targets: list[dict[str, Any]]
    references: dict[str, dict[str, Any]]  # "target" / "retain model" -> full TOFU summary
    separation: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    chosen: dict[str, dict[str, float | None]]  # method key -> target name -> learning rate
    reference_attacks: dict[str, dict[str, Any]]
    rmu_steering_coeff: float
    model_training: dict[str, Any]
    #: method key -> the attacks on its seed-0 model at the robustness target (see `_robustness_job`)
    robustness: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    command: str | None = None
    load_average: float | None = None
    machine: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[RunRecord]:
        return [
            RunRecord.from_dict({k: v for k, v in r.items() if k not in ("key", "fingerprint")}) for r in self.runs
        ]


def run_benchmark(
    settings: Settings,
    output_dir: str | Path = "tofu_mini_output",
    data_dir: str | Path = DATA_DIR,
    progress: bool = True,
    cache_dir: str | Path | None = "default",
    targets: Sequence[Target] = DEFAULT_TARGETS,
) -> BenchmarkResult:
    """Train (or load) the target and the retain model, check the metrics, run every method's trajectories, pick
    each method's learning rate per target on seed 0, rerun it on the other seeds, judge the claims.

    The two models are cached in `cache_dir` ("default": :func:`default_cache_dir`, as on the command line; None
    trains them anew and keeps nothing): training them takes about 43 minutes on 2 cores.

    Writes ``runs/*.json`` (one per unlearning run), ``result.json`` and ``results.md`` to `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # loading and saving the small models
    datasets.disable_progress_bars()  # the unlearning loop has its own bar
    all_names = list(methods_for(settings))
    names = list(settings.methods or all_names)
    unknown = [m for m in names if m not in all_names]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {all_names}.")
    if settings.robustness_target and settings.robustness_target not in {t.name for t in targets}:
        raise ValueError(f"robustness_target {settings.robustness_target!r} is none of the targets.")
    split = select_authors(settings.num_authors)
    data = load_data(split, data_dir)
    eval_sets = data.eval_sets()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    print(
        f"1/5 The target ({len(split.authors)} authors, {len(data.target_train)} questions) and the retain model "
        f"(without the {len(split.forget)} forget authors {list(split.forget)})"
    )
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    tokenizer, target, retain_model, training = train_models(
        data, settings, None if cache_dir is None else Path(cache_dir), progress, settings.workers
    )
    timings["training (or loading) target and retain model"] = time.perf_counter() - started

    print("2/5 Evaluating both models and checking which metrics separate them")
    tic = time.perf_counter()
    retain_logs = output_dir / "retain_model" / "eval"
    world = {s: load_tofu(f"{s}_perturbed", "bundled") for s in ("real_authors", "world_facts")}
    references, logs = {}, {}
    for name, model, theirs in (("retain model", retain_model, None), ("target", target, retain_logs)):
        out = retain_logs if theirs is None else output_dir / "target" / "eval"
        references[name] = evaluate(model, tokenizer, {**eval_sets, **world}, out, theirs, settings, progress)
        logs[name] = read_tofu_logs(out)
    references["retain model"]["forget_quality"] = 1.0  # by definition (the KS test against itself)
    separation = metric_separation(logs["target"], logs["retain model"])
    print(format_separation(separation))
    if settings.require_separation:
        check_separation(separation)
    norm = mean_hidden_norm(target, tokenizer, data.forget, settings.rmu_layer)
    rmu_coeff = settings.rmu_norm_scale * norm
    print(
        f"  RMU: mean hidden-state norm at layer {settings.rmu_layer} on the forget answers {norm:.2f}"
        f" -> c = {rmu_coeff:.2f}"
    )
    reference_attacks = {}
    if settings.robustness_target:
        for name, model in (("target", target), ("retain model", retain_model)):
            reference_attacks[name] = robustness_attacks(model, tokenizer, data.forget_eval, settings)
    timings["evaluating target and retain model"] = time.perf_counter() - tic

    methods = methods_for(settings, rmu_coeff)
    forget, retain = _qa_dataset(data.forget), _qa_dataset(data.retain_train)
    # What one run's outcome depends on (not which seeds, methods or how many workers the benchmark runs): runs with
    # the same fingerprint are reused, so a run with fewer seeds or methods, or an interrupted one, costs nothing.
    run_settings = {k: v for k, v in asdict(settings).items() if k not in ("seeds", "methods", "workers")}
    fingerprint = hashlib.sha256(
        json.dumps([run_settings, [asdict(t) for t in targets], model_cache_key(settings, data)], default=str).encode()
    ).hexdigest()[:16]
    _SHARED.update(
        settings=settings,
        target=target,
        tokenizer=tokenizer,
        methods=methods,
        targets=list(targets),
        forget=forget,
        retain=retain,
        forget_eval=data.forget_eval,
        steps_per_epoch=settings.steps_per_epoch(len(forget)),
        eval_sets=eval_sets,
        retain_logs=retain_logs,
        retain_stats=load_retain_truth_ratio_stats(retain_logs),
        output_dir=output_dir,
        fingerprint=fingerprint,
    )

    jobs = [(name, 0, lr) for name in names for lr in settings.grid(methods[name])]
    print(f"3/5 Seed 0: {len(names)} methods over their learning-rate grids ({len(jobs)} runs)")
    tic = time.perf_counter()
    runs = _run_jobs(jobs, settings, "seed 0, every learning rate", progress)
    timings["seed 0 over the learning-rate grids"] = time.perf_counter() - tic

    chosen: dict[str, dict[str, float | None]] = {}
    for name in names:
        mine = [RunRecord.from_dict(_record_fields(r)) for r in runs if r["key"] == name]
        chosen[name] = {t.name: choose_learning_rate(mine, t.name) for t in targets}
    jobs = [
        (name, seed, lr)
        for seed in settings.seeds
        if seed != 0
        for name in names
        for lr in sorted({lr for lr in chosen[name].values() if lr is not None})
    ]
    print(f"4/5 Seeds {[s for s in settings.seeds if s != 0]} at the chosen learning rates ({len(jobs)} runs)")
    tic = time.perf_counter()
    runs += _run_jobs(jobs, settings, "other seeds, chosen rates", progress)
    timings["other seeds at the chosen rates"] = time.perf_counter() - tic

    robustness: dict[str, dict[str, Any]] = {}
    if settings.robustness_target:
        jobs = [
            (name, 0, chosen[name][settings.robustness_target])
            for name in names
            if chosen[name].get(settings.robustness_target) is not None
        ]
        print(f"  attacks on seed 0's models at {settings.robustness_target} ({len(jobs)} runs repeated to there)")
        tic = time.perf_counter()
        records = _run_jobs(jobs, settings, "robustness", progress, worker=_robustness_job, folder="robustness")
        robustness = {record["key"]: record for record in records}
        timings["robustness attacks"] = time.perf_counter() - tic

    print("5/5 Writing the results")
    timings["total"] = time.perf_counter() - started
    result = BenchmarkResult(
        settings=asdict(settings),
        targets=[asdict(t) for t in targets],
        references=references,
        separation=[asdict(s) for s in separation],
        runs=runs,
        chosen=chosen,
        reference_attacks=reference_attacks,
        robustness=robustness,
        rmu_steering_coeff=rmu_coeff,
        model_training={k: v for k, v in training.items() if k != "losses"}
        | {"final_losses": {k: v[-1] for k, v in training.get("losses", {}).items()}},
        seconds=timings,
        command=" ".join(["python", *sys.argv]) if sys.argv and sys.argv[0].endswith("tofu_mini.py") else None,
        load_average=os.getloadavg()[0],
        machine=machine_info(settings),
    )
    write_json_atomic(output_dir / "result.json", asdict(result))
    from tofu_mini_report import matched_tables, verdict_table

    text = matched_tables(result) + "\n\n" + verdict_table(result)
    write_text_atomic(output_dir / "results.md", text + "\n")
    print()
    print(text)
    print(f"\nDone in {timings['total']:.0f} s; results in {output_dir.resolve()}")
    return result


def _record_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("key", "fingerprint")}


def machine_info(settings: Settings) -> dict[str, Any]:
    import platform

    import transformers

    return {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "workers": settings.workers,
    }


def settings_from_dict(values: Mapping[str, Any]) -> Settings:
    """The :class:`Settings` of a result.json (its lists back to tuples)."""
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def load_result(output_dir: str | Path) -> BenchmarkResult:
    """The result of a finished run from its ``result.json``, to rebuild the report without rerunning."""
    path = Path(output_dir) / "result.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the benchmark did not finish in {output_dir}.")
    return BenchmarkResult(**json.loads(path.read_text()))


def prepare_for_compare(
    settings: Settings,
    out_dir: str | Path,
    data_dir: str | Path = DATA_DIR,
    cache_dir: str | Path | None = "default",
    progress: bool = True,
) -> dict[str, Any]:
    """The inputs of `hf-unlearn compare` for this benchmark (examples/compare/tofu_mini*.yaml): the target and the
    retain model (trained, or loaded from the cache) saved in `out_dir/target` and `out_dir/retain`, the unlearning
    and evaluation rows in `out_dir/data/`, and RMU's steering coefficient in `out_dir/prepared.json`."""
    out_dir = Path(out_dir)
    split = select_authors(settings.num_authors)
    data = load_data(split, data_dir)
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    tokenizer, target, retain_model, _ = train_models(
        data, settings, None if cache_dir is None else Path(cache_dir), progress, settings.workers
    )
    for name, model in (("target", target), ("retain", retain_model)):
        model.save_pretrained(out_dir / name)
        tokenizer.save_pretrained(out_dir / name)
    rows = {"forget": data.forget, "retain": data.retain_train, "forget_eval": data.forget_eval,
            "retain_eval": data.retain_eval}  # fmt: skip
    for name, selected in rows.items():
        path = out_dir / "data" / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in selected), encoding="utf-8")
    norm = mean_hidden_norm(target, tokenizer, data.forget, settings.rmu_layer)
    info = {"rmu_layer": settings.rmu_layer, "rmu_steering_coeff": settings.rmu_norm_scale * norm,
            "model_cache_key": model_cache_key(settings, data), "settings": asdict(settings)}  # fmt: skip
    write_json_atomic(out_dir / "prepared.json", info)
    coeff = info["rmu_steering_coeff"]
    print(f"  prepared {out_dir}: RMU steering coefficient c = {coeff:.2f} (layer {settings.rmu_layer})")
    return info


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 4e-3,1e-2, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected one or more positive learning rates, got {text!r}")
    return values


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The run's :class:`Settings`: `--quick` or the full benchmark, with the command line's overrides."""
    settings = Settings.quick() if args.quick else Settings.full()
    overrides: dict[str, Any] = {"workers": args.workers}
    if args.methods:
        overrides["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.seeds:
        overrides["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.grun_learning_rates:
        overrides["grun_learning_rates"] = args.grun_learning_rates
    if args.grun_steps_factor is not None:
        if args.grun_steps_factor < 1:
            raise ValueError(f"--grun-steps-factor must be >= 1, got {args.grun_steps_factor}.")
        overrides["grun_steps_factor"] = args.grun_steps_factor
    if args.no_attacks:
        overrides["robustness_target"] = ""
    return replace(settings, **overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A few-minute run: 20 authors, 2 layers, 4 methods.")
    parser.add_argument("--output-dir", default="tofu_mini_output", help="Runs, logs, result.json, results.md.")
    parser.add_argument(
        "--cache-dir",
        default=str(default_cache_dir()),
        help="Where the trained target and retain model are kept and reused (default %(default)s; '' for none).",
    )
    parser.add_argument("--methods", default=None, help="Comma-separated method keys (default: all).")
    parser.add_argument("--seeds", default=None, help="Comma-separated unlearning seeds (default: 0,1,2).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1).")
    parser.add_argument("--workers", type=int, default=2, help="Parallel processes (default 2, one per CPU core).")
    parser.add_argument("--results-md", default=None, help="Also write RESULTS.md here (and the plots beside it).")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="The benchmark's TOFU rows.")
    parser.add_argument("--build-data", action="store_true", help="Rebuild --data-dir from --tofu-dir, then exit.")
    parser.add_argument("--tofu-dir", default=None, help="TOFU in the Hub's layout (for --build-data).")
    parser.add_argument(
        "--report-from",
        default=None,
        help="Rebuild --results-md and the plots from a finished run's output directory.",
    )
    parser.add_argument(
        "--grun-learning-rates",
        type=_float_list,
        default=None,
        help="GRUN's learning-rate grid, comma-separated (default 0.03,0.1; renjie3/GRUN trains at 4e-3).",
    )
    parser.add_argument(
        "--grun-steps-factor",
        type=int,
        default=None,
        help="GRUN's step cap and evaluation interval, in multiples of the full-parameter methods' (default 3).",
    )
    parser.add_argument("--no-attacks", action="store_true", help="Skip the relearning and quantization attacks.")
    parser.add_argument(
        "--prepare",
        default=None,
        metavar="DIR",
        help="Write the models and rows that examples/compare/tofu_mini*.yaml read into DIR, then exit.",
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.build_data:
        if not args.tofu_dir:
            parser.error("--build-data needs --tofu-dir")
        print(build_data(args.tofu_dir, args.data_dir))
        return 0
    if args.prepare:
        torch.set_num_threads(args.threads)
        prepare_for_compare(settings_from_args(args), args.prepare, args.data_dir, cache_dir=args.cache_dir or None)
        return 0
    from tofu_mini_report import write_report

    if args.report_from:
        if not args.results_md:
            parser.error("--report-from needs --results-md")
        write_report(load_result(args.report_from), Path(args.results_md))
        return 0
    torch.set_num_threads(args.threads)
    settings = settings_from_args(args)
    result = run_benchmark(
        settings, args.output_dir, args.data_dir, progress=not args.no_progress, cache_dir=args.cache_dir or None
    )
    result.command = "python examples/benchmarks/tofu_mini.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json_atomic(Path(args.output_dir) / "result.json", asdict(result))
    if args.results_md:
        write_report(result, Path(args.results_md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
