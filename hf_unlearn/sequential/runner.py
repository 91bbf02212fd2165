"""Run a sequence of deletion requests: the target's and the retain model's evaluation, then, per method, every
request unlearned from the model the previous one left, each followed by the evaluation of
[`hf_unlearn.sequential.evaluate`]; `results.json`, `report.md` and a plot in the output folder.

Layout of the output folder:

    references/                  the target's and the retain model's evaluations (references.json, logs)
    methods/<method>/seed_<s>/request_<n>/
        record.json              request n's numbers (written last: a request without it is run again)
        run/                     the cheap evaluations of its training (trajectory.jsonl)
        model/                   the model after request n (full weights, the merged model, or every GRUN module)
        adapter/                 LoRA: the request's adapter (what it stores)
        eval/                    the logs of the evaluation after request n

Every method runs its sequence once per seed (`seed_<s>`); the claims are judged over the seeds after the run
([`hf_unlearn.sequential.verdicts.judge`]). A killed sequence resumes, per method and seed: rerunning it reuses
every request with a record of the same fingerprint and starts at the first request without one, from the model the
request before it saved. The full or merged models of earlier requests are deleted once the next request is
recorded, unless `keep_models`.

On MUSE data the requests are MUSE-News's sustainability folds and the evaluation after each is MUSE's with every
fold's NLL ([`hf_unlearn.sequential.evaluate.evaluate_muse_model`]); the training path is the same for every kind.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..compare.worker import RECORD_FILE, RunJob
from ..io import write_json_atomic
from .config import SequentialConfig
from .evaluate import (
    as_prompt_completion,
    evaluate_model,
    evaluate_muse_model,
    gate_matrix,
    muse_sequence_metrics,
    renumber,
    sequence_metrics,
)
from .plan import Request, load_requests, request_steps
from .verdicts import check_claims, judge

__all__ = ["REPORT_FILE", "RESULTS_FILE", "rejudge", "run_method", "run_sequence", "run_sequences"]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
#: What each kind stores per request (the cost column of the report).
STORED = {"full": "the whole model", "peft": "the LoRA adapter", "grun": "the request's gated modules"}


def _request_folder(output_dir: Path, method: str, number: int, seed: int = 0) -> Path:
    return Path(output_dir) / "methods" / method / f"seed_{seed}" / f"request_{number}"


def _empty_cache() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001  (a cache we cannot empty is no error)
        pass


# ---------------------------------------------------------------------------------------------------------------------
# the references: the target (0 requests) and the retain model
# ---------------------------------------------------------------------------------------------------------------------


def references(
    config: SequentialConfig, requests: Sequence[Request], output_dir: Path
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The target's evaluation (the sequence before its first request) and the retain model's, reused when done
    before with the same settings; returns them and the retain model's forget log (question key -> values)."""
    import torch

    from ..compare.worker import load_target
    from ..evaluation.logs import read_tofu_logs

    cc = config.compare_config()
    data = config.stable_dict()
    keys = ["target_model", "retain_model", "retain_logs", "tokenizer", "data", "requests", "utility", "dtype"]
    keys += ["privleak"]  # MUSE only: absent from TOFU's (their fingerprints stay as they were)
    fingerprint = json.dumps({k: data[k] for k in keys if k in data}, sort_keys=True, default=str)
    folder = Path(output_dir) / "references"
    saved = folder / "references.json"
    retain_dir = Path(config.retain_logs) if config.retain_logs else folder / "retain" / "eval"
    if saved.is_file():
        previous = json.loads(saved.read_text(encoding="utf-8"))
        if previous.get("fingerprint") == fingerprint:
            retain_log = read_tofu_logs(retain_dir)["forget"] if previous.get("has_retain") else None
            return previous["references"], retain_log
    target, tokenizer = load_target(cc)
    if config.data.benchmark == "muse":
        out = _muse_references(config, requests, folder, target, tokenizer)
        write_json_atomic(saved, {"fingerprint": fingerprint, "references": out, "has_retain": False})
        return out, None
    out: dict[str, Any] = {}
    retain_log = None
    if config.retain_model:
        print(f"  evaluating the retain model {config.retain_model}")
        retain = _load_retain(config)
        summary, retain_log, _ = evaluate_model(retain.eval(), tokenizer, cc, requests, retain_dir)
        del retain
        _empty_cache()
    elif config.retain_logs:
        from ..compare.worker import add_utilities
        from ..evaluation.logs import summarize_tofu_logs

        logs = read_tofu_logs(retain_dir)
        if "forget" not in logs:
            raise ValueError(f"retain_logs {retain_dir} hold no forget log (eval_log_forget.json).")
        retain_log = logs["forget"]
        utility_logs = {s: log for s, log in logs.items() if s != "forget"}
        summary = add_utilities(summarize_tofu_logs(utility_logs)) if utility_logs else {}
    if retain_log is not None:
        out["retain model"] = {"utility": summary, "forget": sequence_metrics(retain_log, retain_log, requests, 0)}
    print(f"  evaluating the target model {config.target_model}")
    model = target
    if torch.cuda.is_available():
        model = copy.deepcopy(target).to("cuda")
    summary, log, _ = evaluate_model(model.eval(), tokenizer, cc, requests, folder / "target" / "eval")
    out["target"] = {"utility": summary, "forget": sequence_metrics(log, retain_log, requests, 0)}
    write_json_atomic(saved, {"fingerprint": fingerprint, "references": out, "has_retain": retain_log is not None})
    return out, retain_log


def _load_retain(config: SequentialConfig):
    """The retain model, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    retain = AutoModelForCausalLM.from_pretrained(config.retain_model, dtype=getattr(torch, config.dtype))
    return retain.to("cuda") if torch.cuda.is_available() else retain


def muse_retain_auc(config: SequentialConfig, output_dir: Path) -> Any:
    """PrivLeak's reference (None without `privleak`): the retain model's evaluation when there is one, else on
    the Hub MUSE's published retrain AUC of MUSE-News; a local folder without a retain model gives the AUC only."""
    if not config.privleak:
        return None
    from ..constants import EVAL_SUMMARY_FILE

    retain = Path(output_dir) / "references" / "retain" / "eval"
    if config.retain_model and (retain / EVAL_SUMMARY_FILE).is_file():
        return retain
    return "news" if config.data.data_dir is None else None


def _muse_references(config: SequentialConfig, requests: Sequence[Request], folder: Path, target, tokenizer) -> dict:
    """MUSE: the retain model's evaluation (when given) and the target's, each with every fold's NLL."""
    import torch

    out: dict[str, Any] = {}
    if config.retain_model:
        print(f"  evaluating the retain model {config.retain_model}")
        retain = _load_retain(config)
        summary, folds, _ = evaluate_muse_model(retain.eval(), tokenizer, config, requests, folder / "retain" / "eval")
        out["retain model"] = {"utility": summary, "forget": muse_sequence_metrics(folds, requests, 0)}
        del retain
        _empty_cache()
    print(f"  evaluating the target model {config.target_model}")
    model = copy.deepcopy(target).to("cuda") if torch.cuda.is_available() else target
    auc = muse_retain_auc(config, folder.parent)
    summary, folds, _ = evaluate_muse_model(model.eval(), tokenizer, config, requests, folder / "target" / "eval", auc)
    out["target"] = {"utility": summary, "forget": muse_sequence_metrics(folds, requests, 0)}
    return out


def evaluate_after(
    config: SequentialConfig,
    model,
    tokenizer,
    requests: Sequence[Request],
    done: int,
    retain_log: dict[str, Any] | None,
    folder: Path,
    output_dir: Path,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[list[int]]]]:
    """The evaluation after request `done` into `folder`: the summary (utility; MUSE: MUSE's numbers), the forget
    metrics of every request (TOFU: [`sequence_metrics`]; MUSE: [`muse_sequence_metrics`]) and GRUN's gate prompts."""
    if config.data.benchmark == "muse":
        auc = muse_retain_auc(config, output_dir)
        summary, folds, prompts = evaluate_muse_model(model, tokenizer, config, requests, folder, auc)
        return summary, muse_sequence_metrics(folds, requests, done), prompts
    summary, log, prompts = evaluate_model(model, tokenizer, config.compare_config(), requests, folder)
    return summary, sequence_metrics(log, retain_log, requests, done), prompts


# ---------------------------------------------------------------------------------------------------------------------
# one request
# ---------------------------------------------------------------------------------------------------------------------


def _save_model(model, kind: str, folder: Path) -> None:
    """The model after a request, where the next request (or a resumed sequence) loads it from."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if kind == "grun":
        from ..grun.io import save_grun_model
        from ..grun.model import GRUNModel

        if isinstance(model, GRUNModel):
            save_grun_model(model, tmp)
        else:  # no GRUN request yet (the first one stopped at its start): the base model
            tmp.mkdir(parents=True)
    else:
        model.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _load_model(config: SequentialConfig, kind: str, folder: Path):
    """The model a request saved ([`_save_model`]), on the GPU when there is one, ready to train on."""
    import torch

    from ..compare.worker import load_target

    target, _ = load_target(config.compare_config())
    if kind == "grun":
        from ..constants import GRUN_CONFIG_FILE
        from ..grun.io import load_grun_model

        model = copy.deepcopy(target)
        if (folder / GRUN_CONFIG_FILE).is_file():
            model = load_grun_model(model, folder)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, config.dtype))
    if torch.cuda.is_available():
        model.to("cuda")
    return model


def _before_training(config: SequentialConfig, kind: str, trained, checkpoint: Path):
    """The model a request started from, when it stopped at its start: the checkpoint saved at step 0 (full
    weights), the model without its untrained adapter (LoRA), or the earlier GRUN requests without the new one."""
    import torch

    if kind == "peft":
        return trained.unload()
    if kind == "grun":
        from ..grun.model import GRUNModel

        earlier = trained.requests[:-1]
        return GRUNModel(trained.model, earlier) if earlier else trained.model
    from transformers import AutoModelForCausalLM

    device = next(trained.parameters()).device
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype)).to(device)


def _tensor_bytes(tensors) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _needs_reference(config: SequentialConfig, method: str) -> bool:
    from ..losses.registry import get_loss

    spec = config.methods[method]
    losses = [get_loss(spec.forget_loss, "forget")]
    if spec.retain_loss != "none":
        losses.append(get_loss(spec.retain_loss, "retain"))
    return any(loss.needs_ref_model for loss in losses)


def run_request(
    config: SequentialConfig,
    method: str,
    request: Request,
    model,
    retain_rows,
    retain_log: dict[str, Any] | None,
    folder: Path,
) -> tuple[Any, dict[str, Any]]:
    """Unlearn `request` from `model` (the previous request's) until its targets or budget; returns the model the
    next request starts from and the training part of the request's record."""
    from ..compare.worker import (
        _drop_weights,
        evaluator_kwargs,
        load_target,
        method_config,
        muse_kwargs,
        unlearning_args,
    )
    from ..evaluation.callback import StopAtTargetCallback
    from ..evaluation.logs import write_tofu_logs
    from ..trainer import create_trainer

    cc = config.compare_config()
    spec = config.methods[method]
    target, tokenizer = load_target(cc)
    targets = config.target_objects()
    retain_dir = None
    if retain_log is not None and any(t.metric == "forget_quality" for t in targets):
        # the retain model's statistics on this request's questions, numbered as its evaluator numbers them
        retain_dir = folder / "retain_logs"
        write_tofu_logs({"forget": renumber(retain_log, request.keys)}, retain_dir)
    if cc.data.benchmark == "muse":  # MUSE's standard forget set, as a MUSE comparison measures its targets
        evaluation: dict[str, Any] = {"muse_kwargs": muse_kwargs(cc)}
    else:
        eval_kwargs = evaluator_kwargs(cc)
        eval_kwargs["datasets"] = {**eval_kwargs.get("datasets", {}), "forget": request.evaluation}
        evaluation = {"evaluator_kwargs": eval_kwargs, "retain_logs": retain_dir}
    callback = StopAtTargetCallback(
        targets,
        every_n_steps=config.eval_every * spec.steps_factor,
        output_dir=folder / "run",
        evaluate_at_start=True,
        stop=config.stop_at_targets,
        **evaluation,
    )
    max_steps = request_steps(config, method, request)
    job = RunJob({}, method, spec.learning_rates[0], config.seeds[0], str(folder), config.fingerprint(method))
    args = unlearning_args(cc, spec, job, folder / "run", max_steps)
    extra = {}
    if config.reference == "original" and spec.kind != "grun" and request.number > 1:
        if _needs_reference(config, method):
            extra["ref_model"] = copy.deepcopy(target)
    forget_rows = request.forget
    if cc.data.benchmark == "muse" and spec.kind == "grun":  # GRUN needs prompts: MUSE text as prompt/completion
        forget_rows, retain_rows = as_prompt_completion(forget_rows), as_prompt_completion(retain_rows)
    trainer = create_trainer(
        model,
        args,
        method_config(spec, target.config.num_hidden_layers),
        forget_dataset=forget_rows,
        retain_dataset=retain_rows,
        processing_class=tokenizer,
        callbacks=[callback],
        **extra,
    )
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    tic = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its metrics when its bar is off
        trainer.train()
    seconds = time.perf_counter() - tic
    trained = trainer.accelerator.unwrap_model(trainer.model)
    steps = int(trainer.state.global_step)
    if (
        config.stop_at_targets
        and callback.met
        and all(step == 0 for step in callback.met.values())
        and len(callback.met) == len(targets)
    ):
        # Earlier requests already forgot this one: the Trainer still takes a step after a stop at its start, so the
        # model before it is restored (the request trains 0 steps and stores nothing).
        trained, steps = _before_training(config, spec.kind, trained, folder / "run" / targets[0].name), 0
        stored = 0
    elif spec.kind == "peft":
        trained.save_pretrained(folder / "adapter")
        stored = sum(f.stat().st_size for f in (folder / "adapter").glob("*.safetensors"))
        trained = trained.merge_and_unload()  # the next request's adapter trains on the merged weights
    elif spec.kind == "grun":
        stored = _tensor_bytes(t for m in trained.trainable_modules() for t in m.state_dict().values())
    else:
        stored = _tensor_bytes(trained.parameters())
    _save_model(trained, spec.kind, folder / "model")
    _drop_weights(folder / "run")  # the target's checkpoint is the model just saved
    reference = None
    if _needs_reference(config, method):
        reference = "the base model (GRUN's edits off)" if spec.kind == "grun" else f"the {config.reference} model"
        if request.number == 1:
            reference = "the original model"
    training = {
        "steps": steps,
        "max_steps": max_steps,
        "met": {str(t): callback.met[t.name] for t in targets if t.name in callback.met},
        "trajectory": [dict(p) for p in callback.trajectory],
        "trainable_parameters": int(sum(p.numel() for p in trainable)),
        "stored_bytes": int(stored),
        "stored": STORED.get(spec.kind, "the model"),
        "reference": reference,
        "seconds": {"training": seconds - callback.seconds, "target_evaluations": callback.seconds},
    }
    del trainer, callback
    _empty_cache()
    return trained.train(), training


def run_method(
    config: SequentialConfig,
    method: str,
    requests: Sequence[Request],
    retain_rows,
    retain_log: dict[str, Any] | None,
    output_dir: Path,
) -> list[dict[str, Any]]:
    """Every request of `method`'s sequence on `config`'s first seed (run once per seed: `config.for_seed`),
    resumed at the first request without a record of the same fingerprint; returns the requests' records."""
    from ..compare.worker import load_target

    seed = config.seeds[0]
    cc = config.compare_config()
    spec = config.methods[method]
    fingerprint = config.fingerprint(method)
    records: list[dict[str, Any]] = []
    for request in requests:
        record_file = _request_folder(output_dir, method, request.number, seed) / RECORD_FILE
        if not record_file.is_file():
            break
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record.get("fingerprint") != fingerprint:
            break
        records.append(record)
    while (
        records
        and len(records) < len(requests)
        and not (_request_folder(output_dir, method, len(records), seed) / "model").is_dir()
    ):
        records.pop()  # the model it left is gone (a later request's record was removed): run it again
    for request in requests[len(records) :]:  # what an interrupted or outdated run left
        shutil.rmtree(_request_folder(output_dir, method, request.number, seed), ignore_errors=True)
    if len(records) == len(requests):
        print(f"  {method} seed {seed}: all {len(requests)} requests reused")
        return records
    target, tokenizer = load_target(cc)
    if records:
        print(f"  {method} seed {seed}: resuming at request {len(records) + 1} ({len(records)} reused)")
        model = _load_model(config, spec.kind, _request_folder(output_dir, method, len(records), seed) / "model")
    else:
        model = copy.deepcopy(target)
    model.train()
    for request in requests[len(records) :]:
        folder = _request_folder(output_dir, method, request.number, seed)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        model, training = run_request(config, method, request, model, retain_rows, retain_log, folder)
        tic = time.perf_counter()
        summary, forget, prompts = evaluate_after(
            config, model, tokenizer, requests, request.number, retain_log, folder / "eval", output_dir
        )
        gates = None
        if spec.kind == "grun" and config.gate_matrix and hasattr(model, "gate_values"):
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            gates = gate_matrix(model, prompts, pad)
        training["seconds"]["evaluation"] = time.perf_counter() - tic
        training["seconds"]["total"] = time.perf_counter() - started
        record = {
            "method": method,
            "label": spec.display_label(),
            "kind": spec.kind,
            "request": request.number,
            "seed": seed,
            "questions": request.size,
            "fingerprint": fingerprint,
            **training,
            "utility": summary,
            "forget": forget,
            "gates": gates,
        }
        write_json_atomic(folder / RECORD_FILE, record)
        records.append(record)
        previous = _request_folder(output_dir, method, request.number - 1, seed) / "model"
        if request.number > 1 and spec.kind != "grun" and not config.keep_models and previous.is_dir():
            shutil.rmtree(previous)
        met = ", ".join(f"{t} at step {s}" for t, s in training["met"].items()) or "no target"
        current = record["forget"]["per_request"][request.number - 1]
        if config.data.benchmark == "muse":
            measured = f"NLL of {request.split} {_fmt(current['nll'])}"
        else:
            cumulative = record["forget"]["cumulative"]
            measured = (
                f"forget probability {current['forget_probability']:.3g}, cumulative forget quality "
                f"{_fmt(cumulative.get('forget_quality'))}"
            )
        print(
            f"  {method} seed {seed} request {request.number}/{len(requests)}: {training['steps']} steps ({met}); "
            f"{measured}, {config.utility} {_fmt(summary.get(config.utility))}"
        )
    del model
    _empty_cache()
    return records


def _sequence_log(output_dir: Path, method: str, seed: int) -> Path:
    return output_dir / "methods" / method / f"seed_{seed}" / "sequence.log"


def _start_worker(threads: int, gpu_slots: Any) -> None:
    """A worker process: `threads` torch threads; pinned to one GPU when `gpu_slots` hands it one (before CUDA
    starts in this process)."""
    import os

    import torch

    if gpu_slots is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_slots.get()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(threads)


def _run_method_in_worker(config, method, seed, requests, retain_rows, retain_log, output_dir) -> list[dict]:
    """`run_method` on one seed with its output in that sequence's `sequence.log`."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    log = _sequence_log(output_dir, method, seed)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        return run_method(config.for_seed(seed), method, requests, retain_rows, retain_log, output_dir)


def run_sequences(
    config: SequentialConfig,
    requests: Sequence[Request],
    retain_rows,
    retain_log: dict[str, Any] | None,
    output_dir: Path,
    *,
    progress: bool = True,
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Every (method, seed) sequence: one after another in this process (`workers: 1`), or `workers` at a time in
    worker processes (each sequence's output in its `sequence.log`). A sequence that fails does not stop the
    others; the error names the failed sequences and their logs once every other one has finished and saved its
    requests (rerunning resumes them)."""
    jobs = [(method, seed) for method in config.methods for seed in config.seeds]
    if config.workers == 1 or len(jobs) == 1:
        return {
            (method, seed): run_method(config.for_seed(seed), method, requests, retain_rows, retain_log, output_dir)
            for method, seed in jobs
        }
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch
    from tqdm.auto import tqdm

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads or CUDA state
    workers = min(config.workers, len(jobs))
    gpu_slots = None
    if torch.cuda.is_available():
        gpus = [str(i) for i in range(torch.cuda.device_count())]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            gpus = [g.strip() for g in visible.split(",") if g.strip()]
        workers = min(workers, len(gpus))
        gpu_slots = context.Queue()
        for gpu in gpus[:workers]:
            gpu_slots.put(gpu)
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    done: dict[tuple[str, int], list[dict[str, Any]]] = {}
    failures = []
    bar = tqdm(total=len(jobs), desc="sequences", disable=not progress)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(threads, gpu_slots))
    with pool:
        futures = {
            pool.submit(_run_method_in_worker, config, method, seed, requests, retain_rows, retain_log, output_dir): (
                method,
                seed,
            )
            for method, seed in jobs
        }
        for future in as_completed(futures):
            method, seed = futures[future]
            log = _sequence_log(output_dir, method, seed)
            try:
                done[method, seed] = future.result()
            except Exception as err:  # noqa: BLE001 - reported with the others after every sequence ends
                failures.append(f"{method} seed {seed} ({type(err).__name__}: {err}; see {log})")
            else:
                last = done[method, seed][-1] if done[method, seed] else {}
                met = ", ".join(f"{t} at step {s}" for t, s in last.get("met", {}).items()) or "no target"
                bar.write(f"  {method} seed {seed}: {len(done[method, seed])} requests (last: {met}); log {log}")
            bar.update()
    bar.close()
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(jobs)} sequences failed: " + "; ".join(failures) + ". The requests they "
            "finished are saved: rerun the same command to resume them."
        )
    return done


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _judge(config: SequentialConfig, methods: dict[str, Any], num_requests: int) -> list[dict[str, Any]]:
    return judge(
        config.claims,
        methods,
        targets=list(config.targets.values()),
        utility=config.utility,
        num_requests=num_requests,
        min_effect=config.min_effect,
        labels=config.labels,
    )


def rejudge(output_dir: str | Path) -> dict[str, Any]:
    """Judge a finished sequence's claims again from its `results.json` with this version's rules; rewrites it."""
    from .report import load_results

    results = load_results(output_dir)
    config = SequentialConfig.from_dict(results["config"])
    results["verdicts"] = _judge(config, results["methods"], len(results["requests"]))
    write_json_atomic(Path(output_dir) / RESULTS_FILE, results)
    return results


def run_sequence(
    config: SequentialConfig, output_dir: str | Path, *, progress: bool = True, report: bool = True
) -> dict[str, Any]:
    """Run every method's sequence of requests (see [`SequentialConfig`]) into `output_dir`; returns the results
    (also written to `results.json`, with `report.md` and `sequential.png` unless `report=False`)."""
    from transformers.utils import logging as hf_logging

    from ..compare.runner import machine_info

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.set_verbosity_error()
    write_json_atomic(output_dir / "config.json", config.to_dict())
    started = time.perf_counter()
    requests, retain_rows = load_requests(config)
    check_claims(config.claims, len(requests))
    print(f"1/3 The target and the retain model ({len(requests)} requests)")
    refs, retain_log = references(config, requests, output_dir)
    print(f"2/3 The sequences (seeds {config.seeds})")
    done = run_sequences(config, requests, retain_rows, retain_log, output_dir, progress=progress)
    methods = {}
    for method, spec in config.methods.items():
        per_seed = {str(seed): done[method, seed] for seed in config.seeds}
        methods[method] = {
            "label": spec.display_label(),
            "kind": spec.kind,
            "requests": per_seed[str(config.seeds[0])],  # the first seed's (what one-seed readers expect)
            "seeds": per_seed,
        }
    verdicts = _judge(config, methods, len(requests))
    for verdict in verdicts:
        print(f"  {verdict['claim']}: {verdict['cell']}")
    results = {
        "config": config.to_dict(),
        "requests": [
            {"request": r.number, "questions": r.size, "evaluated": r.keys, **({"split": r.split} if r.split else {})}
            for r in requests
        ],
        "references": refs,
        "methods": methods,
        "verdicts": verdicts,
        "seconds": {"total": time.perf_counter() - started},
        "machine": machine_info(),
    }
    write_json_atomic(output_dir / RESULTS_FILE, results)
    print("3/3 The report")
    if report:
        from .report import write_report

        write_report(results, output_dir)
    print(f"Done in {results['seconds']['total']:.0f} s; results in {output_dir.resolve()}")
    return results
