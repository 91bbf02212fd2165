"""One prepared GPU check: runs the CUDA tests and the benchmarks, writes one markdown file with the results and the
machine they ran on.

    python examples/benchmarks/run_all.py --device cuda  # planned for <= 8 minutes; not yet run on a GPU
    python examples/benchmarks/run_all.py --device cpu --smoke --output /tmp/check.md  # dry run: ~50 s on 2 cores

Sections (`--sections`, comma-separated; all by default), each with its target:
- `cuda_tests`: `pytest -m cuda` when pyproject declares a `cuda` marker, else `pytest -k cuda` (the tests
  parametrised over devices, which run on `cuda` when it is available); target: no failure.
- `gru_overhead`: GRU vs GD step time and peak `torch.cuda.max_memory_allocated` (one process per method), full
  fine-tuning and LoRA, on a Llama-3.2-1B-shaped model (random weights, built from its config: nothing is
  downloaded), bfloat16, gradient checkpointing on (trl's defaults); targets: GRU <= 1.10x GD step time, GRU's extra
  peak memory <= 2x the trainable parameters in float32.
- `grun_cost`: GRUN's step time against full GD through the trainers at the same shape, edits at layers 10, 12, 15
  of 16 (the paper's 20, 25, 31 of 32); target <= 0.35x.
- `eval_throughput`: the batched TOFUEvaluator against the one-question-at-a-time loop on a forget10-sized split
  (400 questions with paraphrased and perturbed answers, 200 new tokens) at the same shape; the loop runs only the
  first questions and its rate is measured on those; target >= 10x questions per second.
- `fsdp2`: GRU's FSDP2 code path (`fully_shard`, the rectifier's global dot products through `all_reduce`, the
  state's save and load) in ONE process (world size 1, nccl on cuda, gloo on cpu), compared with the same steps
  unsharded; a 2-process run needs 2 GPUs (on the CPU, `tests/test_gru_distributed.py` runs 2 gloo processes).

`--smoke` uses tiny shapes, one or two steps, a handful of questions and a few new tokens (CI runs it on the CPU);
on the CPU the targets are reported but not judged. A section that fails is reported with the tail of its output
and the others still run; the exit code is 1 when a section errored. Once `--time-budget-s` has passed, no new
section starts (the skipped ones are listed) and running subprocesses are stopped 30 s after it. The markdown is
rewritten after every section. Only installed packages are used (offline: HF_HUB_OFFLINE=1 for every subprocess).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MB = 2**20

SECTIONS = {
    "cuda_tests": "CUDA tests",
    "gru_overhead": "GRU vs GD: step time and peak memory (full and LoRA)",
    "grun_cost": "GRUN vs full GD: step time",
    "eval_throughput": "Batched TOFU evaluation vs one question at a time",
    "fsdp2": "GRU on FSDP2, one process",
}
PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface-hub", "tokenizers", "pyreft",
    "pyvene", "bitsandbytes", "pytest", "hf-unlearn",
)  # fmt: skip
NOT_JUDGED = "not judged on CPU"

# Llama-3.2-1B's shape (random weights, built from the config) and the smoke run's tiny one.
LLAMA_1B = dict(layers=16, hidden=2048, intermediate=8192, heads=32, kv_heads=8, vocab=128256)
TINY = dict(layers=4, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=4096)


class SectionError(RuntimeError):
    """A section that failed; `body` holds what it measured before failing (markdown), if anything."""

    def __init__(self, message: str, body: str = ""):
        super().__init__(message)
        self.body = body


@dataclass
class Context:
    device: str
    smoke: bool
    workdir: Path
    deadline: float  # time.monotonic() after which subprocesses are stopped
    threads: int = 0

    @property
    def cpu(self) -> bool:
        return not self.device.startswith("cuda")

    @property
    def shape(self) -> dict:
        return TINY if self.smoke else LLAMA_1B

    def shape_flags(self, vocab_flag: str = "--vocab") -> list[str]:
        s = self.shape
        return [
            "--layers", str(s["layers"]), "--hidden", str(s["hidden"]), "--intermediate", str(s["intermediate"]),
            "--heads", str(s["heads"]), "--kv-heads", str(s["kv_heads"]), vocab_flag, str(s["vocab"]),
            "--tie-embeddings", "--dtype", "bfloat16",
        ]  # fmt: skip

    def verdict(self, ok: bool) -> str:
        if self.cpu:
            return NOT_JUDGED
        return "PASS" if ok else "FAIL"


@dataclass
class SectionResult:
    name: str
    status: str  # "done", "error" or "skipped"
    seconds: float = 0.0
    body: str = ""
    verdicts: list[str] = field(default_factory=list)
    error: str = ""


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_command(ctx: Context, command: list[str], env: dict | None = None, ok_codes=(0,)):
    """Run a subprocess (offline, with the repository on the path); raise SectionError with its output's tail when
    it exits with a code outside `ok_codes` or runs past the deadline."""
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    if ctx.threads:
        full_env["OMP_NUM_THREADS"] = str(ctx.threads)
    timeout = max(5.0, ctx.deadline - time.monotonic())
    start = time.perf_counter()
    try:
        out = subprocess.run(
            command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        output += (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        message = f"`{shlex.join(command)}` stopped after {timeout:.0f} s (time budget)\n{tail(output)}"
        raise SectionError(message) from None
    if out.returncode not in ok_codes:
        raise SectionError(
            f"`{shlex.join(command)}` exited with {out.returncode} after {time.perf_counter() - start:.0f} s\n"
            f"{tail(out.stdout + out.stderr)}"
        )
    return out


def command_line(command: list[str], workdir: Path | None = None) -> str:
    """The command as a reader would type it: paths relative to the repository, temporary files as OUT.json."""
    shown = []
    for c in command[1:]:
        if workdir is not None and str(workdir) in c:
            c = c.replace(str(workdir) + os.sep, "")
        elif c.startswith(str(REPO)):
            c = Path(c).relative_to(REPO).as_posix()
        shown.append(c)
    return "python " + shlex.join(shown)


# ---------------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------------


def has_cuda_marker() -> bool:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return False
    with open(REPO / "pyproject.toml", "rb") as f:
        markers = tomllib.load(f).get("tool", {}).get("pytest", {}).get("ini_options", {}).get("markers", [])
    return any(m.split(":")[0].strip() == "cuda" for m in markers)


def section_cuda_tests(ctx: Context) -> tuple[str, list[str]]:
    import xml.etree.ElementTree as ET

    marker = has_cuda_marker()
    selection = ["-m", "cuda"] if marker else ["-k", "cuda"]
    report = ctx.workdir / "cuda_tests.xml"
    where = ["tests"]
    if ctx.smoke:  # collecting every test module takes a while on a small CPU: only those that mention cuda
        where = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py") if "cuda" in p.read_text())
    command = [sys.executable, "-m", "pytest", *where, *selection, "-q", "-rs", "-p", "no:cacheprovider"]
    command += [f"--junitxml={report}"]
    env = {} if not ctx.cpu else {"CUDA_VISIBLE_DEVICES": ""}
    error = None
    try:
        out = run_command(ctx, command, env=env, ok_codes=(0, 5))  # 5: no test selected
        output = out.stdout + out.stderr
    except SectionError as e:
        error, output = e, str(e)
    counts = dict(tests=0, failures=0, errors=0, skipped=0, time=0.0)
    if report.exists():
        root = ET.parse(report).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        for key in counts:
            counts[key] = type(counts[key])(float(suite.get(key, 0)))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    how = (
        "`pytest -m cuda` (pyproject declares a `cuda` marker)"
        if marker
        else "`pytest -k cuda` (pyproject declares no `cuda` marker: the tests whose id holds `cuda`, i.e. those "
        "parametrised over devices)"
    )
    if ctx.smoke:
        how += "; smoke run: only the test files that mention `cuda`"
    body = (
        f"Selection: {how}. Command: `{command_line(command[:-1])}`.\n\n"
        "| selected | passed | failed | errors | skipped | seconds |\n|---:|---:|---:|---:|---:|---:|\n"
        f"| {counts['tests']} | {passed} | {counts['failures']} | {counts['errors']} | {counts['skipped']} | "
        f"{counts['time']:.1f} |\n\n```\n{tail(output, 15)}\n```\n"
    )
    if error is not None:
        raise SectionError(str(error), body)
    ok = counts["failures"] == 0 and counts["errors"] == 0 and passed > 0
    target = f"Target: every selected test passes on the GPU ({passed} passed, {counts['skipped']} skipped)"
    return body, [f"{target}: **{ctx.verdict(ok)}**"]


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def section_gru_overhead(ctx: Context) -> tuple[str, list[str]]:
    out = ctx.workdir / "gru_overhead.json"
    command = [sys.executable, str(HERE / "gru_overhead.py"), "--device", ctx.device, "--methods", "gd,gru"]
    command += ["--modes", "full,lora", "--checkpointing", *ctx.shape_flags(), "--json", str(out)]
    if ctx.smoke:
        command += ["--steps", "1", "--batch", "2", "--seq-len", "16", "--threads", "1", "--no-memory-runs"]
    else:
        command += ["--steps", "5", "--batch", "4", "--seq-len", "128"]
    run_command(ctx, command)
    result = _load_json(out)
    rows = {(r["mode"], r["method"]): r for r in result["rows"]}
    memory = result["memory"]
    lines = [
        f"Command: `{command_line(command, ctx.workdir)}`. Forget and retain batches of {result['args']['batch']} x "
        f"{result['args']['seq_len']} random tokens, AdamW, GA + NLL; step time: median of "
        f"{result['args']['steps']} interleaved steps after 2 warm-up steps; memory: {memory}"
        + (
            " of one process per method."
            if result["args"]["memory_runs"]
            else " of the timed run (both methods in one process: --no-memory-runs, smoke only)."
        ),
        "",
        f"| mode | trainable params | GD step | GRU step | GRU / GD | GD {memory} | GRU {memory} | GRU extra | "
        "2 x trainable fp32 | extra / budget |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for mode in ("full", "lora"):
        gd, gru = rows[mode, "gd"], rows[mode, "gru"]
        budget = 2 * 4 * gru["trainable"]
        lines.append(
            f"| {mode} | {gru['trainable'] / 1e6:.2f} M | {gd['step_s'] * 1e3:.1f} ms | {gru['step_s'] * 1e3:.1f} ms "
            f"| {gru['vs_gd']:.2f}x | {gd['peak_bytes'] / MB:.0f} MB | {gru['peak_bytes'] / MB:.0f} MB | "
            f"{gru['extra_peak_bytes'] / MB:+.0f} MB | {budget / MB:.0f} MB | {gru['extra_over_budget']:.2f} |"
        )
        ok = gru["vs_gd"] <= 1.10
        verdicts.append(f"Target ({mode}): GRU <= 1.10x GD step time ({gru['vs_gd']:.2f}x): **{ctx.verdict(ok)}**")
        verdicts.append(
            f"Target ({mode}): GRU's extra peak memory <= 2x the trainable parameters in fp32 "
            f"({gru['extra_over_budget']:.2f} of it): **{ctx.verdict(gru['extra_over_budget'] <= 1.0)}**"
        )
    return "\n".join(lines) + "\n", verdicts


def section_grun_cost(ctx: Context) -> tuple[str, list[str]]:
    out = ctx.workdir / "grun_cost.json"
    command = [sys.executable, str(HERE / "grun_cost.py"), "--device", ctx.device, "--checkpointing", "on"]
    command += ["--methods", "full_gd,grun", *ctx.shape_flags(), "--json", str(out)]
    command += ["--steps", "1"] if ctx.smoke else ["--steps", "5"]
    if ctx.smoke or ctx.cpu:
        command += ["--threads", "1"]
    run_command(ctx, command)
    result = _load_json(out)
    rows = {r["method"]: r for r in result["rows"]}
    lines = [
        f"Command: `{command_line(command, ctx.workdir)}`. UnlearningTrainer (full GD) and GRUNTrainer (rank-4 gated "
        f"LoReFT, linear gate, layers {result['edited_layers']} of {ctx.shape['layers']}), bundled TOFU forget01 / "
        "retain99, batch 8, bf16, gradient checkpointing on; step time: median of the timed steps after one warm-up "
        "step.",
        "",
        "| method | trainable params | step time | vs full GD | peak memory growth | vs full GD |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method in ("full_gd", "grun"):
        r = rows[method]
        lines.append(
            f"| {method} | {r['trainable']:,} | {r['step_s'] * 1e3:.1f} ms | {r['vs_full_gd']:.2f}x | "
            f"{r['peak_mb']:.0f} MB | {r['peak_vs_full_gd']:.2f}x |"
        )
    ratio = rows["grun"]["vs_full_gd"]
    return "\n".join(lines) + "\n", [
        f"Target: GRUN <= 0.35x full GD step time ({ratio:.2f}x): **{ctx.verdict(ratio <= 0.35)}**"
    ]


def section_eval_throughput(ctx: Context) -> tuple[str, list[str]]:
    out = ctx.workdir / "eval_throughput.json"
    command = [sys.executable, str(HERE / "eval_throughput.py"), "--device", ctx.device]
    command += [*ctx.shape_flags("--model-vocab"), "--splits", "forget", "--json", str(out)]
    if ctx.smoke:
        command += ["--forget-questions", "16", "--naive-max-questions", "4", "--max-new-tokens", "4"]
        command += ["--batch-size", "8", "--threads", "1", "--atol", "0.25"]
    else:
        command += ["--forget-questions", "400", "--naive-max-questions", "16", "--max-new-tokens", "200"]
        command += ["--batch-size", "64", "--atol", "0.25"]
    error = None
    try:
        run_command(ctx, command)
    except SectionError as e:  # the JSON is written before the final loss check: keep the numbers
        error = e
    result = _load_json(out)
    if result is None:
        raise error or SectionError("eval_throughput.py wrote no results")
    lines = [
        f"Command: `{command_line(command, ctx.workdir)}`. {result['questions']} forget questions (cycled from the "
        f"bundled TOFU questions that have paraphrased and perturbed answers; {result['sequences']} teacher-forced "
        f"sequences), greedy generation up to {result['args']['max_new_tokens']} new tokens (random weights: "
        f"nearly every generation runs the full length in both methods); the one-at-a-time loop ran the first "
        f"{result['naive_questions']} questions. Max |avg_gt_loss| difference between the two: "
        f"{result['max_avg_gt_loss_diff']:.1e} (bfloat16, padded vs unpadded).",
        "",
        "| method | questions | seconds | questions / s | speed-up |",
        "|---|---:|---:|---:|---:|",
        f"| one question at a time | {result['naive_questions']} | {result['naive_s']:.1f} | "
        f"{result['naive_questions_per_s']:.2f} | 1.0x |",
        f"| TOFUEvaluator (batch {result['args']['batch_size']}) | {result['questions']} | {result['batched_s']:.1f} "
        f"| {result['batched_questions_per_s']:.2f} | {result['speedup']:.1f}x |",
    ]
    body = "\n".join(lines) + "\n"
    if error is not None:
        raise SectionError(str(error), body)
    speedup = result["speedup"]
    return body, [f"Target: >= 10x questions per second ({speedup:.1f}x): **{ctx.verdict(speedup >= 10)}**"]


def section_fsdp2(ctx: Context) -> tuple[str, list[str]]:
    out = ctx.workdir / "fsdp2.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--fsdp2-worker", str(out), "--device", ctx.device]
    run_command(ctx, command, env=env)
    r = _load_json(out)
    ok = r["sharded"] and r["max_param_diff"] <= 1e-5 and r["max_ema_diff"] <= 1e-5 and r["state_round_trip"]
    lines = [
        f"Command: `{command_line(command[:2])} --fsdp2-worker OUT --device {ctx.device}` with RANK=0, "
        f"WORLD_SIZE=1 (one process). A 2-process FSDP2 run needs 2 GPUs; with one GPU this runs the same code path "
        f"(`fully_shard` on every layer and the model, DTensor gradients, the rectifier's dot products summed with "
        f"`all_reduce`, the state gathered to a file and re-sharded on load) with a world size of 1. The 2-process "
        f"comparison runs on the CPU with gloo in `tests/test_gru_distributed.py`.",
        "",
        "| backend | device | world size | parameters are DTensors | steps | projected steps | max param diff vs "
        "unsharded | max GRU buffer diff | state save/load | seconds |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|",
        f"| {r['backend']} | {r['device']} | {r['world_size']} | {r['sharded']} | {r['steps']} | {r['projected']} | "
        f"{r['max_param_diff']:.1e} | {r['max_ema_diff']:.1e} | {'exact' if r['state_round_trip'] else 'differs'} | "
        f"{r['seconds']:.1f} |",
    ]
    return "\n".join(lines) + "\n", [
        f"Target: the sharded run (world size 1) equals the unsharded one: **{ctx.verdict(ok)}**"
    ]


SECTION_FUNCTIONS = {
    "cuda_tests": section_cuda_tests,
    "gru_overhead": section_gru_overhead,
    "grun_cost": section_grun_cost,
    "eval_throughput": section_eval_throughput,
    "fsdp2": section_fsdp2,
}


def fsdp2_worker(out: str, device: str) -> None:
    """GRU on FSDP2 in one process (world size 1), then the same steps unsharded; writes a JSON report."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from hf_unlearn.demo.tiny import tiny_llama
    from hf_unlearn.gru import GradientRectifier, all_reduce_sum_, stats_to_logs

    vocab, batch, length, steps, accumulation = 64, 4, 12, 3, 2
    torch.set_num_threads(1)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(0)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps * accumulation):
        forget = torch.randint(4, vocab, (batch, length), generator=generator)
        retain = forget.clone()  # sharing the first half of each row makes the two gradients conflict
        retain[:, length // 2 :] = torch.randint(4, vocab, (batch, length - length // 2), generator=generator)
        batches.append((forget.to(dev), retain.to(dev)))

    def nll(model, ids):
        logits = model(input_ids=ids).logits[:, :-1].float()
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:])

    def full(t):
        return t.full_tensor() if hasattr(t, "full_tensor") else t

    def run(sharded: bool, state_dir: str) -> dict:
        model = tiny_llama(vocab, num_layers=2, hidden_size=32, seed=0).to(dev)
        if sharded:
            for layer in model.model.layers:
                fully_shard(layer)
            fully_shard(model)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        rectifier = GradientRectifier(params, ema=0.8, reduce_sums=all_reduce_sum_ if sharded else None)
        optimizer = torch.optim.SGD([p for _, p in params], lr=0.5)
        logs = []
        for step in range(steps):
            for micro in range(accumulation):
                forget, retain = batches[step * accumulation + micro]
                (-nll(model, forget) / accumulation).backward()
                with rectifier.retain_gradients():
                    (nll(model, retain) / accumulation).backward()
            logs.append(stats_to_logs(rectifier.rectify().tolist()))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        rectifier.save(state_dir, write=True)
        reloaded = GradientRectifier(params, ema=0.8)
        round_trip = reloaded.load(state_dir) and all(
            torch.equal(full(a), full(b)) for a, b in zip(rectifier.retain_ema, reloaded.retain_ema)
        )
        return {
            "sharded": any(hasattr(p, "full_tensor") for _, p in params),
            "params": torch.cat([full(p.detach()).flatten().cpu() for _, p in params]),
            "ema": torch.cat([full(b).flatten().cpu() for b in rectifier.retain_ema]),
            "projected": sum(int(e["gru/projected"]) for e in logs),
            "round_trip": bool(round_trip),
        }

    dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sharded = run(True, f"{tmp}/sharded")
            dist.barrier()
            single = run(False, f"{tmp}/single")
    finally:
        dist.destroy_process_group()
    report = {
        "backend": backend,
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "world_size": 1,
        "sharded": sharded["sharded"],
        "steps": steps,
        "projected": sharded["projected"],
        "max_param_diff": (sharded["params"] - single["params"]).abs().max().item(),
        "max_ema_diff": (sharded["ema"] - single["ema"]).abs().max().item(),
        "state_round_trip": sharded["round_trip"],
        "seconds": time.perf_counter() - start,
    }
    Path(out).write_text(json.dumps(report))


# ---------------------------------------------------------------------------------------------------------------
# machine, running and writing
# ---------------------------------------------------------------------------------------------------------------


def machine_info(device: str) -> list[str]:
    cpu = platform.processor() or platform.machine()
    memory = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    lines = [
        f"- Date (UTC): {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S')}",
        f"- Host: {socket.gethostname()} ({platform.platform()})",
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; memory {memory}",
    ]
    try:
        import torch

        cuda = torch.version.cuda or "none (CPU build)"
        if torch.cuda.is_available():
            gpus = [
                f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
                for i in range(torch.cuda.device_count())
            ]
            lines.append(f"- GPU: {', '.join(gpus)}; the run used `{device}`")
        else:
            lines.append(f"- GPU: none visible to torch; the run used `{device}`")
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        lines.append(f"- CUDA: torch built with CUDA {cuda}" + (f", cuDNN {cudnn}" if cudnn else ""))
    except Exception as e:  # noqa: BLE001  (the report still gets written)
        lines.append(f"- torch could not be imported: {e!r}")
    lines.append(f"- Versions: Python {platform.python_version()}, " + ", ".join(versions))
    lines.append(f"- hf_unlearn: {source_revision()}")
    return lines


def source_revision() -> str:
    """Which hf_unlearn ran: its version, where it was imported from, and the commit (HF_UNLEARN_COMMIT, else git)."""
    try:
        import hf_unlearn

        where = f"{hf_unlearn.__version__} from {Path(hf_unlearn.__file__).parent}"
    except Exception as e:  # noqa: BLE001  (the report still gets written)
        return f"could not be imported: {e!r}"
    commit = os.environ.get("HF_UNLEARN_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True,
                timeout=10, check=True,
            ).stdout.strip()  # fmt: skip
            commit += " (with uncommitted changes)" if dirty else ""
        except (OSError, subprocess.SubprocessError):
            commit = "unknown (no git here; set HF_UNLEARN_COMMIT)"
    return f"{where}, commit {commit}"


def run_sections(names, ctx: Context, budget_s: float, functions=None, on_result=None) -> list[SectionResult]:
    """Run the sections in order; an exception or a failed subprocess is recorded (with its tail) and the next
    section runs. After `budget_s` seconds no new section starts."""
    functions = functions or SECTION_FUNCTIONS
    start = time.monotonic()
    results = []
    for name in names:
        if time.monotonic() - start > budget_s:
            results.append(SectionResult(name, "skipped", error=f"time budget of {budget_s:.0f} s used up"))
        else:
            began = time.monotonic()
            try:
                body, verdicts = functions[name](ctx)
                result = SectionResult(name, "done", body=body, verdicts=verdicts)
            except SectionError as e:
                result = SectionResult(name, "error", body=e.body, error=str(e))
            except Exception:  # noqa: BLE001  (one broken section must not lose the others)
                result = SectionResult(name, "error", error=traceback.format_exc())
            result.seconds = time.monotonic() - began
            results.append(result)
        if on_result is not None:
            on_result(results)
    return results


def render(results: list[SectionResult], header: list[str], machine: list[str], pending=()) -> str:
    out = [*header, "", "## Machine", "", *machine, "", "## Summary", ""]
    out += ["| section | status | result | seconds |", "|---|---|---|---:|"]
    for r in results:
        verdicts = [v.rsplit("**", 2)[-2] for v in r.verdicts if v.endswith("**")]
        summary = (
            "FAIL"
            if "FAIL" in verdicts
            else "PASS"
            if verdicts and set(verdicts) == {"PASS"}
            else NOT_JUDGED
            if NOT_JUDGED in verdicts
            else "-"
        )
        out.append(f"| {SECTIONS.get(r.name, r.name)} | {r.status} | {summary} | {r.seconds:.0f} |")
    for name in pending:
        out.append(f"| {SECTIONS.get(name, name)} | not run yet | - | - |")
    for r in results:
        out += ["", f"## {SECTIONS.get(r.name, r.name)}", ""]
        if r.status == "skipped":
            out.append(f"Skipped: {r.error}.")
            continue
        if r.body:
            out.append(r.body)
        out += [f"- {v}" for v in r.verdicts]
        if r.status == "error":
            out += ["**ERROR**: this section failed; the tail of its output:", "", "```", tail(r.error, 40), "```"]
    skipped = [SECTIONS.get(r.name, r.name) for r in results if r.status == "skipped"]
    if skipped:
        out += ["", f"Skipped for the time budget: {', '.join(skipped)}."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, a step or two: a dry run of the script")
    parser.add_argument("--output", default="gpu_check.md", help="the markdown file to write")
    parser.add_argument("--time-budget-s", type=float, default=450.0, help="start no new section after this")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, among {list(SECTIONS)}")
    parser.add_argument("--fsdp2-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fsdp2_worker:
        fsdp2_worker(args.fsdp2_worker, args.device)
        return 0
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose among {list(SECTIONS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda, but torch sees no GPU (use --device cpu --smoke for a dry run)")
    output = Path(args.output)
    started = time.monotonic()
    header = [
        "# hf_unlearn GPU check" + (" (smoke run)" if args.smoke else ""),
        "",
        f"Command: `python examples/benchmarks/run_all.py {shlex.join(sys.argv[1:] if argv is None else argv)}`; "
        f"device `{args.device}`; time budget {args.time_budget_s:.0f} s. Models are built from their configs with "
        "random weights; nothing is downloaded. "
        + (f"Targets are reported but {NOT_JUDGED}." if args.device == "cpu" else ""),
    ]
    machine = machine_info(args.device)
    with tempfile.TemporaryDirectory(prefix="run_all_") as tmp:
        ctx = Context(
            device=args.device,
            smoke=args.smoke,
            workdir=Path(tmp),
            deadline=started + args.time_budget_s + 30,
            threads=1 if args.smoke else 0,
        )

        def write(results):
            done = {r.name for r in results}
            output.write_text(render(results, header, machine, [n for n in names if n not in done]))

        write([])
        results = run_sections(names, ctx, args.time_budget_s - (time.monotonic() - started), on_result=write)
    total = time.monotonic() - started
    text = render(results, header, machine)
    text += f"\nTotal: {total:.0f} s.\n"
    output.write_text(text)
    errored = [r.name for r in results if r.status == "error"]
    print(f"wrote {output} in {total:.0f} s" + (f"; sections that errored: {errored}" if errored else ""))
    return 1 if errored else 0


if __name__ == "__main__":
    sys.exit(main())
