"""Run a comparison: the reference models' evaluation, the first seed over every method's grid, the rate rule, the
other seeds at the chosen rates, the verdicts; `results.json`, `report.md` and plots in the output folder.

Every finished run is kept in `runs/<method>/lr<rate>_seed<seed>/record.json` with its fingerprint (what its
outcome depends on); running the same comparison again reuses it, so a killed comparison resumes where it stopped
and a comparison with one more method or seed runs only what is new.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from queue import Queue
from typing import Any

from ..io import write_json_atomic
from .config import CompareConfig
from .rules import MatchedValue, choose_learning_rate, paired_verdict
from .worker import RECORD_FILE, RunJob, clear_job_folder

__all__ = ["RESULTS_FILE", "REPORT_FILE", "run_comparison", "run_fingerprint", "run_folder"]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
#: Settings that do not change what a run computes (they choose which runs exist, how they are scheduled, or how
#: the verdicts read them): left out of a run's fingerprint.
_SCHEDULING_KEYS = ("methods", "seeds", "claims", "min_effect", "workers", "threads_per_worker", "keep_checkpoints")


def run_folder(output_dir: Path, method: str, learning_rate: float, seed: int) -> Path:
    return Path(output_dir) / "runs" / method / f"lr{learning_rate:g}_seed{seed}"


def run_fingerprint(config: CompareConfig, method: str, learning_rate: float, seed: int, retain: str | None) -> str:
    """What one run's outcome depends on: its method, rate and seed, the models and data, the targets, budget,
    cadence and refinement, the training settings, the evaluation, and the attacks if this seed is attacked."""
    data = config.to_dict()
    for key in _SCHEDULING_KEYS:
        data.pop(key)
    attacked = config.attacks is not None and seed in (config.attacks.seeds or config.seeds[:1])
    if not attacked:
        data.pop("attacks")
    payload = [data, asdict(config.methods[method]), float(learning_rate), int(seed), retain]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------------
# executing runs
# ---------------------------------------------------------------------------------------------------------------------


def _devices(config: CompareConfig) -> list[str] | None:
    """GPU groups for the workers (`CUDA_VISIBLE_DEVICES` values), or None on a machine without GPUs."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001  (no usable CUDA: run on the CPU)
        count = 0
    if count == 0:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i.strip() for i in visible.split(",")] if visible else [str(i) for i in range(count)]
    size = config.gpus_per_run
    if size > len(ids):
        raise ValueError(f"gpus_per_run={size} but this machine has {len(ids)} GPU(s).")
    return [",".join(ids[i : i + size]) for i in range(0, len(ids) - size + 1, size)]


def _worker_command(job_file: Path, threads: int, gpus: int) -> list[str]:
    if gpus > 1:
        return ["accelerate", "launch", "--multi_gpu", "--num_processes", str(gpus), "-m",
                "hf_unlearn.compare.worker", str(job_file)]  # fmt: skip
    return [sys.executable, "-m", "hf_unlearn.compare.worker", str(job_file), str(threads)]


def execute(jobs: Sequence[RunJob], config: CompareConfig, desc: str, progress: bool = True) -> list[dict[str, Any]]:
    """Run `jobs` (each writes its record): in this process when one worker runs on the CPU, else in a pool of
    worker processes, one per GPU group (`gpus_per_run` GPUs, through `accelerate launch` when more than one) or
    `workers` on the CPU with `threads_per_worker` torch threads each. Returns the records in the jobs' order.

    A run that fails does not stop the others; the error names its log (`worker.log` in its folder) once every
    other run has finished and been saved."""
    from tqdm.auto import tqdm

    if not jobs:
        return []
    devices = _devices(config)
    workers = config.workers or (len(devices) if devices else 1)
    if devices:
        workers = min(workers, len(devices))
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    records: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    if workers == 1 and not devices:
        import torch

        from .worker import run_job

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for job in jobs:
                records[job.folder] = run_job(job)
                bar.update()
        finally:
            torch.set_num_threads(previous)
            bar.close()
        return [records[job.folder] for job in jobs]

    slots: Queue[str | None] = Queue()
    for slot in devices or [None] * workers:
        slots.put(slot)

    def launch(job: RunJob) -> dict[str, Any]:
        slot = slots.get()
        try:
            clear_job_folder(job.folder)
            job_file = job.write()
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot
            log = Path(job.folder) / "worker.log"
            with open(log, "w", encoding="utf-8") as out:
                done = subprocess.run(
                    _worker_command(job_file, threads, config.gpus_per_run if slot else 1),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            record_file = Path(job.folder) / RECORD_FILE
            if done.returncode != 0 or not record_file.is_file():
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"run {job.folder} failed (exit {done.returncode}); see {log}: " + " | ".join(tail))
            return json.loads(record_file.read_text(encoding="utf-8"))
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(launch, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                records[futures[future].folder] = future.result()
            except RuntimeError as err:
                failures.append(str(err))
            bar.update()
    bar.close()
    if failures:
        raise RuntimeError(
            f"{len(failures)} run(s) failed (the others are saved; rerun to resume):\n" + "\n".join(failures)
        )
    return [records[job.folder] for job in jobs]


# ---------------------------------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------------------------------


def _jobs(config, output_dir: Path, pairs, retain: str | None) -> tuple[list[RunJob], list[dict[str, Any]]]:
    """Jobs for (method, rate, seed) triples; the ones already recorded with the same fingerprint are reused."""
    todo, reused = [], []
    raw = config.to_dict()
    for method, rate, seed in pairs:
        folder = run_folder(output_dir, method, rate, seed)
        fingerprint = run_fingerprint(config, method, rate, seed, retain)
        record_file = folder / RECORD_FILE
        if record_file.is_file():
            record = json.loads(record_file.read_text(encoding="utf-8"))
            if record.get("fingerprint") == fingerprint:
                reused.append(record)
                continue
        todo.append(RunJob(raw, method, float(rate), int(seed), str(folder), fingerprint, retain))
    return todo, reused


def _references(config: CompareConfig, output_dir: Path, progress: bool) -> tuple[dict[str, Any], str | None]:
    """The full evaluation of the target and the retain model (reused when done before with the same settings);
    returns the summaries and the retain model's logs (forget quality)."""
    from .worker import add_utilities, full_evaluation, load_target

    keys = ["target_model", "retain_model", "retain_logs", "tokenizer", "data", "utility", "dtype"]
    fingerprint = config.fingerprint(keys)
    folder = output_dir / "references"
    saved = folder / "references.json"
    retain_logs = config.retain_logs
    if config.retain_model:
        retain_logs = str(folder / "retain" / "eval")
    if saved.is_file():
        data = json.loads(saved.read_text(encoding="utf-8"))
        if data.get("fingerprint") == fingerprint:
            return data["summaries"], retain_logs
    summaries: dict[str, Any] = {}
    target, tokenizer = load_target(config)
    if config.retain_model:
        import torch
        from transformers import AutoModelForCausalLM

        print(f"  evaluating the retain model {config.retain_model}")
        retain = AutoModelForCausalLM.from_pretrained(config.retain_model, dtype=getattr(torch, config.dtype))
        summaries["retain model"] = full_evaluation(retain.eval(), tokenizer, config, Path(retain_logs), None)
        if config.data.source != "muse":
            summaries["retain model"]["forget_quality"] = 1.0  # the KS test of a model against itself
        del retain
    elif retain_logs:
        from ..evaluation.logs import tofu_summary_from_logs

        summaries["retain model"] = add_utilities(dict(tofu_summary_from_logs(retain_logs, retain_logs)))
    print(f"  evaluating the target model {config.target_model}")
    summaries["target"] = full_evaluation(target, tokenizer, config, folder / "target" / "eval", retain_logs)
    write_json_atomic(saved, {"fingerprint": fingerprint, "summaries": summaries})
    return summaries, retain_logs


def _matched(record: dict[str, Any], target: str, claim: Any = None) -> MatchedValue | None:
    """The run's matched point at `target` as the rules read it: the utility there (or the quantity `claim` names,
    oriented so that higher is better) and the target metric there; None where not reached or not measured."""
    entry = (record.get("matched") or {}).get(target)
    if entry is None or entry.get("forget_metric") is None:
        return None
    if claim is None or claim.metric == "utility":
        value = entry.get("utility")
    elif claim.attack is not None:
        value = ((entry.get("attacks") or {}).get(claim.attack) or {}).get("after")
        value = None if value is None else -float(value)  # a lower probability after the attack is better
    else:
        value = (entry.get("summary") or {}).get(claim.metric)
    if value is None:
        return None
    return MatchedValue(float(value), float(entry["forget_metric"]))


def choose_rates(config: CompareConfig, records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Method -> target -> the rate THE RATE RULE picks from the first seed's runs."""
    first = config.seeds[0]
    chosen: dict[str, dict[str, float | None]] = {}
    for method, spec in config.methods.items():
        mine = {r["learning_rate"]: r for r in records if r["method"] == method and r["seed"] == first}
        chosen[method] = {}
        for target in config.targets:
            if spec.targets is not None and target not in spec.targets:
                chosen[method][target] = None  # not run to this target
                continue
            candidates = {}
            for rate in spec.learning_rates:
                value = _matched(mine[rate], target) if rate in mine else None
                candidates[rate] = None if value is None else value.value
            chosen[method][target] = choose_learning_rate(candidates)
    return chosen


def _seed_values(config, records, method: str, rate: float | None, target: str, claim) -> dict[int, Any]:
    """Seed -> `method`'s matched point at `target` at the chosen `rate`, as `claim` reads it (None where not
    reached, not run or not measured)."""
    values: dict[int, MatchedValue | None] = {s: None for s in config.seeds}
    for r in records:
        if r["method"] == method and r["learning_rate"] == rate:
            values[r["seed"]] = _matched(r, target, claim)
    return values


def judge(config: CompareConfig, records: Sequence[dict[str, Any]], chosen) -> list[dict[str, Any]]:
    """Every claim at each of its targets, by THE VERDICT RULE over the seeds at the chosen rates."""
    labels = config.labels
    verdicts = []
    for claim in config.claims:
        for target in config.claim_targets(claim):
            verdict = paired_verdict(
                claim.describe(labels),
                target,
                _seed_values(config, records, claim.better, chosen[claim.better][target], target, claim),
                _seed_values(config, records, claim.than, chosen[claim.than][target], target, claim),
                tolerance=config.targets[target].tolerance,
                min_effect=config.min_effect,
                margin=claim.margin,
            )
            verdicts.append({**asdict(verdict), "mean": verdict.mean, "std": verdict.std, "cell": verdict.cell()})
    return verdicts


def rejudge(output_dir: str | Path) -> dict[str, Any]:
    """Judge a finished comparison's claims again from its `results.json` (its runs, chosen rates and config, with
    this version's rules: e.g. a claim without targets is judged where both methods run); rewrites the file."""
    from .report import load_results

    results = load_results(output_dir)
    config = CompareConfig.from_dict(results["config"])
    results["verdicts"] = judge(config, results["runs"], results["chosen"])
    write_json_atomic(Path(output_dir) / RESULTS_FILE, results)
    return results


def run_comparison(
    config: CompareConfig, output_dir: str | Path, *, progress: bool = True, report: bool = True
) -> dict[str, Any]:
    """Run the comparison's protocol (see [`CompareConfig`]) into `output_dir`; returns the results (also written
    to `results.json`, with `report.md` and the plots unless `report=False`)."""
    from transformers.utils import logging as hf_logging

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.set_verbosity_error()
    write_json_atomic(output_dir / "config.json", config.to_dict())  # the pre-registration, as run
    timings: dict[str, float] = {}
    started = tic = time.perf_counter()

    print("1/4 The target and the retain model")
    references, retain_logs = _references(config, output_dir, progress)
    timings["references"] = time.perf_counter() - tic
    already = [f"{n} ({t.target})" for n, t in config.targets.items() if t.target.met(references["target"])]
    if already:
        raise ValueError(
            f"The target model already meets {already} (its {', '.join(config.target_metrics())}: "
            + ", ".join(f"{references['target'].get(m)}" for m in config.target_metrics())
            + "): nothing would be unlearned to reach it. Choose stricter targets."
        )

    first = config.seeds[0]
    grid = [(m, rate, first) for m, spec in config.methods.items() for rate in spec.learning_rates]
    todo, records = _jobs(config, output_dir, grid, retain_logs)
    print(f"2/4 Seed {first} over the learning-rate grids: {len(grid)} runs ({len(records)} reused)")
    tic = time.perf_counter()
    records += execute(todo, config, f"seed {first}, every rate", progress)
    timings["first seed over the grids"] = time.perf_counter() - tic

    chosen = choose_rates(config, records)
    others = [
        (method, rate, seed)
        for seed in config.seeds[1:]
        for method in config.methods
        for rate in sorted({r for r in chosen[method].values() if r is not None})
    ]
    todo, reused = _jobs(config, output_dir, others, retain_logs)
    print(f"3/4 Seeds {config.seeds[1:]} at the chosen rates: {len(others)} runs ({len(reused)} reused)")
    tic = time.perf_counter()
    records += reused + execute(todo, config, "other seeds", progress)
    timings["other seeds at the chosen rates"] = time.perf_counter() - tic

    print("4/4 Verdicts and the report")
    order = {(m, r, s): i for i, (m, r, s) in enumerate(grid + others)}
    records.sort(key=lambda r: order.get((r["method"], r["learning_rate"], r["seed"]), len(order)))
    timings["total"] = time.perf_counter() - started
    results = {
        "config": config.to_dict(),
        "references": references,
        "runs": records,
        "chosen": chosen,
        "verdicts": judge(config, records, chosen),
        "seconds": timings,
        "machine": machine_info(),
    }
    write_json_atomic(output_dir / RESULTS_FILE, results)
    if report:
        from .report import write_report

        text = write_report(results, output_dir)
        print()
        print(text.split("## Verdicts")[-1].strip() if "## Verdicts" in text else "")
    print(f"\nDone in {timings['total']:.0f} s; results in {output_dir.resolve()}")
    return results


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    from ..evaluation.record import hf_unlearn_version

    return {
        "hf_unlearn": hf_unlearn_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
