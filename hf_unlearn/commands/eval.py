"""`hf-unlearn eval`: TOFU or MUSE evaluation of a saved or published unlearned model (full weights, peft adapter
or GRUN).

    hf-unlearn eval --model runs/tofu_forget10_npo --forget-split forget10 --retain-logs retain90_logs/
    hf-unlearn eval --model me/llama-tofu-npo --output-dir eval_npo
    hf-unlearn eval --model runs/muse_news_npo --benchmark muse --retain-logs muse_retain_eval/summary.json
    hf-unlearn eval --model runs/muse_news_npo --benchmark muse --retain-logs news

Writes per-question logs (TOFU: in the layout of TOFU's published logs), `summary.json`, and prints the summary as
JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "eval"
HELP = "Evaluate an unlearned model (folder or Hub id) on TOFU or MUSE; writes per-question logs and a summary."
DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="The unlearned model: a folder or a Hub id.")
    parser.add_argument("--base-model", default=None, help="Base model of an adapter/GRUN folder (default: recorded).")
    parser.add_argument("--revision", default=None, help="Hub revision of --model.")
    parser.add_argument("--benchmark", choices=["tofu", "muse"], default="tofu", help="What to evaluate on.")
    parser.add_argument("--forget-split", default="forget10", help="TOFU forget split: forget01, forget05, forget10.")
    parser.add_argument(
        "--dataset",
        default=None,
        help="TOFU: 'locuslab/TOFU' (the Hub, default), 'bundled' or a TOFU-layout directory. MUSE: "
        "'muse-bench/MUSE-News' (default), 'muse-bench/MUSE-Books' or a local directory in their layout.",
    )
    parser.add_argument(
        "--retain-logs",
        default=None,
        help="The retain model's results. TOFU: its logs directory (forget quality). MUSE (PrivLeak): its "
        "summary.json (or the folder holding it), 'news' / 'books' for MUSE's published retrain AUC, or its Min-K%% "
        "AUC as a number with --retain-auc-convention.",
    )
    parser.add_argument(
        "--retain-auc-convention",
        choices=["muse", "hf_unlearn"],
        default=None,
        help="MUSE: how to read a --retain-logs number: 'muse' (MUSE's tables, e.g. 0.4772; 0 = members "
        "recognised) or 'hf_unlearn' (our privleak_auc, open-unlearning's mia_min_k; 1 = members recognised).",
    )
    parser.add_argument("--muse-metrics", default="knowmem,verbmem,privleak", help="MUSE: comma-separated metrics.")
    parser.add_argument("--output-dir", default=None, help="Where logs go (default: <model folder>/eval or ./eval).")
    parser.add_argument("--overwrite", action="store_true", help="Replace the results already in the output dir.")
    parser.add_argument("--splits", default="retain,real_authors,world_facts,forget", help="Comma-separated splits.")
    parser.add_argument(
        "--max-questions", type=int, default=None, help="At most this many questions (MUSE: items) per split."
    )
    parser.add_argument("--batch-size", type=int, default=32, help="Sequences per scoring forward pass.")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="TOFU: greedy generation length (200).")
    parser.add_argument("--device", default=None, help="Device to evaluate on (default: cuda if available, else cpu).")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..constants import EVAL_SUMMARY_FILE
    from ..hub import load_unlearned
    from ..io import FINGERPRINT_KEY, record_weights_fingerprint

    output_dir = args.output_dir
    if output_dir is None:
        output_dir = Path(args.model) / "eval" if Path(args.model).is_dir() else Path("eval")
    if (Path(output_dir) / EVAL_SUMMARY_FILE).is_file() and not args.overwrite:
        raise ValueError(
            f"{output_dir} holds earlier evaluation results. Pass --overwrite to replace them, or --output-dir."
        )
    if args.benchmark == "muse" and args.retain_logs is not None:  # a bad retain AUC fails before loading the model
        from ..evaluation.muse import load_muse_retain_auc

        load_muse_retain_auc(*_muse_retain_auc(args))
    model, tokenizer = load_unlearned(args.model, base_model=args.base_model, revision=args.revision)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    if args.benchmark == "muse":
        summary = _evaluate_muse(model, tokenizer, args, output_dir)
    else:
        summary = _evaluate_tofu(model, tokenizer, args, output_dir)
    if Path(args.model).is_dir():  # which weights these results belong to (cards and push check it)
        summary[FINGERPRINT_KEY] = record_weights_fingerprint(output_dir, args.model)
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate_tofu(model, tokenizer, args: argparse.Namespace, output_dir) -> dict:
    from ..evaluation.tofu import TOFUEvaluator

    return TOFUEvaluator(
        model,
        tokenizer,
        forget_split=args.forget_split,
        data_dir=args.dataset or "locuslab/TOFU",
        splits=[s.strip() for s in args.splits.split(",") if s.strip()],
        max_questions=args.max_questions,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress,
    ).evaluate(output_dir=output_dir, retain_logs=args.retain_logs)


def _evaluate_muse(model, tokenizer, args: argparse.Namespace, output_dir) -> dict:
    from ..evaluation.muse import DEFAULT_MUSE_DATASET, MUSEEvaluator

    dataset = args.dataset or DEFAULT_MUSE_DATASET
    local = Path(dataset).is_dir()
    retain_auc, convention = _muse_retain_auc(args)
    evaluator = MUSEEvaluator(
        model,
        tokenizer,
        metrics=[m.strip() for m in args.muse_metrics.split(",") if m.strip()],
        dataset=DEFAULT_MUSE_DATASET if local else dataset,
        data_dir=dataset if local else None,
        batch_size=args.batch_size,
        max_items=args.max_questions,
        progress=not args.no_progress,
    )
    return evaluator.evaluate(output_dir, retain_auc=retain_auc, retain_auc_convention=convention)


def _muse_retain_auc(args: argparse.Namespace) -> tuple[float | str | None, str | None]:
    """`(retain_auc, convention)` for MUSEEvaluator.evaluate: --retain-logs as a number when it reads as one (else a
    corpus name, file or folder), and --retain-auc-convention."""
    retain_auc = args.retain_logs
    if retain_auc is not None:
        try:
            retain_auc = float(retain_auc)
        except ValueError:  # a corpus name, a file or a folder
            pass
    return retain_auc, args.retain_auc_convention
