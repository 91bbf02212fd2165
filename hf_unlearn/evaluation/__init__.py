"""Evaluation for hf_unlearn: TOFU / MUSE metrics (runners are added alongside)."""

from __future__ import annotations

from .metrics import (
    IGNORE_INDEX,
    TOFU_UTILITY_KEYS,
    answer_probability,
    exact_memorization,
    extraction_strength,
    forget_quality,
    mia_auc,
    mia_loss,
    mia_min_k,
    mia_min_k_plus_plus,
    mia_zlib,
    min_k_plus_plus_stats,
    model_utility,
    normalized_option_probability,
    privleak,
    rouge_l,
    rouge_l_f1,
    rouge_l_recall,
    tofu_model_utility,
    truth_ratio_forget,
    truth_ratio_retain,
    truth_ratio_stat,
)

__all__ = [
    "IGNORE_INDEX",
    "TOFU_UTILITY_KEYS",
    "answer_probability",
    "exact_memorization",
    "extraction_strength",
    "forget_quality",
    "mia_auc",
    "mia_loss",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_zlib",
    "min_k_plus_plus_stats",
    "model_utility",
    "normalized_option_probability",
    "privleak",
    "rouge_l",
    "rouge_l_f1",
    "rouge_l_recall",
    "tofu_model_utility",
    "truth_ratio_forget",
    "truth_ratio_retain",
    "truth_ratio_stat",
]

# Runners, logs and plots (their heavier imports stay out of `import hf_unlearn.evaluation.metrics`).
from .callback import DEFAULT_TOFU_LOG_KEYS, TOFUEvalCallback, merge_tofu_logs  # noqa: E402
from .harness import DEFAULT_LM_EVAL_TASKS, run_lm_eval  # noqa: E402  (lm_eval itself is imported on use)
from .logs import (  # noqa: E402
    TOFU_LOG_FILES,
    TOFU_SPLITS,
    load_retain_truth_ratio_stats,
    read_tofu_logs,
    split_truth_ratio_stats,
    summarize_tofu_logs,
    tofu_summary_from_logs,
    write_tofu_logs,
)
from .muse import MUSE_METRICS, MUSEEvaluator, load_muse, load_muse_retain_auc  # noqa: E402
from .plots import plot_fq_vs_utility, plot_metrics_over_steps  # noqa: E402
from .tofu import TOFUEvaluator, evaluate_tofu_model, tofu_split_config  # noqa: E402

__all__ += [
    "DEFAULT_LM_EVAL_TASKS",
    "DEFAULT_TOFU_LOG_KEYS",
    "MUSE_METRICS",
    "MUSEEvaluator",
    "TOFU_LOG_FILES",
    "TOFU_SPLITS",
    "TOFUEvalCallback",
    "TOFUEvaluator",
    "evaluate_tofu_model",
    "load_muse",
    "load_muse_retain_auc",
    "load_retain_truth_ratio_stats",
    "merge_tofu_logs",
    "plot_fq_vs_utility",
    "plot_metrics_over_steps",
    "read_tofu_logs",
    "run_lm_eval",
    "split_truth_ratio_stats",
    "summarize_tofu_logs",
    "tofu_split_config",
    "tofu_summary_from_logs",
    "write_tofu_logs",
]
