"""Evaluation for hf_unlearn: TOFU and MUSE evaluators and metrics, lm-eval, logs, plots, a training callback."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .logs import (
    TOFU_LOG_FILES,
    TOFU_SPLITS,
    load_retain_truth_ratio_stats,
    read_tofu_logs,
    split_truth_ratio_stats,
    summarize_tofu_logs,
    tofu_summary_from_logs,
    write_tofu_logs,
)
from .metrics import *  # noqa: F403  (the metric functions, listed in metrics.__all__)
from .metrics import __all__ as _METRIC_NAMES
from .targets import TARGET_METRICS, Target, parse_target, parse_targets

# The evaluators, the training callback and the plots import transformers and datasets (peft too, through
# transformers' trainer utilities) or matplotlib: they load on first use, so that reading logs (`hf-unlearn
# tofu-summary`) needs none of them.
_LAZY = {
    "DEFAULT_TOFU_LOG_KEYS": "callback",
    "TOFUEvalCallback": "callback",
    "merge_tofu_logs": "callback",
    "StopAtTargetCallback": "callback",
    "TRAJECTORY_FILE": "callback",
    "target_logs": "callback",
    "target_metrics": "callback",
    "DEFAULT_LM_EVAL_TASKS": "harness",
    "run_lm_eval": "harness",  # lm_eval itself is imported on use
    "MUSE_METRICS": "muse",
    "MUSE_RETRAIN_AUC": "muse",
    "MUSEEvaluator": "muse",
    "load_muse": "muse",
    "load_muse_retain_auc": "muse",
    "plot_fq_vs_utility": "plots",
    "plot_metrics_over_steps": "plots",
    "AnswerScores": "scoring",
    "answer_token_logprobs": "scoring",
    "score_answers": "scoring",
    "TOFUEvaluator": "tofu",
    "tofu_split_config": "tofu",
}

if TYPE_CHECKING:
    from .callback import (
        DEFAULT_TOFU_LOG_KEYS,
        TRAJECTORY_FILE,
        StopAtTargetCallback,
        TOFUEvalCallback,
        merge_tofu_logs,
        target_logs,
        target_metrics,
    )
    from .harness import DEFAULT_LM_EVAL_TASKS, run_lm_eval
    from .muse import MUSE_METRICS, MUSE_RETRAIN_AUC, MUSEEvaluator, load_muse, load_muse_retain_auc
    from .plots import plot_fq_vs_utility, plot_metrics_over_steps
    from .scoring import AnswerScores, answer_token_logprobs, score_answers
    from .tofu import TOFUEvaluator, tofu_split_config


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_METRIC_NAMES,
    "AnswerScores",
    "DEFAULT_LM_EVAL_TASKS",
    "DEFAULT_TOFU_LOG_KEYS",
    "MUSE_METRICS",
    "MUSE_RETRAIN_AUC",
    "MUSEEvaluator",
    "StopAtTargetCallback",
    "TARGET_METRICS",
    "TRAJECTORY_FILE",
    "Target",
    "TOFU_LOG_FILES",
    "TOFU_SPLITS",
    "TOFUEvalCallback",
    "TOFUEvaluator",
    "answer_token_logprobs",
    "load_muse",
    "load_muse_retain_auc",
    "load_retain_truth_ratio_stats",
    "merge_tofu_logs",
    "parse_target",
    "parse_targets",
    "plot_fq_vs_utility",
    "plot_metrics_over_steps",
    "read_tofu_logs",
    "run_lm_eval",
    "score_answers",
    "split_truth_ratio_stats",
    "summarize_tofu_logs",
    "target_logs",
    "target_metrics",
    "tofu_split_config",
    "tofu_summary_from_logs",
    "write_tofu_logs",
]
