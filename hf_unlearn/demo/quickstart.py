"""Offline quickstart: teach a tiny model the bundled TOFU subset, then unlearn two authors with GA + NLL, NPO + NLL,
the same NPO + NLL objective rectified by GRU, and GRUN, evaluate each against a model that never saw them, and write
a table, a plot and model cards. Each row's label is its objective: `GRU(npo + nll)` optimises npo + nll with its
gradient projected off the retain NLL's (moving-average) gradient when they conflict.

With no options it needs no download: the tokenizer and the models are trained locally on the TOFU subset shipped
with hf_unlearn (10 fictitious authors, 2 of them to forget). With `--model` (a causal LM already fine-tuned on
TOFU, e.g. `open-unlearning/tofu_Llama-3.2-1B-Instruct_full`) and `--dataset locuslab/TOFU` the same steps run on
a real model and data set; forget quality then needs `--retain-model` (a model trained without the forget authors).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import logging as hf_logging

from ..data.tofu import TOFU_RETAIN_OF, load_tofu
from ..evaluation.logs import tofu_summary_from_logs
from ..evaluation.metrics import model_utility
from ..io import record_weights_fingerprint
from .tiny import finetune_on_qa, tiny_llama, train_tokenizer

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

BUNDLED = "bundled"
RETAIN_UTILITY_KEYS = ("retain_probability", "retain_rougeL_recall", "retain_truth_ratio")
#: A row has forgotten when its forget probability is at most this (TOFU-mini's first matched-forgetting target).
FORGET_TARGET = 0.1


@dataclass(frozen=True)
class UnlearningRecipe:
    """An unlearning method as the quickstart and TOFU-mini run it: the trainer's losses and their kwargs, GRU or
    GRUN, its learning rate and step factor, and any further `UnlearningConfig` fields. `unlearn_copy` runs it."""

    forget_loss: str
    retain_loss: str = "nll"
    forget_loss_kwargs: dict[str, Any] = field(default_factory=dict)
    rectification: str | None = None
    grun: bool = False
    learning_rate: float | None = None  # None: the quickstart's learning rate
    steps_factor: int = 1  # GRUN's steps are cheap (a frozen model, a few thousand parameters): it takes more
    #: Further `UnlearningConfig` fields (e.g. `retain_loss_kwargs`, `trainable_parameters`, `gru_retain_weight`).
    config_overrides: dict[str, Any] = field(default_factory=dict)
    #: GRUN: the decoder layers to edit (None: every layer of the model).
    grun_layers: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        """What the row optimises: its objective, inside GRU(...) when GRU projects that objective's gradient."""
        if self.grun:
            from ..grun.config import GRUNConfig

            config = GRUNConfig(layers=[0], forget_loss=self.forget_loss)
            return (
                f"GRUN({config.forget_weight:g} {self.forget_loss} + {config.retain_weight:g} nll"
                f" + {config.gate_weight:g} gate)"
            )
        objective = self.forget_loss if self.retain_loss == "none" else f"{self.forget_loss} + {self.retain_loss}"
        return f"GRU({objective})" if self.rectification == "gru" else objective


METHODS: dict[str, UnlearningRecipe] = {
    "ga": UnlearningRecipe("ga"),
    "npo": UnlearningRecipe("npo", forget_loss_kwargs={"beta": 0.1}),
    "npo_gru": UnlearningRecipe("npo", forget_loss_kwargs={"beta": 0.1}, rectification="gru"),
    # GRUN trains a few thousand parameters at the last prompt token of a 2-layer model: a larger rate, more steps
    # (with the reference's forget weight 100, its gate needs about 60 steps to close on the retain authors here).
    "grun": UnlearningRecipe("npo", forget_loss_kwargs={"beta": 0.1}, grun=True, learning_rate=1e-1, steps_factor=6),
}


@dataclass
class QuickstartResult:
    """One row of the table: a model and its TOFU numbers (forget01 forget split; utility over retain authors)."""

    method: str
    forget_probability: float
    forget_rougeL_recall: float
    forget_quality: float | None
    retain_probability: float
    retain_rougeL_recall: float
    retain_utility: float
    seconds: float = 0.0

    @property
    def reached_forget_target(self) -> bool:
        """Whether the row forgot: forget probability <= :data:`FORGET_TARGET`. Rows that did not are not at the
        same amount of forgetting as those that did, so their utilities do not compare."""
        return self.forget_probability <= FORGET_TARGET

    @classmethod
    def from_summary(cls, method: str, summary: dict[str, Any], seconds: float = 0.0) -> QuickstartResult:
        return cls(
            method=method,
            forget_probability=summary["forget_probability"],
            forget_rougeL_recall=summary["forget_rougeL_recall"],
            forget_quality=summary.get("forget_quality"),
            retain_probability=summary["retain_probability"],
            retain_rougeL_recall=summary["retain_rougeL_recall"],
            retain_utility=model_utility([summary[k] for k in RETAIN_UTILITY_KEYS]),
            seconds=seconds,
        )


def _evaluate(model, tokenizer, forget_split, data_dir, output_dir, retain_logs, max_new_tokens, progress):
    from ..evaluation.tofu import TOFUEvaluator

    return TOFUEvaluator(
        model,
        tokenizer,
        forget_split=forget_split,
        data_dir=data_dir,
        splits=["retain", "forget"],
        max_new_tokens=max_new_tokens,
        progress=progress,
    ).evaluate(output_dir=output_dir, retain_logs=retain_logs)


def _unlearning_args(
    output_dir: Path, method: UnlearningRecipe, steps: int, learning_rate: float, seed: int, progress: bool
):
    from ..config import UnlearningConfig

    return UnlearningConfig(
        output_dir=str(output_dir),
        forget_loss=method.forget_loss,
        forget_loss_kwargs=method.forget_loss_kwargs,
        retain_loss=method.retain_loss,
        rectification=method.rectification,
        per_device_train_batch_size=8,
        max_steps=steps * method.steps_factor,
        learning_rate=method.learning_rate or learning_rate,
        lr_scheduler_type="constant",
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        seed=seed,
        disable_tqdm=not progress,
        logging_strategy="no",
        **method.config_overrides,
    )


def unlearn_copy(
    target: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    method: UnlearningRecipe,
    forget: Dataset,
    retain: Dataset,
    output_dir: Path,
    steps: int,
    learning_rate: float,
    seed: int,
    progress: bool,
    save: bool = True,
    callbacks: list | None = None,
) -> torch.nn.Module:
    """Unlearn with `method` on a copy of `target` (left unchanged) for `steps` x the method's step factor; returns
    the unlearned model (a `GRUNModel` for GRUN), saved with the tokenizer in `output_dir` if `save`. `callbacks`
    (transformers `TrainerCallback`s) are added to the trainer's, e.g. to evaluate along the way or stop early."""
    from ..trainer import create_trainer

    model = copy.deepcopy(target)
    args = _unlearning_args(output_dir, method, steps, learning_rate, seed, progress)
    grun_config = None
    if method.grun:
        from ..grun.config import GRUNConfig

        layers = list(method.grun_layers or range(model.config.num_hidden_layers))
        grun_config = GRUNConfig(layers=layers, rank=4, forget_loss=method.forget_loss)
    trainer = create_trainer(
        model,
        args,
        grun_config=grun_config,
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train()
    if save:
        trainer.save_model()
        tokenizer.save_pretrained(output_dir)
    return trainer.accelerator.unwrap_model(trainer.model)


def _load_pretrained(model_id: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32, trust_remote_code=False)
    return model, AutoTokenizer.from_pretrained(model_id)


def run_quickstart(
    output_dir: str | Path = "quickstart_output",
    methods: list[str] | None = None,
    finetune_epochs: int = 30,
    unlearn_steps: int = 10,
    learning_rate: float = 5e-4,
    seed: int = 0,
    progress: bool = True,
    model: str | None = None,
    retain_model: str | None = None,
    dataset: str = BUNDLED,
    forget_split: str = "forget01",
    max_new_tokens: int = 32,
    model_cards: bool = True,
    overwrite: bool = False,
) -> list[QuickstartResult]:
    """Run the quickstart; returns one row per model (target, retain, then each method) and writes
    `results.json`, `results.md`, `fq_vs_utility.png`, the target model (`target/`), the retain model it trained
    (`retain/`, with its TOFU logs in `retain/eval`) and, per method, the model, its TOFU logs and a model card.
    An `output_dir` holding an earlier quickstart's results is refused unless `overwrite` (the earlier methods'
    folders are then moved aside by the trainer)."""
    methods = methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown quickstart method(s) {unknown}; choose from {sorted(METHODS)}.")
    if forget_split not in TOFU_RETAIN_OF:
        raise ValueError(f"Unknown forget split {forget_split!r}; choose from {sorted(TOFU_RETAIN_OF)}.")
    if (Path(output_dir) / "results.json").is_file() and not overwrite:
        raise ValueError(
            f"{output_dir} holds an earlier quickstart's results. Pass --overwrite (overwrite=True) to replace them, "
            "or choose another --output-dir."
        )
    if dataset == BUNDLED and forget_split != "forget01":
        raise ValueError("The bundled TOFU subset holds forget01 only; use --dataset locuslab/TOFU for other splits.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.set_verbosity_error()
    forget = load_tofu(forget_split, dataset)
    retain = load_tofu(TOFU_RETAIN_OF[forget_split], dataset)

    started = time.perf_counter()
    if model is None:
        full = load_tofu("full", dataset)
        print(f"1/3 Training a tokenizer and two tiny Llamas on the bundled TOFU subset ({len(full)} questions)")
        tokenizer = train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], vocab_size=1024)
        target = tiny_llama(len(tokenizer), num_layers=2, hidden_size=128, seed=seed)
        train = dict(epochs=finetune_epochs, learning_rate=2e-3, seed=seed, progress=progress)
        finetune_on_qa(target, tokenizer, full["question"], full["answer"], **train)
        # The gold standard: the same recipe on every author except those to forget, for as many optimizer steps
        # (fewer questions, more epochs), so that it knows the retain authors as well as the target does.
        retain_reference = tiny_llama(len(tokenizer), num_layers=2, hidden_size=128, seed=seed)
        train["epochs"] = math.ceil(finetune_epochs * len(full) / len(retain))
        finetune_on_qa(retain_reference, tokenizer, retain["question"], retain["answer"], **train)
    else:
        print(f"1/3 Loading {model}" + (f" and the retain model {retain_model}" if retain_model else ""))
        target, tokenizer = _load_pretrained(model)
        retain_reference = _load_pretrained(retain_model)[0] if retain_model else None
    target.save_pretrained(output_dir / "target")
    tokenizer.save_pretrained(output_dir / "target")
    retain_source = retain_model
    if retain_reference is not None and retain_model is None:  # trained here: saved, for robustness attacks
        retain_reference.save_pretrained(output_dir / "retain")
        tokenizer.save_pretrained(output_dir / "retain")
        retain_source = str(output_dir / "retain")
    if model is None:  # built here: the unlearned folders (adapters, GRUN modules, cards) name this one as their base
        target.config._name_or_path = str((output_dir / "target").resolve())

    print("2/3 Evaluating the target and the retain model")
    evaluate = dict(forget_split=forget_split, data_dir=dataset, max_new_tokens=max_new_tokens, progress=progress)
    retain_logs = None
    summaries: dict[str, dict[str, Any]] = {}
    if retain_reference is not None:
        retain_logs = output_dir / "retain" / "eval"
        _evaluate(retain_reference, tokenizer, output_dir=retain_logs, retain_logs=None, **evaluate)
        # Its forget quality against itself is 1 by definition; computing it checks the logs it wrote.
        summaries["retain model"] = tofu_summary_from_logs(retain_logs, retain_logs)
    summaries["target"] = _evaluate(
        target, tokenizer, output_dir=output_dir / "target" / "eval", retain_logs=retain_logs, **evaluate
    )
    results = [QuickstartResult.from_summary(name, summary) for name, summary in summaries.items()]

    print(f"3/3 Unlearning {len(forget)} questions with: {', '.join(METHODS[m].label for m in methods)}")
    for name in methods:
        method = METHODS[name]
        run_dir = output_dir / name
        tic = time.perf_counter()
        if overwrite:
            method = replace(method, config_overrides={**method.config_overrides, "overwrite_output_dir": True})
        unlearned = unlearn_copy(
            target, tokenizer, method, forget, retain, run_dir, unlearn_steps, learning_rate, seed, progress
        )
        seconds = time.perf_counter() - tic
        summaries[method.label] = _evaluate(
            unlearned, tokenizer, output_dir=run_dir / "eval", retain_logs=retain_logs, **evaluate
        )
        record_weights_fingerprint(run_dir / "eval", run_dir)
        results.append(QuickstartResult.from_summary(method.label, summaries[method.label], seconds))
        if model_cards:
            _write_model_card(run_dir, base_model=model or str(output_dir / "target"))

    table = format_table(results)
    print()
    print(table)
    (output_dir / "results.md").write_text(table + "\n")
    rows = [{**asdict(r), "reached_forget_target": r.reached_forget_target} for r in results]
    (output_dir / "results.json").write_text(json.dumps(rows, indent=2))
    if retain_logs is not None:
        _plot(results, output_dir / "fq_vs_utility.png")
    print(
        f"\nDone in {time.perf_counter() - started:.0f} s. Models, TOFU logs, model cards, results.md and the plot "
        f"are in {output_dir.resolve()}"
    )
    if methods:
        print(robustness_command(output_dir, methods[0], retain_source, dataset, forget_split))
    return results


def robustness_command(
    output_dir: Path, method: str, retain_model: str | None, dataset: str, forget_split: str
) -> str:
    """The `hf-unlearn robustness` command that attacks one of the quickstart's unlearned models."""
    retain = f" --retain-model {retain_model}" if retain_model else ""
    return (
        f"Does the forgotten knowledge come back? hf-unlearn robustness --model {output_dir / method}{retain} "
        f"--target-model {output_dir / 'target'} --dataset {dataset} --forget-split {forget_split}"
    )


def _plot(results: list[QuickstartResult], path: Path) -> None:
    from ..evaluation import plot_fq_vs_utility

    points = {r.method: {"forget_quality": r.forget_quality, "model_utility": r.retain_utility} for r in results}
    plot_fq_vs_utility(points, path, title="Quickstart", utility_label="utility over the retain authors")


def _write_model_card(run_dir: Path, base_model: str) -> None:
    """The card again, now with the evaluation beside the weights; the forget data is what `unlearning.json`
    records (the bundled subset is not TOFU)."""
    from ..hub import build_model_card

    build_model_card(run_dir, base_model=base_model).save(run_dir / "README.md")


def format_table(results: list[QuickstartResult]) -> str:
    """Markdown table of the results. Forget metrics: lower = more forgotten; forget quality: higher = closer to
    the retain model; retain metrics and utility: higher = more kept. "forgot" says whether the row reached the
    forget target: only rows that did compare on utility."""

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"

    lines = [
        f"| model | forget prob. | forgot (prob. <= {FORGET_TARGET:g}) | forget ROUGE-L | forget quality |"
        " retain prob. | retain ROUGE-L | retain utility | unlearning time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [r.forget_rougeL_recall, r.forget_quality, r.retain_probability, r.retain_rougeL_recall]
        cells += [r.retain_utility]
        time_cell = f"{r.seconds:.0f} s" if r.seconds else "-"
        reached = "yes" if r.reached_forget_target else "no"
        lines.append(
            f"| {r.method} | {number(r.forget_probability)} | {reached} | "
            + " | ".join(number(c) for c in cells)
            + f" | {time_cell} |"
        )
    return "\n".join(lines)
