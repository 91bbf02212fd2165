"""Offline quickstart: teach a tiny model the bundled TOFU subset, then unlearn two authors with GA and NPO.

Runs on a laptop CPU in about a minute and needs no download: the tokenizer and the model are built locally.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from .data import PromptEncoder, load_tofu, pad_examples
from .losses import mean_nll
from .tiny import finetune_on_qa, tiny_llama, train_tokenizer

#: name -> (forget loss, forget kwargs, retain loss)
METHODS = {
    "ga": ("ga", {}, "nll"),
    "npo": ("npo", {"beta": 0.1}, "nll"),
}


@dataclass
class QuickstartResult:
    method: str
    forget_probability: float
    retain_probability: float


@torch.no_grad()
def answer_probability(model, tokenizer, dataset, batch_size: int = 32) -> float:
    """Mean over questions of exp(-mean-NLL of the answer): TOFU's 'probability' on a split."""
    encoder = PromptEncoder(tokenizer)
    pairs = [
        encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(dataset["question"], dataset["answer"])
    ]
    model.eval()
    probs = []
    for start in range(0, len(pairs), batch_size):
        batch = pad_examples(pairs[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        probs.append(torch.exp(-mean_nll(logits, batch["labels"])))
    return torch.cat(probs).mean().item()


def run_quickstart(
    output_dir: str | Path = "quickstart_output",
    methods: list[str] | None = None,
    finetune_epochs: int = 20,
    unlearn_steps: int = 10,
    learning_rate: float = 5e-4,
    seed: int = 0,
    progress: bool = True,
) -> list[QuickstartResult]:
    """Run the quickstart; returns one row per model (the target first) and writes `results.json`."""
    from . import UnlearningConfig, UnlearningTrainer

    methods = methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown quickstart method(s) {unknown}; choose from {sorted(METHODS)}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.set_verbosity_error()

    full, forget, retain = (load_tofu(name, "bundled") for name in ("full", "forget01", "retain99"))
    tokenizer = train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], vocab_size=1024)
    target = tiny_llama(len(tokenizer), num_layers=2, hidden_size=128, seed=seed)
    print(
        f"1/2 Teaching a {sum(p.numel() for p in target.parameters()) / 1e6:.1f}M-parameter Llama the bundled TOFU "
        f"subset ({len(full)} questions, {len(forget)} of them about the 2 authors to forget)"
    )
    finetune_on_qa(
        target,
        tokenizer,
        full["question"],
        full["answer"],
        epochs=finetune_epochs,
        learning_rate=2e-3,
        seed=seed,
        progress=progress,
    )
    target.save_pretrained(output_dir / "target")
    tokenizer.save_pretrained(output_dir / "target")

    results = [
        QuickstartResult(
            "target (before unlearning)",
            answer_probability(target, tokenizer, forget),
            answer_probability(target, tokenizer, retain),
        )
    ]
    print(f"2/2 Unlearning the 2 authors with: {', '.join(methods)}")
    for method in methods:
        forget_loss, kwargs, retain_loss = METHODS[method]
        model = copy.deepcopy(target)
        args = UnlearningConfig(
            output_dir=str(output_dir / method),
            forget_loss=forget_loss,
            forget_loss_kwargs=kwargs,
            retain_loss=retain_loss,
            per_device_train_batch_size=8,
            max_steps=unlearn_steps,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            bf16=False,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            seed=seed,
            disable_tqdm=not progress,
            logging_strategy="no",
        )
        trainer = UnlearningTrainer(
            model=model, args=args, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer
        )
        trainer.train()
        trainer.save_model()
        results.append(
            QuickstartResult(
                f"{forget_loss}+{retain_loss}",
                answer_probability(model, tokenizer, forget),
                answer_probability(model, tokenizer, retain),
            )
        )

    print()
    print(format_table(results))
    (output_dir / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=2))
    print(f"\nModels and results.json are in {output_dir.resolve()}")
    return results


def format_table(results: list[QuickstartResult]) -> str:
    lines = [
        "| model | forget answer probability (lower = forgotten) | retain answer probability (higher = kept) |",
        "|---|---|---|",
    ]
    lines += [f"| {r.method} | {r.forget_probability:.3f} | {r.retain_probability:.3f} |" for r in results]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="quickstart_output", help="Where models and results go.")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"Comma-separated unlearning methods among {', '.join(METHODS)}."
    )
    parser.add_argument("--finetune-epochs", type=int, default=20, help="Epochs teaching the tiny model its data.")
    parser.add_argument("--unlearn-steps", type=int, default=10, help="Optimizer steps of each unlearning run.")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="Unlearning learning rate.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def main_from_args(args: argparse.Namespace) -> None:
    run_quickstart(
        output_dir=args.output_dir,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        finetune_epochs=args.finetune_epochs,
        unlearn_steps=args.unlearn_steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        progress=not args.no_progress,
    )
