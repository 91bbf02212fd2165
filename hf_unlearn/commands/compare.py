"""`hf-unlearn compare`: methods compared at matched forgetting, from a config file."""

from __future__ import annotations

import argparse

NAME = "compare"
HELP = "Compare unlearning methods at matched forgetting (learning-rate rule, seeds, verdicts) from a config file."
DESCRIPTION = """\
Run a matched-forgetting comparison described by a YAML config (see examples/compare/): every method over its
learning-rate grid with the first seed, evaluated cheaply every few steps until it meets each forgetting target;
the full TOFU evaluation where each target is first met; one rule picks each method's rate per target; the other
seeds repeat it; the claims are judged over paired seeds. Writes results.json, report.md and plots to --output-dir.

A killed comparison resumes: rerun the same command (finished runs are reused by fingerprint).

    hf-unlearn compare --config examples/compare/tofu_mini_quick.yaml --dry-run
    hf-unlearn compare --config examples/compare/tofu_mini_quick.yaml --output-dir compare_out
    hf-unlearn compare --config examples/compare/tofu_mini_quick.yaml --output-dir compare_out --report-only
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the comparison's YAML config")
    parser.add_argument("--output-dir", default="compare_output", metavar="DIR", help="where runs and results go")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (runs, steps, evaluations) and resolve every name; train nothing",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="judge the claims again and rebuild report.md and the plots from --output-dir's results.json",
    )
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (overrides the config's workers)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..compare.config import CompareConfig

    config = CompareConfig.from_yaml(args.config)
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}.")
        config.workers = args.workers
    if args.dry_run:
        from ..compare.plan import format_plan

        print(format_plan(config))
        return 0
    if args.report_only:
        from ..compare.report import write_report
        from ..compare.runner import rejudge

        text = write_report(rejudge(args.output_dir), args.output_dir)
        print(text)
        return 0
    from ..compare.plan import resolve
    from ..compare.runner import run_comparison

    resolve(config)  # a misspelt loss or a missing file fails now, not after the first runs
    run_comparison(config, args.output_dir, progress=not args.no_progress)
    return 0
