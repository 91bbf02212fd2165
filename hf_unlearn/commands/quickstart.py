"""`hf-unlearn quickstart`: the offline demo on the bundled TOFU subset."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "quickstart"
HELP = "Offline demo: teach a tiny model TOFU authors, then unlearn two."


def __getattr__(name: str) -> Any:
    # DESCRIPTION is the demo's docstring; the demo imports torch, so only a command that shows it imports it.
    if name == "DESCRIPTION":
        from ..demo import quickstart

        return quickstart.__doc__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written and each option's default after its help (options without a value to show, None or
    a flag, say in their help what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..demo.quickstart import BUNDLED, METHODS, TOFU_RETAIN_OF
    from ..demo.tiny import DEMO_THREADS

    parser.formatter_class = _HelpFormatter
    parser.add_argument("--output-dir", default="quickstart_output", help="Where models, logs and results go.")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"Comma-separated methods among {', '.join(METHODS)}."
    )
    parser.add_argument("--model", default=None, help="A TOFU-fine-tuned model id/path (default: train a tiny one).")
    parser.add_argument("--retain-model", default=None, help="With --model: a model trained without the forget set.")
    parser.add_argument(
        "--dataset", default=BUNDLED, help="'bundled' (offline subset), 'locuslab/TOFU' (the Hub) or a TOFU directory."
    )
    parser.add_argument(
        "--forget-split", default="forget01", choices=sorted(TOFU_RETAIN_OF), help="The TOFU split to forget."
    )
    parser.add_argument("--finetune-epochs", type=int, default=30, help="Epochs teaching the tiny models their data.")
    parser.add_argument("--unlearn-steps", type=int, default=10, help="Optimizer steps of each unlearning run.")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="Unlearning learning rate.")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Generation length for ROUGE (TOFU: 200).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the tiny models and of unlearning.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch threads. Default: {DEMO_THREADS} for the tiny models unless OMP_NUM_THREADS is set (thread "
        "hand-offs dominate their steps, and a busy core stalls every step: with one of 2 cores busy, --methods grun "
        "--finetune-epochs 3 took 518 s on 2 threads, 63 s on 1); torch's default with --model.",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an earlier quickstart's results.")


def run(args: argparse.Namespace) -> None:
    from ..demo import quickstart
    from ..demo.tiny import set_demo_threads

    threads = set_demo_threads(args.threads, tiny=args.model is None)
    print(f"Using {threads} torch thread(s) (--threads to change).")
    quickstart.run_quickstart(
        output_dir=args.output_dir,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        finetune_epochs=args.finetune_epochs,
        unlearn_steps=args.unlearn_steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        progress=not args.no_progress,
        model=args.model,
        retain_model=args.retain_model,
        dataset=args.dataset,
        forget_split=args.forget_split,
        max_new_tokens=args.max_new_tokens,
        overwrite=args.overwrite,
    )
