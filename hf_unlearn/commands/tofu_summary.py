"""`hf-unlearn tofu-summary`: the TOFU summary (model utility, forget quality, ...) from per-question logs alone."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

NAME = "tofu-summary"
HELP = "Compute the TOFU summary (model utility, forget quality) from evaluation logs and print it as JSON."
DESCRIPTION = """\
Compute the TOFU summary of a model from its per-question evaluation logs, without loading any model, and print
it as JSON on stdout: model_utility, forget_quality (null without --retain-logs), the nine utility components
(probability, ROUGE-L recall and truth ratio on retain, real_authors and world_facts), the forget-split metrics
and the number of questions per split.

--logs takes a directory written by TOFUEvaluator, TOFU's published logs (eval_log.json, eval_log_forget.json,
eval_real_author_wo_options.json, eval_real_world_wo_options.json) or an eval_log_aggregated.json file.
--retain-logs takes the retain model's logs in any of those forms (they must hold the forget split), or
open-unlearning's TOFU_EVAL.json.

    hf-unlearn tofu-summary --logs runs/npo/eval --retain-logs runs/retain90/eval
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logs", required=True, metavar="DIR", help="the evaluated model's TOFU logs")
    parser.add_argument(
        "--retain-logs",
        default=None,
        metavar="DIR",
        help="the retain model's TOFU logs, for forget quality (omitted: forget_quality is null)",
    )
    parser.add_argument("--indent", type=int, default=2, help="JSON indentation (0: one line)")


def _json_safe(value: Any) -> Any:
    """Replace NaN / infinities (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    from ..evaluation.logs import TOFU_LOG_FILES, read_tofu_logs, tofu_summary_from_logs

    if "forget" not in read_tofu_logs(args.logs):
        raise ValueError(
            f"{args.logs} holds no forget-split log ({TOFU_LOG_FILES['forget']}): the forget metrics (probability, "
            "ROUGE-L, truth ratio, forget quality) are missing. Evaluate the forget split too."
        )
    try:
        summary = tofu_summary_from_logs(args.logs, args.retain_logs)
    except (KeyError, TypeError, IndexError) as err:
        # Values of the wrong shape inside otherwise valid JSON (e.g. a number where TOFU stores a list).
        raise ValueError(f"malformed TOFU logs ({type(err).__name__}: {err})") from err
    json.dump(_json_safe(summary), sys.stdout, indent=args.indent or None, allow_nan=False)
    sys.stdout.write("\n")
    return 0
