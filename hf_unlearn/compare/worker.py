"""One run of a comparison: a method at a learning rate and seed on a copy of the target model, its trajectory of
cheap evaluations, the matched point of each target (refined to the step), the full evaluation there and the attacks.

[`run_job`] runs in the calling process; `python -m hf_unlearn.compare.worker JOB.json` runs one job in a worker
process (or under `accelerate launch`) and writes its record beside the job file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..io import write_json_atomic
from .config import RETAIN_UTILITY_KEYS, CompareConfig, MethodSpec, NamedTarget

__all__ = ["JOB_FILE", "RECORD_FILE", "RunJob", "run_job", "steps_budget", "forget_size"]

JOB_FILE = "job.json"
RECORD_FILE = "record.json"
#: The number of forget questions of TOFU's forget splits (for the plan of a comparison on Hub data).
TOFU_FORGET_SIZES = {"forget01": 40, "forget05": 200, "forget10": 400}
#: (model path, dtype) -> (model, tokenizer): a worker process loads the target once for all its runs.
_LOADED: dict[tuple[str, str], tuple[Any, Any]] = {}


@dataclass
class RunJob:
    """What one run needs: the comparison's config, the method, rate and seed, and where it writes."""

    config: dict[str, Any]
    method: str
    learning_rate: float
    seed: int
    folder: str
    fingerprint: str
    retain_logs: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> RunJob:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def write(self) -> Path:
        return write_json_atomic(Path(self.folder) / JOB_FILE, asdict(self))


# ---------------------------------------------------------------------------------------------------------------------
# models and data
# ---------------------------------------------------------------------------------------------------------------------


def load_target(config: CompareConfig) -> tuple[Any, Any]:
    """The target model (cached per process; callers copy it) and its tokenizer."""
    key = (config.target_model, config.dtype)
    if key not in _LOADED:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = getattr(torch, config.dtype)
        model = AutoModelForCausalLM.from_pretrained(config.target_model, dtype=dtype, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.target_model)
        _LOADED[key] = (model.eval(), tokenizer)
    return _LOADED[key]


def training_data(config: CompareConfig) -> tuple[Any, Any]:
    """The forget and retain training sets (`datasets.Dataset`s with `question` and `answer`)."""
    data = config.data
    if data.source == "muse":
        return tuple(muse_text(config, split) for split in data.muse_splits())
    if data.source == "files":
        from ..commands.train import load_data_file

        return load_data_file(data.forget), load_data_file(data.retain)
    from ..data.tofu import TOFU_RETAIN_OF, load_tofu

    return load_tofu(data.forget_split, data.data_dir), load_tofu(TOFU_RETAIN_OF[data.forget_split], data.data_dir)


def muse_text(config: CompareConfig, split: str, muse_config: str = "raw") -> Any:
    """A MUSE text split (default the `raw` configuration's; the sequences' folds read `sust`) from the Hub's
    `muse-bench/MUSE-News` or `<data_dir>/<muse_config>/<split>.json[l]`, as a `Dataset` of texts, trained on whole
    as `hf-unlearn train` trains on raw text."""
    from datasets import Dataset

    from ..evaluation.muse import load_muse

    rows = load_muse(muse_config, split, config.data.data_dir)
    texts = [row.get("text") for row in rows]
    if not texts or any(not isinstance(t, str) for t in texts):
        raise ValueError(f"MUSE {muse_config}/{split} must be a non-empty list of rows with a 'text' field.")
    return Dataset.from_dict({"text": texts})


def forget_size(config: CompareConfig) -> int | None:
    """The number of forget questions, without loading a Hub data set (None when unknown)."""
    data = config.data
    if data.source == "muse":  # the forget texts (before long ones are cut to max_length)
        return None if data.data_dir is None else len(muse_text(config, data.muse_splits()[0]))
    if data.source == "tofu" and data.data_dir is None:
        return TOFU_FORGET_SIZES[data.forget_split]
    if data.source == "tofu":
        from ..data.tofu import BUNDLED, BUNDLED_TOFU_DIR

        folder = BUNDLED_TOFU_DIR if data.data_dir == BUNDLED else Path(data.data_dir)
        path = folder / f"{data.forget_split}.json"
    else:
        path = Path(data.forget)
    if not path.is_file() or path.suffix.lower() not in (".json", ".jsonl"):
        return None
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def steps_budget(config: CompareConfig, num_forget: int | None) -> int | None:
    """A run's step cap before its method's `steps_factor`: `max_steps`, or `max_epochs` passes over the forget set
    (`per_device_train_batch_size` x `gradient_accumulation_steps` questions a step), rounded up to whole
    evaluation intervals."""
    if config.max_steps is not None:
        return int(config.max_steps)
    if num_forget is None:
        return None
    per_step = int(config.training.get("per_device_train_batch_size", 8)) * int(
        config.training.get("gradient_accumulation_steps", 1)
    )
    steps = math.ceil(config.max_epochs * math.ceil(num_forget / per_step))
    return -(-steps // config.eval_every) * config.eval_every


def evaluator_kwargs(config: CompareConfig, splits: Sequence[str] | None = None) -> dict[str, Any]:
    """The `TOFUEvaluator` arguments of the comparison's data (the cheap evaluations choose their own splits)."""
    data = config.data
    kwargs: dict[str, Any] = {
        "max_new_tokens": data.max_new_tokens,
        "max_questions": data.max_questions,
        "batch_size": data.eval_batch_size,
    }
    if data.source == "files":
        from ..commands.train import load_data_file

        rows = {"forget": data.forget_eval or data.forget, "retain": data.retain_eval or data.retain}
        kwargs["datasets"] = {split: load_data_file(path) for split, path in rows.items()}
        kwargs["forget_split"] = "forget10"  # a label only: the rows come from the files
        kwargs["data_dir"] = "bundled"
    else:
        kwargs["forget_split"] = data.forget_split
        kwargs["data_dir"] = data.data_dir
    if splits is not None:
        kwargs["splits"] = list(splits)
    return kwargs


def muse_kwargs(config: CompareConfig) -> dict[str, Any]:
    """The `MUSEEvaluator` arguments of a MUSE comparison's data (the cheap evaluations choose their own metrics):
    `max_questions` is `max_items`, `max_new_tokens` caps MUSE's generation lengths (KnowMem 32, VerbMem 128)."""
    data = config.data
    return {
        "data_dir": data.data_dir,
        "max_items": data.max_questions,
        "batch_size": data.eval_batch_size,
        "knowmem_max_new_tokens": min(32, data.max_new_tokens),
        "verbmem_max_new_tokens": min(128, data.max_new_tokens),
    }


def muse_metrics(config: CompareConfig) -> list[str]:
    """The full MUSE evaluation's metrics: KnowMem, VerbMem, and PrivLeak on the Hub or where the folder has it."""
    data_dir = config.data.data_dir
    with_privleak = data_dir is None or (Path(data_dir) / "privleak").is_dir()
    return ["knowmem", "verbmem"] + (["privleak"] if with_privleak else [])


def add_utilities(summary: dict[str, Any]) -> dict[str, Any]:
    """`retain_utility` (harmonic mean of the retain authors' probability, ROUGE-L recall and truth ratio) beside
    TOFU's `model_utility`."""
    from ..evaluation.metrics import model_utility

    if all(summary.get(k) is not None for k in RETAIN_UTILITY_KEYS):
        summary["retain_utility"] = model_utility([summary[k] for k in RETAIN_UTILITY_KEYS])
    return summary


def full_evaluation(model, tokenizer, config: CompareConfig, output_dir: Path | None, retain_logs) -> dict:
    """The full TOFU evaluation (generation included) of `model` on the comparison's data, with the utilities; on
    MUSE data, `MUSEEvaluator`'s (PrivLeak relative to the retain model's evaluation in `retain_logs` when there is
    one, else to MUSE's published retrain AUC on MUSE-News from the Hub)."""
    if config.data.source == "muse":
        from ..constants import EVAL_SUMMARY_FILE
        from ..evaluation.muse import MUSEEvaluator

        metrics = muse_metrics(config)
        retain_auc = None
        if "privleak" in metrics:
            if retain_logs is not None and (Path(retain_logs) / EVAL_SUMMARY_FILE).is_file():
                retain_auc = retain_logs
            elif config.data.data_dir is None:
                retain_auc = "news"
        evaluator = MUSEEvaluator(model, tokenizer, metrics=metrics, progress=False, **muse_kwargs(config))
        return dict(evaluator.evaluate(output_dir=output_dir, retain_auc=retain_auc))
    from ..evaluation.tofu import TOFUEvaluator

    evaluator = TOFUEvaluator(model, tokenizer, progress=False, **evaluator_kwargs(config, config.eval_splits()))
    summary = evaluator.evaluate(output_dir=output_dir, retain_logs=retain_logs)
    return add_utilities(dict(summary))


# ---------------------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------------------


def method_config(spec: MethodSpec, num_layers: int) -> Any:
    """The method's config object for `create_trainer` (None: full weights)."""
    if spec.kind == "full":
        return None
    kwargs = dict(spec.method_kwargs)
    if spec.kind == "peft":
        from peft import LoraConfig

        kwargs.setdefault("task_type", "CAUSAL_LM")
        return LoraConfig(**kwargs)
    if spec.kind == "grun":
        from ..grun.config import GRUNConfig

        layers = kwargs.pop("layers", "paper")
        if layers == "paper":  # layers 20, 25 and 31 of Llama-3.1-8B's 32, at the same relative depths
            n = num_layers
            layers = sorted({min(n - 1, round(n * 20 / 32)), min(n - 1, round(n * 25 / 32)), n - 1})
        kwargs.setdefault("forget_loss", spec.forget_loss)
        return GRUNConfig(layers=list(layers), **kwargs)
    from ..methods.registry import get_method, resolve_object

    method = get_method(spec.kind)
    if method.config_class is None:
        raise ValueError(f"Method kind {spec.kind!r} declares no config class; compare cannot build its config.")
    return resolve_object(method.config_class)(**kwargs)


def unlearning_args(config: CompareConfig, spec: MethodSpec, job: RunJob, output_dir: Path, max_steps: int):
    from ..config import UnlearningConfig

    defaults: dict[str, Any] = {
        "per_device_train_batch_size": 8,
        "lr_scheduler_type": "constant",
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
    }
    values = {**defaults, **config.training, **spec.config}
    return UnlearningConfig(
        output_dir=str(output_dir),
        forget_loss=spec.forget_loss,
        forget_loss_kwargs=dict(spec.forget_loss_kwargs),
        retain_loss=spec.retain_loss,
        retain_loss_kwargs=dict(spec.retain_loss_kwargs) or None,
        rectification=spec.rectification,
        learning_rate=job.learning_rate,
        seed=job.seed,
        max_steps=max_steps,
        **values,
    )


def _train(config, spec, job, output_dir: Path, max_steps: int, targets: Sequence[NamedTarget], **callback_kwargs):
    """Unlearn a copy of the target, evaluated cheaply along the way; returns the callback (trajectory, met) and
    the training time."""
    from ..evaluation.callback import StopAtTargetCallback
    from ..trainer import create_trainer

    target, tokenizer = load_target(config)
    forget, retain = training_data(config)
    model = copy.deepcopy(target).train()
    if config.data.source == "muse":
        evaluation: dict[str, Any] = {"muse_kwargs": muse_kwargs(config)}
    else:
        evaluation = {"evaluator_kwargs": evaluator_kwargs(config), "retain_logs": job.retain_logs}
    callback = StopAtTargetCallback(
        [t.target for t in targets],
        every_n_steps=config.eval_every * spec.steps_factor,
        output_dir=output_dir,
        **evaluation,
        **callback_kwargs,
    )
    args = unlearning_args(config, spec, job, output_dir, max_steps)
    trainer = create_trainer(
        model,
        args,
        method_config(spec, target.config.num_hidden_layers),
        forget_dataset=forget,
        retain_dataset=retain,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    tic = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its metrics when its bar is off
        trainer.train()
    return callback, time.perf_counter() - tic, trainer


def _brackets(trajectory: Sequence[Mapping[str, Any]], met: Mapping[str, int]) -> dict[str, range]:
    """Target name -> the steps after the evaluation before the one that met it, up to that one (empty when the
    two evaluations are adjacent steps: nothing to refine)."""
    steps = [int(p["step"]) for p in trajectory]
    out = {}
    for name, step in met.items():
        before = [s for s in steps if s < step]
        if before and step - max(before) > 1:
            out[name] = range(max(before) + 1, step + 1)
    return out


def clear_job_folder(folder: str | Path) -> None:
    """Remove what an interrupted or outdated run of a job left in its folder (its job file stays)."""
    for stale in ("run", "refine", RECORD_FILE):
        path = Path(folder) / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_job(job: RunJob) -> dict[str, Any]:
    """Run one job (see the module docstring); returns its record (also written to `<folder>/record.json`)."""
    import torch

    config = CompareConfig.from_dict(job.config)
    spec = config.methods[job.method]
    folder = Path(job.folder)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # under accelerate the launcher cleared it, before any rank began
        clear_job_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    budget = steps_budget(config, forget_size(config))
    if budget is None:
        budget = steps_budget(config, len(training_data(config)[0]))
    max_steps = budget * spec.steps_factor
    targets = config.targets_of(job.method)
    name_of = {t.target.name: t.name for t in targets}  # checkpoint folder name -> the config's target name

    callback, train_seconds, trainer = _train(
        config, spec, job, folder / "run", max_steps, targets, evaluate_at_start=True
    )
    trajectory = [dict(p) for p in callback.trajectory]
    met = {name_of[n]: step for n, step in callback.met.items()}
    checkpoints = {name: folder / "run" / config.targets[name].target.name for name in met}
    eval_seconds = callback.seconds
    refined: dict[str, dict[str, Any]] = {}
    brackets = _brackets(trajectory, met) if config.refine == "replay" else {}
    if brackets:
        # Replay the same run (seed, data order, schedule) and evaluate every step of each bracket.
        steps = sorted({s for r in brackets.values() for s in r})
        replay, replay_seconds, _ = _train(
            config,
            spec,
            job,
            folder / "refine",
            max_steps,
            [config.targets[n] for n in brackets],
            eval_steps=steps,
        )
        train_seconds += replay_seconds
        eval_seconds += replay.seconds
        by_step = {int(p["step"]): p for p in trajectory}
        for point in replay.trajectory:
            by_step.setdefault(int(point["step"]), {**point, "refined": True})
        for checkpoint_name, step in replay.met.items():
            name = name_of[checkpoint_name]
            refined[name] = {"step": step, "evaluated_from": brackets[name].start, "to": met[name]}
            met[name] = step
            checkpoints[name] = folder / "refine" / config.targets[name].target.name
        for name in brackets:
            refined.setdefault(name, {"step": None, "note": "the replay did not meet the target (not deterministic)"})
        trajectory = [by_step[s] for s in sorted(by_step)]

    if not trainer.is_world_process_zero():
        return {}  # under accelerate every rank trained (and replayed); the main process evaluates and records
    matched: dict[str, Any] = {t.name: None for t in targets}
    full_seconds = attack_seconds = 0.0
    for name, step in met.items():
        tic = time.perf_counter()
        model, tokenizer = _load_checkpoint(config, checkpoints[name])
        summary = full_evaluation(model, tokenizer, config, checkpoints[name] / "eval", job.retain_logs)
        full_seconds += time.perf_counter() - tic
        metric = config.targets[name].target.metric
        point = next(p for p in trajectory if int(p["step"]) == step)
        entry = {
            "step": step,
            "point": {k: v for k, v in point.items() if k not in ("met", "refined")},
            "forget_metric": summary.get(metric, point.get(metric)),
            "utility": summary.get(config.utility),
            "summary": summary,
            "refined": refined.get(name),
        }
        attacks = config.attacks
        if attacks is not None and attacks.target == name and job.seed in (attacks.seeds or config.seeds[:1]):
            tic = time.perf_counter()
            entry["attacks"] = run_attacks(model, tokenizer, config, job.seed)
            attack_seconds += time.perf_counter() - tic
        matched[name] = entry
        del model
    if not config.keep_checkpoints:
        _drop_weights(folder)  # the matched checkpoints' evaluations and target.json stay
    record = {
        "method": job.method,
        "label": spec.display_label(),
        "learning_rate": job.learning_rate,
        "seed": job.seed,
        "fingerprint": job.fingerprint,
        "max_steps": max_steps,
        "steps": int(trajectory[-1]["step"]) if trajectory else 0,
        "trajectory": trajectory,
        "matched": matched,
        "seconds": {
            "total": time.perf_counter() - started,
            "training": train_seconds - eval_seconds,
            "trajectory_evaluation": eval_seconds,
            "full_evaluation": full_seconds,
            "attacks": attack_seconds,
        },
        "threads": torch.get_num_threads(),
    }
    write_json_atomic(folder / RECORD_FILE, record)
    return record


def _load_checkpoint(config: CompareConfig, folder: Path):
    import torch

    from ..hub.loading import load_unlearned

    model, tokenizer = load_unlearned(folder, base_model=config.target_model, dtype=getattr(torch, config.dtype))
    if torch.cuda.is_available():
        model.to("cuda")
    return model.eval(), tokenizer


def _drop_weights(folder: Path) -> None:
    """Delete a checkpoint's weights (keep its evaluation logs, target.json and card)."""
    if not folder.is_dir():
        return
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            path.unlink()
    for path in folder.rglob("checkpoint-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def run_attacks(model, tokenizer, config: CompareConfig, seed: int = 0) -> dict[str, Any]:
    """The configured attacks on a matched model: relearning the even forget-evaluation questions (measured on the
    odd ones), quantization (measured on all of them) and the presets (on all of them, seeded with the run's
    seed)."""
    from datasets import Dataset

    from ..evaluation.robustness import quantization_attack, relearning_attack

    evaluator_rows = {} if config.data.source == "muse" else evaluator_kwargs(config, ["forget"])
    if config.data.source == "muse":  # MUSE's KnowMem forget questions
        from ..evaluation.muse import load_muse

        knowmem = load_muse("knowmem", "forget_qa", config.data.data_dir)
        rows = {"question": [r["question"] for r in knowmem], "answer": [str(r["answer"]) for r in knowmem]}
    elif "datasets" in evaluator_rows:
        rows = evaluator_rows["datasets"]["forget"]
    else:
        from ..data.tofu import load_tofu

        rows = load_tofu(f"{config.data.forget_split}_perturbed", config.data.data_dir)
    questions, answers = list(rows["question"]), list(rows["answer"])

    def qa(index: slice) -> Dataset:
        return Dataset.from_dict({"question": questions[index], "answer": answers[index]})

    attacks = config.attacks
    out: dict[str, Any] = {}
    if attacks.relearning is not None:
        out["relearning"] = relearning_attack(model, tokenizer, qa(slice(0, None, 2)), qa(slice(1, None, 2)),
                                              **attacks.relearning).to_dict()  # fmt: skip
    if attacks.quantization is not None:
        out["quantization"] = quantization_attack(model, tokenizer, qa(slice(None)), **attacks.quantization).to_dict()
    if attacks.presets:
        from ..evaluation.robustness.presets import run_preset

        for name in attacks.presets:  # as the papers run them, on every forget question
            overrides = (attacks.preset_overrides or {}).get(name)
            out[name] = run_preset(name, model, tokenizer, qa(slice(None)), overrides=overrides, seed=seed)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m hf_unlearn.compare.worker JOB.json [THREADS]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m hf_unlearn.compare.worker JOB.json [THREADS]", file=sys.stderr)
        return 2
    import torch
    from transformers.utils import logging as hf_logging

    if len(argv) > 1:
        torch.set_num_threads(int(argv[1]))
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_job(RunJob.read(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
