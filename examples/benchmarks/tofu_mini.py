"""TOFU-mini: every unlearning method of hf_unlearn compared at matched forgetting on a CPU-sized TOFU, through
`hf-unlearn compare` (examples/compare/tofu_mini.yaml; tofu_mini_quick.yaml for a few minutes' version).

This script builds what those configs read. From 40 TOFU authors (20 questions each) a 4-layer Llama (hidden 256)
and its byte-level BPE tokenizer are trained from scratch until the model has memorised every answer (the *target*),
and a second one the same way without the 4 forget authors (the *retain* model, the gold standard); both are cached
(``--cache-dir``) and reused. ``--prepare DIR`` saves them with the unlearning and evaluation rows and RMU's steering
coefficient; ``--results-md`` turns a finished comparison into RESULTS.md, with the check that the metrics separate
the target from the retain model.

Which authors (see :func:`select_authors`): TOFU's perturbed answers (needed by the truth ratio and hence by forget
quality) exist only for authors 0-19 (``retain_perturbed``) and 180-199 (``forget10_perturbed``), so the benchmark
takes the first and the last N/2 authors, forgets the last 10% (as TOFU's forget splits do) and measures retention on
the first N/2 (the retain authors with perturbed answers). The rows ship in ``tofu_mini_data/`` (``--build-data``
rebuilds them from a copy of the TOFU data set).

    python examples/benchmarks/tofu_mini.py --prepare examples/benchmarks/tofu_mini_models/full
    hf-unlearn compare --config examples/compare/tofu_mini.yaml --output-dir tofu_mini_v3
    python examples/benchmarks/tofu_mini.py --results-md examples/benchmarks/RESULTS.md --compare-output tofu_mini_v3
    python examples/benchmarks/tofu_mini.py --quick --prepare examples/benchmarks/tofu_mini_models/quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as sps

from hf_unlearn.data import read_jsonl
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama, train_tokenizer
from hf_unlearn.evaluation.logs import (
    per_question_probability,
    per_question_rouge_l_recall,
    read_tofu_logs,
    split_truth_ratio_stats,
)
from hf_unlearn.io import write_json_atomic, write_text_atomic

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the training processes are forked

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


# ---------------------------------------------------------------------------------------------------------------------
# the models' settings
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The target and retain models' shape and training, and RMU's layer and scale. `full()` is the benchmark,
    `quick()` a few-minute version (examples/compare/tofu_mini_quick.yaml)."""

    num_authors: int = 40
    hidden_size: int = 256
    num_layers: int = 4
    vocab_size: int = 1024
    finetune_epochs: int = 40
    finetune_lr: float = 2e-3
    #: RMU steers this decoder layer's output; its coefficient c is `rmu_norm_scale` x the target's mean hidden-state
    #: norm there on the forget answers (the paper's c = 6.5 is for Zephyr-7B's activation scale).
    rmu_layer: int = 1
    rmu_norm_scale: float = 2.0
    #: Processes (one torch thread each) training the two models in parallel.
    workers: int = 2

    @classmethod
    def full(cls) -> Settings:
        return cls()

    @classmethod
    def quick(cls) -> Settings:
        return cls(num_authors=20, hidden_size=128, num_layers=2, finetune_epochs=24, rmu_layer=0)


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


# ---------------------------------------------------------------------------------------------------------------------
# the comparison's inputs, and RESULTS.md from its output
# ---------------------------------------------------------------------------------------------------------------------


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
    tokenizer, target, retain_model, training = train_models(
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
    info = {
        "rmu_layer": settings.rmu_layer,
        "rmu_steering_coeff": settings.rmu_norm_scale * norm,
        "model_cache_key": model_cache_key(settings, data),
        "settings": asdict(settings),
        "split": asdict(split),
        "training": {k: v for k, v in training.items() if k != "losses"}
        | {"final_losses": {k: v[-1] for k, v in training.get("losses", {}).items()}},
    }
    write_json_atomic(out_dir / "prepared.json", info)
    coeff = info["rmu_steering_coeff"]
    print(f"  prepared {out_dir}: RMU steering coefficient c = {coeff:.2f} (layer {settings.rmu_layer})")
    return info


def results_md(compare_output: str | Path, prepared: str | Path, command: str) -> str:
    """RESULTS.md: the benchmark's setup (from `prepared.json`), whether the metrics separate the target from the
    retain model (from the comparison's reference logs), then the comparison's report."""
    compare_output, prepared = Path(compare_output), Path(prepared)
    from hf_unlearn.compare.report import format_report, load_results

    results = load_results(compare_output)
    info = json.loads((prepared / "prepared.json").read_text(encoding="utf-8"))
    settings, split = info["settings"], info["split"]
    references = compare_output / "references"
    separation = metric_separation(read_tofu_logs(references / "target" / "eval"),
                                   read_tofu_logs(references / "retain" / "eval"))  # fmt: skip
    losses = info["training"].get("final_losses", {})
    report = format_report(results).split("\n", 1)[1]  # its own title goes
    half = len(split["authors"]) // 2
    authors = f"{split['authors'][0]}-{split['authors'][half - 1]} and {split['authors'][half]}-{split['authors'][-1]}"
    trained = ", ".join(f"{k} {v:.3f}" for k, v in losses.items())
    return f"""# TOFU-mini results: the methods at matched forgetting

Generated by `hf-unlearn compare` and `examples/benchmarks/tofu_mini.py` (rerun the commands to regenerate it):

```
{command}
```

**The models**: TOFU authors {authors} ({len(split["authors"])} authors x 20 questions, `tofu_mini_data/`); forget
authors {list(split["forget"])}; retention evaluated on authors {split["retain_eval"][0]}-{split["retain_eval"][-1]}.
A Llama with {settings["num_layers"]} layers, hidden size {settings["hidden_size"]}, a byte-level BPE tokenizer of
{settings["vocab_size"]} tokens; target and retain model trained from scratch with the same recipe
({settings["finetune_epochs"]} epochs, AdamW, lr {settings["finetune_lr"]:g}, cosine, batch 16, seed 0; final training
losses {trained}). RMU's c = {info["rmu_steering_coeff"]:.2f} ({settings["rmu_norm_scale"]:g} x the target's mean
hidden-state norm at layer {settings["rmu_layer"]}).

## Do the metrics separate the target from the retain model?

KS two-sample test on the per-question values of both models (for the forget truth ratio the p-value is the target's
forget quality). TOFU's real-author and world-fact splits measure nothing for a model trained only on fictitious
authors, hence the retain-author utility.

{format_separation(separation)}
{report}
## Plots

![utility at the matched points](tofu_mini_utility_at_targets.png)

![trajectories of the first seed at the chosen rates](tofu_mini_trajectories.png)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="The quick models: 20 authors, 2 layers.")
    parser.add_argument("--prepare", default=None, metavar="DIR", help="Write the models and rows the configs read.")
    parser.add_argument("--results-md", default=None, help="Write RESULTS.md from --compare-output and --prepared.")
    parser.add_argument("--compare-output", default=None, metavar="DIR", help="A finished comparison's folder.")
    parser.add_argument("--prepared", default=str(HERE / "tofu_mini_models" / "full"), metavar="DIR",
                        help="The --prepare folder the comparison used (default %(default)s).")  # fmt: skip
    parser.add_argument("--command", default=None, help="The commands to print in RESULTS.md.")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()), help="Trained models' cache ('' for none).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1).")
    parser.add_argument("--workers", type=int, default=2, help="Processes training the two models (default 2).")
    parser.add_argument("--data-dir", default=str(DATA_DIR), help="The benchmark's TOFU rows.")
    parser.add_argument("--build-data", action="store_true", help="Rebuild --data-dir from --tofu-dir, then exit.")
    parser.add_argument("--tofu-dir", default=None, help="TOFU in the Hub's layout (for --build-data).")
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
    if args.results_md:
        if not args.compare_output:
            parser.error("--results-md needs --compare-output (a finished comparison's folder)")
        command = (
            args.command
            or f"hf-unlearn compare --config examples/compare/tofu_mini.yaml --output-dir {args.compare_output}"
        )
        write_text_atomic(args.results_md, results_md(args.compare_output, args.prepared, command))
        from hf_unlearn.compare.report import load_results, plot

        folder = Path(args.results_md).parent
        for path in plot(load_results(args.compare_output), folder):
            path.replace(folder / f"tofu_mini_{path.name}")  # beside RESULTS.md, named for the benchmark
            print(f"  wrote {folder / f'tofu_mini_{path.name}'}")
        return 0
    if not args.prepare:
        parser.error("give --prepare DIR (then run hf-unlearn compare), --results-md or --build-data")
    torch.set_num_threads(args.threads)
    settings = Settings.quick() if args.quick else Settings.full()
    settings = Settings(**{**asdict(settings), "workers": args.workers})
    prepare_for_compare(settings, args.prepare, args.data_dir, args.cache_dir or None, not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
