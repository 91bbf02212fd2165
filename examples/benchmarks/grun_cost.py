"""What GRUN costs next to LoRA gradient difference (GD) and full-parameter GD, on the same model and data.

    python examples/benchmarks/grun_cost.py --steps 6 --layers 8 --hidden 512 --threads 1

Methods (forget: GA on forget01, retain: NLL on retain99, AdamW, batch 8, as the trainers run them):
- `full_gd`: UnlearningTrainer, every parameter trains.
- `lora_gd`: UnlearningTrainer with a rank-8 LoRA adapter on the attention and MLP projections.
- `grun`: GRUNTrainer, a rank-4 gated LoReFT (linear gate) at the last prompt token of 3 upper layers (the
  paper's depths: 20, 25, 31 of 32); the base
  model is frozen (GA + 2 x NLL + 10 x gate BCE).

Each method runs twice: with gradient checkpointing (trl's default, which the trainers keep) and without.

Step time: median of the timed optimizer steps (after one warm-up step), measured by a trainer callback. Peak
memory: the growth of the process's peak resident set size (Linux `VmHWM`, reset through `/proc/self/clear_refs`
before each method, glibc's free memory returned with `malloc_trim`) during training, over what the process held
before it; on a GPU (`--device cuda`) the growth of `torch.cuda.max_memory_allocated`. tracemalloc is not used: it
does not see torch's CPU allocator.

The 1B row counts parameters of a Llama-3.2-1B-shaped model built on the meta device (no weights are loaded).

Model shape and precision options (defaults: the small float32 model above, the tokenizer's 2048-token vocabulary):
`--vocab`, `--intermediate`, `--heads`, `--kv-heads`, `--tie-embeddings`; `--dtype bfloat16` builds the model on the
device in bfloat16 and trains with `bf16=True` (trl's default); `--methods` chooses the methods; `--json OUT` also
writes the results as JSON. A Llama-3.2-1B-shaped run on a GPU (random weights, edits at layers 10, 12, 15):

    python examples/benchmarks/grun_cost.py --device cuda --checkpointing on --layers 16 --hidden 2048 \
        --intermediate 8192 --heads 32 --kv-heads 8 --vocab 128256 --tie-embeddings --dtype bfloat16
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from hf_unlearn import UnlearningConfig, UnlearningTrainer, load_tofu
from hf_unlearn.demo.tiny import llama_shape, tiny_llama, train_tokenizer
from hf_unlearn.grun import GRUNConfig, GRUNTrainer, get_grun_model

MB = 2**20


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def _peak_rss_reset() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss("VmRSS")


def _rss(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"{field} not found")


def llama_1b_parameter_share(layers: int = 3, rank: int = 4) -> dict[str, float]:
    """Trainable share of GRUN (linear and MLP gate) and of rank-8 LoRA on a Llama-3.2-1B-shaped model (meta)."""
    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    d = config.hidden_size
    loreft = 2 * d * rank + rank  # R (r x d), W (r x d), b
    linear_gate, mlp_gate = d + 1, d * 256 + 256 + 256 * 64 + 64 + 64 + 1
    # LoRA rank 8 on q, k, v, o, gate, up, down of every layer.
    kv = config.num_key_value_heads * d // config.num_attention_heads
    shapes = [(d, d), (d, kv), (d, kv), (d, d), (d, config.intermediate_size)]
    shapes += [(d, config.intermediate_size), (config.intermediate_size, d)]
    lora = config.num_hidden_layers * sum(8 * (i + o) for i, o in shapes)
    return {
        "total": total,
        "grun_linear": layers * (loreft + linear_gate),
        "grun_mlp": layers * (loreft + mlp_gate),
        "lora_r8": lora,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--checkpointing", default="both", choices=["both", "on", "off"], help="gradient checkpointing settings to run"
    )
    parser.add_argument("--vocab", type=int, default=0, help="model vocabulary (0: the tokenizer's, 2048)")
    parser.add_argument("--intermediate", type=int, default=0, help="MLP width (0: 2 x hidden)")
    parser.add_argument("--heads", type=int, default=0, help="attention heads (0: hidden // 32)")
    parser.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0: hidden // 32)")
    parser.add_argument("--tie-embeddings", action="store_true", help="tie the LM head to the input embeddings")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--methods", default="full_gd,lora_gd,grun", help="comma-separated: full_gd, lora_gd, grun")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    if "full_gd" not in methods:
        parser.error("--methods must include full_gd (the reference of the ratios)")
    shape = llama_shape(args.heads, args.kv_heads, args.intermediate, args.tie_embeddings)
    dtype = getattr(torch, args.dtype)
    full = load_tofu("full", data_dir="bundled")
    forget, retain = load_tofu("forget01", data_dir="bundled"), load_tofu("retain99", data_dir="bundled")
    tokenizer = train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], vocab_size=2048)
    # The paper's depths: layers 20, 25 and 31 of Llama-3.1-8B's 32.
    edited = sorted({round(args.layers * 20 / 32), round(args.layers * 25 / 32), args.layers - 1})
    settings = {"both": (True, False), "on": (True,), "off": (False,)}[args.checkpointing]
    rows = []
    for checkpointing, method in [(c, m) for c in settings for m in ("full_gd", "lora_gd", "grun") if m in methods]:
        vocab = args.vocab or len(tokenizer)
        model = tiny_llama(vocab, args.layers, args.hidden, seed=0, dtype=dtype, device=args.device, **shape)
        total = sum(p.numel() for p in model.parameters())
        peft_config = None
        if method == "lora_gd":
            from peft import LoraConfig

            peft_config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
        if method == "grun":
            model = get_grun_model(model, GRUNConfig(layers=edited, rank=4, forget_loss="ga"))
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as out:
            config = UnlearningConfig(
                output_dir=out,
                max_steps=args.steps + 1,
                per_device_train_batch_size=8,
                learning_rate=1e-5 if method == "full_gd" else 4e-3,
                bf16=dtype == torch.bfloat16,
                gradient_checkpointing=checkpointing,
                report_to="none",
                save_strategy="no",
                disable_tqdm=True,
                use_cpu=args.device == "cpu",
                forget_loss="ga",
                retain_loss="nll",
                seed=0,
            )
            kwargs = dict(forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer, callbacks=[timer])
            if method == "grun":
                trainer = GRUNTrainer(model, config, **kwargs)
            else:
                trainer = UnlearningTrainer(model, config, peft_config=peft_config, **kwargs)
            trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated() / MB
            else:
                before = _peak_rss_reset()
            trainer.train()
            peak = (torch.cuda.max_memory_allocated() / MB if args.device == "cuda" else _rss("VmHWM")) - before
        rows.append((checkpointing, method, trainable, total, statistics.median(timer.times[1:]), peak))
        del trainer, model
    print(
        f"\nModel: Llama, {args.layers} layers, hidden {args.hidden}; GRUN layers {edited}; {args.device}, "
        f"{args.threads} thread(s); {args.steps} timed steps\n"
    )
    if shape or args.vocab or dtype != torch.float32:
        print(f"Shape options: {shape}, vocabulary {args.vocab or len(tokenizer)}, {args.dtype}.\n")
    print(
        "| checkpointing | method | trainable params | % of model | step time | vs full GD | peak memory growth "
        "| vs full GD |"
    )
    print("|---|---|---|---|---|---|---|---|")
    full_gd = {c: (step, peak) for c, method, _, _, step, peak in rows if method == "full_gd"}
    records = []
    for checkpointing, method, trainable, total, step, peak in rows:
        full_time, full_peak = full_gd[checkpointing]
        print(
            f"| {'on' if checkpointing else 'off'} | {method} | {trainable:,} | {100 * trainable / total:.3f}% | "
            f"{1000 * step:.0f} ms | {step / full_time:.2f}x | {peak:.0f} MB | {peak / full_peak:.2f}x |"
        )
        records.append(
            {
                "checkpointing": checkpointing,
                "method": method,
                "trainable": trainable,
                "total": total,
                "step_s": step,
                "vs_full_gd": step / full_time,
                "peak_mb": peak,
                "peak_vs_full_gd": peak / full_peak if full_peak else None,
            }
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "edited_layers": edited, "rows": records}, f, indent=1)
    share = llama_1b_parameter_share()
    print(f"\nLlama-3.2-1B shape (meta device, {share['total']:,} parameters), 3 edited layers, rank 4:\n")
    print("| method | trainable params | % of model |")
    print("|---|---|---|")
    for key, name in (("grun_linear", "GRUN, linear gate"), ("grun_mlp", "GRUN, MLP gate"), ("lora_r8", "LoRA r=8")):
        print(f"| {name} | {share[key]:,} | {100 * share[key] / share['total']:.4f}% |")


if __name__ == "__main__":
    main()
