"""`hf-unlearn robustness`: does the forgotten knowledge come back? Relearning, quantization, logit-lens, probing and
membership-inference attacks on a saved or published unlearned model (full weights, peft adapter or GRUN), beside
its retain model.

    hf-unlearn robustness --model runs/tofu_forget10_npo --retain-model runs/retain90 --forget-split forget10

Published attack settings run by name with `--preset` (comma-separated; `--preset list` prints them), e.g.

    hf-unlearn robustness --model runs/npo --retain-model runs/retain90 --preset zhang2024-quantization,open-unlearning

Writes `robustness.json`, `robustness.md` and `robustness.png` (default: `<model folder>/robustness`) and prints the
table, each model's strongest attack and open-unlearning's robustness figure. Without a retain model the relearning
score is left out (it compares the two models' relearning).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "robustness"
HELP = "Attack an unlearned model (relearning, quantization, logit lens): does the forgotten knowledge come back?"
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="The unlearned model: a folder or a Hub id (required).")
    parser.add_argument("--retain-model", default=None, help="The retain model (never saw the forget data).")
    parser.add_argument("--target-model", default=None, help="The model before unlearning.")
    parser.add_argument("--forget-split", default="forget10", help="TOFU forget split: forget01, forget05, forget10.")
    parser.add_argument("--dataset", default="locuslab/TOFU", help="'locuslab/TOFU', 'bundled' or a TOFU directory.")
    parser.add_argument(
        "--attacks",
        default=None,
        help="Comma-separated: relearning, quantization, logit_lens, probing, mia (mia needs --holdout-split). "
        "Default: relearning,quantization,logit_lens,probing; none when --preset is given.",
    )
    parser.add_argument(
        "--preset",
        default=None,
        help="Comma-separated published attack settings (`list` prints them): zhang2024-quantization, "
        "open-unlearning, unlearn-smooth-muse-books, unlearn-smooth-muse-news, deeb-roger-retraining, "
        "lucki-finetuning (needs --corpus), probing-jailbreaks.",
    )
    parser.add_argument(
        "--corpus",
        default=None,
        help="Unrelated text for lucki-finetuning: a .txt file (one text per non-empty line) or a .json/.jsonl file "
        "of rows with a 'text' field.",
    )
    parser.add_argument("--holdout-split", default=None, help="TOFU holdout split for mia (e.g. holdout10).")
    parser.add_argument("--bits", default="4,8", help="Comma-separated quantization widths (4: NF4).")
    parser.add_argument(
        "--quantization-backend",
        choices=["auto", "ours", "bitsandbytes"],
        default="auto",
        help="bitsandbytes' round trip or ours (the same NF4 / absmax scheme in torch); auto: bitsandbytes on CUDA.",
    )
    parser.add_argument("--relearn-steps", type=int, default=10, help="Fine-tuning steps of the relearning attack.")
    parser.add_argument("--relearn-learning-rate", type=float, default=1e-4, help="Its learning rate.")
    parser.add_argument("--relearn-lora", action="store_true", help="Relearn with a LoRA adapter, not all weights.")
    parser.add_argument("--max-questions", type=int, default=None, help="At most this many forget questions.")
    parser.add_argument("--batch-size", type=int, default=16, help="Sequences per scoring forward pass.")
    parser.add_argument("--output-dir", default=None, help="Default: <model folder>/robustness or ./robustness.")
    parser.add_argument("--overwrite", action="store_true", help="Replace earlier results in the output dir.")
    parser.add_argument("--device", default=None, help="Device (default: cuda if available, else cpu).")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def _list_presets() -> str:
    from ..evaluation.robustness import PRESETS

    lines = []
    for preset in PRESETS.values():
        lines.append(f"{preset.name} ({preset.attack}): {preset.paper}\n  code: {preset.code}")
        lines.append("  fixed: " + ", ".join(f"{k}={v}" for k, v in preset.fixed.items()))
        if preset.scaled:
            lines.append("  scaled: " + "; ".join(f"{k}: {v}" for k, v in preset.scaled.items()))
    return "\n".join(lines)


def _read_corpus(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--corpus {path} is not a file.")
    if file.suffix in (".json", ".jsonl"):
        from datasets import load_dataset

        rows = load_dataset("json", data_files=str(file), split="train")
        if "text" not in rows.column_names:
            raise ValueError(f"--corpus {path} has no 'text' field; it has {rows.column_names}.")
        return [str(text) for text in rows["text"]]
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]


def run(args: argparse.Namespace) -> int:
    import torch

    from ..constants import ROBUSTNESS_DIR
    from ..data import load_tofu
    from ..evaluation.robustness import ROBUSTNESS_FILE, RobustnessEvaluator, format_robustness_table
    from ..hub import load_unlearned
    from ..io import check_model_path

    if args.preset == "list":
        print(_list_presets())
        return 0
    if args.model is None:
        raise ValueError("--model is required: the unlearned model, a folder or a Hub id.")
    presets = [name.strip() for name in args.preset.split(",") if name.strip()] if args.preset else []
    if presets:
        from ..evaluation.robustness import get_preset

        for name in presets:
            get_preset(name)  # a clear error, naming the valid presets, before any model is loaded
    corpus = _read_corpus(args.corpus) if args.corpus else None
    for option, path in (
        ("--model", args.model),
        ("--retain-model", args.retain_model),
        ("--target-model", args.target_model),
    ):
        check_model_path(path, option)
    output_dir = args.output_dir
    if output_dir is None:
        output_dir = Path(args.model) / ROBUSTNESS_DIR if Path(args.model).is_dir() else Path(ROBUSTNESS_DIR)
    if (Path(output_dir) / ROBUSTNESS_FILE).is_file() and not args.overwrite:
        raise ValueError(f"{output_dir} holds earlier robustness results. Pass --overwrite, or --output-dir.")
    try:
        bits = [int(b) for b in args.bits.split(",") if b.strip()]
    except ValueError as err:
        raise ValueError(f"--bits must be comma-separated integers, got {args.bits!r}.") from err
    forget = load_tofu(args.forget_split, data_dir=args.dataset)
    if args.max_questions is not None:
        forget = forget.select(range(min(args.max_questions, len(forget))))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_unlearned(args.model)
    others = {
        name: load_unlearned(path)[0].to(device).eval() if path else None
        for name, path in (("retain_model", args.retain_model), ("target_model", args.target_model))
    }
    holdout = load_tofu(args.holdout_split, data_dir=args.dataset) if args.holdout_split else None
    evaluator = RobustnessEvaluator(
        model.to(device).eval(),
        tokenizer,
        forget,
        holdout_dataset=holdout,
        attacks=None if args.attacks is None else [a.strip() for a in args.attacks.split(",") if a.strip()],
        preset=presets or None,
        corpus=corpus,
        bits=bits,
        quantization_backend=args.quantization_backend,
        relearn_steps=args.relearn_steps,
        relearn_learning_rate=args.relearn_learning_rate,
        relearn_lora=args.relearn_lora,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        **others,
    )
    results = evaluator.evaluate(output_dir)
    if Path(args.model).is_dir():  # which weights these results belong to (model cards check it)
        from ..io import FINGERPRINT_KEY, weights_fingerprint, write_json_atomic

        results[FINGERPRINT_KEY] = weights_fingerprint(args.model)
        write_json_atomic(Path(output_dir) / ROBUSTNESS_FILE, results)
    print(format_robustness_table(results))
    print(f"\nWritten to {Path(output_dir).resolve()}")
    return 0
