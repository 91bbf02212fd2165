"""How much GRU costs over plain gradient difference (GD), full fine-tuning and LoRA, on the same model and batches.

    python examples/benchmarks/gru_overhead.py --steps 6 --layers 8 --hidden 512 --device cpu --threads 1

Methods (GA forget loss, NLL retain loss, AdamW; GRU projects the whole objective GA + NLL, as `gd_gru`):
- `gd`: one backward pass of L_forget + L_retain (GA + NLL), then AdamW.
- `gru`: hf_unlearn's GRU, as the trainer runs it: the forget and the retain-NLL backward passes into separate
  gradients (tensor swaps); the retain NLL's gradient serves both the objective (alpha * g_r) and the direction; then
  `GradientRectifier.rectify()` on the device (moving average, objective, one global dot product, projection), then
  AdamW.
- `reference`: the GRU reference implementation's approach (tmlr-group/GRU `gd_gru`), reimplemented: one backward
  pass of the objective and one of the retain NLL on a second retain forward, each gradient copied into per-parameter
  accumulators, then both flattened, copied to the CPU and projected in float64 there, and the result copied back
  into `param.grad`.

"rectification time" is the part of the step spent between the end of the backward passes and the optimizer (GRU's
`rectify()`; for the reference the accumulator copies, the CPU round trip and the projection).

Step time: median over `--steps` timed steps after 2 warm-up steps, the methods' steps interleaved in one process on
one model (so that a busy machine slows them alike). Peak memory: one process per method (3 steps), the growth of
`torch.cuda.max_memory_allocated` on a GPU; on the CPU the growth of the peak resident memory over what the process
held before the first step, with glibc returning freed tensors to the OS (so that it follows the live tensors).
On a busy CPU, `--threads 1` gives steadier timings.

Model shape and precision options (defaults: the small float32 model above): `--intermediate`, `--heads`,
`--kv-heads`, `--tie-embeddings`; `--dtype bfloat16` builds the model directly on the device in bfloat16 (weights,
gradients, AdamW state and GRU buffer in bfloat16); `--checkpointing` turns on gradient checkpointing (trl's
default). `--json OUT` also writes the results table as JSON. A Llama-3.2-1B-shaped run on a GPU (random weights):

    python examples/benchmarks/gru_overhead.py --device cuda --methods gd,gru --layers 16 --hidden 2048 \
        --intermediate 8192 --heads 32 --kv-heads 8 --vocab 128256 --tie-embeddings --dtype bfloat16 --checkpointing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from hf_unlearn.demo.tiny import llama_shape, tiny_llama
from hf_unlearn.gru import GradientRectifier
from hf_unlearn.losses import LossContext, get_loss

MB = 2**20


def cpu_memory(reset_peak: bool = False) -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process in bytes; `reset_peak` resets the peak to
    the current value first (Linux >= 4.0). The parent runs workers with a fixed glibc mmap threshold, so that freed
    tensors go back to the OS and the resident size follows the live tensors."""
    if reset_peak:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def make_batches(args, device):
    """A forget and a retain batch of random token ids; the second half of each sequence is the answer."""
    gen = torch.Generator().manual_seed(0)

    def batch():
        ids = torch.randint(4, args.vocab, (args.batch, args.seq_len), generator=gen)
        labels = ids.clone()
        labels[:, : args.seq_len // 2] = -100
        return {
            "input_ids": ids.to(device),
            "attention_mask": torch.ones_like(ids).to(device),
            "labels": labels.to(device),
        }

    return {"forget": batch(), "retain": batch()}


def build_model(args, device):
    shape = llama_shape(args.heads, args.kv_heads, tie_embeddings=args.tie_embeddings)  # intermediate: below
    dtype = getattr(torch, args.dtype)
    model = tiny_llama(
        args.vocab,
        num_layers=args.layers,
        hidden_size=args.hidden,
        seed=0,
        intermediate_size=args.intermediate or args.hidden * 11 // 4,
        max_position_embeddings=max(512, args.seq_len),
        **shape,
        dtype=dtype,
        device=device,
    )
    if args.checkpointing:
        model.gradient_checkpointing_enable()
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        )
        model = get_peft_model(model, config)
    return model.to(device).train()


class ReferenceGRU:
    """The reference code's approach (reimplemented): dict accumulators per backward pass, then flattened copies on
    the CPU, the moving average and the projection in float64 there, and a copy back to the device."""

    def __init__(self, named_params, ema=0.8):
        self.named_params = list(named_params)
        self.ema = ema
        self.objective_acc, self.retain_acc = {}, {}
        self.memory = 0.0

    def store(self, which):
        acc = self.objective_acc if which == "objective" else self.retain_acc
        for name, p in self.named_params:
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            if name in acc:
                acc[name] += grad.detach()
            else:
                acc[name] = grad.detach().clone()
            p.grad = None

    def rectify(self):
        flat_f = torch.cat([self.objective_acc[n].reshape(-1) for n, _ in self.named_params]).to("cpu", torch.float64)
        flat_r = torch.cat([self.retain_acc[n].reshape(-1) for n, _ in self.named_params]).to("cpu", torch.float64)
        self.memory = self.ema * flat_r + (1 - self.ema) * self.memory
        dot = torch.dot(flat_f, self.memory)
        if dot < 0:
            flat_f = flat_f - dot / torch.dot(self.memory, self.memory) * self.memory
        offset = 0
        for _, p in self.named_params:
            n = p.numel()
            p.grad = flat_f[offset : offset + n].view_as(p).to(p.device, p.dtype)
            offset += n
        self.objective_acc, self.retain_acc = {}, {}


def worker(args) -> dict:
    """Runs the methods of `args.method` (comma-separated) on one model and the same batches, their steps
    interleaved (so that a busy machine slows them alike); returns per method the median step time, the median
    rectification time, the peak memory growth (meaningful for a single method) and the GRU state size."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args, device)
    batches = make_batches(args, device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=1e-5)
    forget_loss, retain_loss = get_loss("ga")(), get_loss("nll")()
    methods = args.method.split(",")
    rectifier = GradientRectifier(named, objective_retain_weight=1.0) if "gru" in methods else None
    reference = ReferenceGRU(named) if "reference" in methods else None
    step_times = {m: [] for m in methods}
    rectify_times = {m: [] for m in methods}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(method, fn):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        rectify_times[method].append(time.perf_counter() - start)

    def step(method):
        if method == "gd":
            ctx = LossContext(model, batches)
            (forget_loss(ctx) + retain_loss(ctx)).backward()
            del ctx
        elif method == "gru":
            ctx = LossContext(model, batches)
            forget_loss(ctx).backward()
            ctx.release("forget")
            ctx = LossContext(model, batches)
            loss = retain_loss(ctx)
            with rectifier.retain_gradients():
                loss.backward()
            del ctx, loss
            timed(method, rectifier.rectify)
        else:
            ctx = LossContext(model, batches)
            (forget_loss(ctx) + retain_loss(ctx)).backward()  # the objective
            del ctx
            reference.store("objective")
            ctx = LossContext(model, batches)
            retain_loss(ctx).backward()  # the direction, on its own forward
            del ctx
            timed(method, lambda: (reference.store("retain"), reference.rectify()))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = cpu_memory(reset_peak=True)["VmRSS"]
    for round_ in range(2 + args.steps):  # 2 warm-up rounds (optimizer state, GRU buffers), then timed ones
        for method in methods:
            sync()
            start = time.perf_counter()
            step(method)
            sync()
            if round_ >= 2:
                step_times[method].append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = cpu_memory()["VmHWM"] - base
    state = {
        "gd": 0,
        "gru": rectifier and sum(b.numel() * b.element_size() for b in rectifier.retain_ema if b is not None),
        "reference": reference and reference.memory.numel() * reference.memory.element_size(),
    }
    return {
        m: {
            "step_s": statistics.median(step_times[m]),
            "rectify_s": statistics.median(rectify_times[m][2:]) if rectify_times[m] else 0.0,
            "peak_bytes": peak,
            "trainable": sum(p.numel() for _, p in named),
            "state_bytes": state[m],
        }
        for m in methods
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method (after 2 warm-up steps)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--intermediate", type=int, default=0, help="MLP width (0: hidden * 11 // 4)")
    parser.add_argument("--heads", type=int, default=0, help="attention heads (0: hidden // 32)")
    parser.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0: hidden // 32)")
    parser.add_argument("--tie-embeddings", action="store_true", help="tie the LM head to the input embeddings")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (trl's default)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--memory-runs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure peak memory in one process per method (--no-memory-runs: the timed run's shared peak)",
    )
    parser.add_argument("--batch", type=int, default=4, help="sequences per forget and per retain batch")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--methods", default="gd,gru,reference")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="gd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    def launch(mode, methods, steps, env=None):
        command = [sys.executable, __file__, "--worker", "--mode", mode, "--method", methods, "--steps", str(steps)]
        for flag in ("layers", "hidden", "vocab", "batch", "seq_len", "device", "threads"):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        command += ["--intermediate", str(args.intermediate), "--heads", str(args.heads)]
        command += ["--kv-heads", str(args.kv_heads), "--dtype", args.dtype]
        command += ["--tie-embeddings"] * args.tie_embeddings + ["--checkpointing"] * args.checkpointing
        out = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
        run = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:4s} {run}", file=sys.stderr)
        return run

    cpu = not args.device.startswith("cuda")
    results = {}
    for mode in args.modes.split(","):
        for method, timing in launch(mode, args.methods, args.steps).items():
            results[mode, method] = timing
        # Peak memory: one process per method. On the CPU, glibc must return freed tensors to the OS for the
        # resident size to follow the live tensors, which costs page faults (so not in the timed run).
        for method in args.methods.split(",") if args.memory_runs else ():
            run = launch(mode, method, 1, env={"MALLOC_MMAP_THRESHOLD_": "65536"} if cpu else None)
            results[mode, method]["peak_bytes"] = run[method]["peak_bytes"]

    memory = "peak RSS growth" if cpu else "peak GPU memory"
    threads = args.threads or torch.get_num_threads()
    print(
        f"\nLlama {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}; forget and retain batches of "
        f"{args.batch} x {args.seq_len} tokens; device {args.device}; median of {args.steps} interleaved steps; "
        f"AdamW; {threads} torch threads.\n"
    )
    if (args.intermediate, args.heads, args.kv_heads, args.tie_embeddings, args.dtype, args.checkpointing) != (
        0,
        0,
        0,
        False,
        "float32",
        False,
    ):
        print(
            f"Intermediate {args.intermediate or args.hidden * 11 // 4}, {args.heads or args.hidden // 32} heads, "
            f"{args.kv_heads or args.hidden // 32} KV heads, tied embeddings: {args.tie_embeddings}; {args.dtype}; "
            f"gradient checkpointing: {'on' if args.checkpointing else 'off'}.\n"
        )
    print(
        f"| mode | method | trainable params | step time | vs GD | rectification time | {memory} | extra vs GD | "
        "extra / (2 x trainable fp32) | GRU state kept between steps |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for (mode, method), r in results.items():
        gd = results.get((mode, "gd"))
        ratio = f"{r['step_s'] / gd['step_s']:.2f}x" if gd else "-"
        extra = None if gd is None or method == "gd" else r["peak_bytes"] - gd["peak_bytes"]
        budget = 2 * 4 * r["trainable"]
        print(
            f"| {mode} | {method} | {r['trainable'] / 1e6:.2f} M | {r['step_s'] * 1e3:.0f} ms | {ratio} | "
            f"{r['rectify_s'] * 1e3:.0f} ms | {r['peak_bytes'] / MB:.0f} MB | "
            f"{'-' if extra is None else f'{extra / MB:+.0f} MB'} | "
            f"{'-' if extra is None else f'{extra / budget:.2f}'} | {r['state_bytes'] / MB:.1f} MB |"
        )
        rows.append(
            {
                "mode": mode,
                "method": method,
                **r,
                "vs_gd": r["step_s"] / gd["step_s"] if gd else None,
                "extra_peak_bytes": extra,
                "extra_over_budget": None if extra is None else extra / budget,
            }
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "memory": memory, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
