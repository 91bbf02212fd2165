"""`hf-unlearn sequential`: a sequence of deletion requests, each unlearned from the previous request's model."""

from __future__ import annotations

import argparse

NAME = "sequential"
HELP = "Unlearn a sequence of deletion requests, one after another, measuring every request after each one."
DESCRIPTION = """\
Run a sequence of deletion requests described by a YAML config (see examples/sequential/): the forget data cut into
requests (TOFU forget05: 5 requests of 2 authors), each unlearned from the model the previous one left (full weights
carried over, LoRA merged after each request, GRUN one gated module per request) until it meets its target on its own
questions or its step budget; after each request, the forget metrics of every request, the cumulative forget quality
against the retain model, the utility and the cost. Writes results.json, report.md and sequential.png to --output-dir.

With `data: {source: muse}` the requests are MUSE-News's sustainability folds (raw/forget, then sust/forget_2 to
sust/forget_4), measured after each by MUSE's KnowMem / VerbMem and every fold's NLL
(examples/sequential/muse_news_sust.yaml).

A killed sequence resumes at the first request without a saved result: rerun the same command. With --workers N
(or `workers:` in the config), N (method, seed) sequences run at once, each in its own process (one GPU each).

    hf-unlearn sequential --config examples/sequential/tofu_forget05_llama32_1b.yaml --dry-run
    hf-unlearn sequential --config examples/sequential/tofu_forget05_llama32_1b.yaml --output-dir sequential_out
    hf-unlearn sequential --config examples/sequential/tofu_forget05_llama32_1b.yaml --output-dir sequential_out \\
        --report-only
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the sequence's YAML config")
    parser.add_argument(
        "--output-dir", default="sequential_output", metavar="DIR", help="where requests and results go"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (requests, steps, evaluations) and resolve every name; train nothing",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="judge the claims again and rebuild report.md and the plot from --output-dir's results.json",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="(method, seed) sequences run at once (overrides the config's)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..sequential.config import SequentialConfig

    config = SequentialConfig.from_yaml(args.config)
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}.")
        config.workers = args.workers
    if args.dry_run:
        from ..sequential.plan import format_plan

        print(format_plan(config))
        return 0
    if args.report_only:
        from ..sequential.report import write_report
        from ..sequential.runner import rejudge

        print(write_report(rejudge(args.output_dir), args.output_dir))
        return 0
    from ..compare.plan import resolve
    from ..sequential.runner import run_sequence

    resolve(config.compare_config())  # a misspelt loss or a missing file fails now, not after the first request
    run_sequence(config, args.output_dir, progress=not args.no_progress)
    return 0
