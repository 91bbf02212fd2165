"""The names of the files hf_unlearn writes and reads, in one place (as peft's `utils/constants.py`)."""

from __future__ import annotations

#: The label of tokens that are not scored (prompt and padding), as in transformers and PyTorch's cross-entropy.
IGNORE_INDEX = -100

#: What was unlearned and how, beside a saved model (`UnlearningTrainer.save_model`); read by model cards.
UNLEARNING_STATE_FILE = "unlearning.json"
#: The losses' own tensors (e.g. RMU's random direction), in checkpoints and beside the final model.
LOSS_STATE_FILE = "loss_state.safetensors"
#: GRU's moving average of the retain gradient and its step counter, in checkpoints.
GRU_WEIGHTS_FILE = "gru_state.safetensors"
GRU_STATE_FILE = "gru_state.json"
#: A GRUN model's requests (configurations) and their intervention weights.
GRUN_CONFIG_FILE = "grun_config.json"
GRUN_WEIGHTS_FILE = "grun_interventions.safetensors"
#: peft's adapter configuration (marks an adapter folder).
ADAPTER_CONFIG_FILE = "adapter_config.json"
#: The summary an evaluation writes in its output folder (TOFU and MUSE), read by model cards and `push`.
EVAL_SUMMARY_FILE = "summary.json"
#: TOFU's aggregated per-question log (the benchmark's published layout).
AGGREGATED_LOG_FILE = "eval_log_aggregated.json"
#: The trainer's log (`log_history`: losses, `gru/*`, `grun/*`, learning rate, ...), one JSON object a line, written
#: at each log into the output folder whatever the save strategy.
TRAINING_LOG_FILE = "training_log.jsonl"
#: The evaluation callback's history and the G-effect callback's records, in the output folder.
EVAL_HISTORY_FILE = "eval_history.jsonl"
#: `stop_at_targets`: every target evaluation of a run, a JSON object a line (in the output folder).
TRAJECTORY_FILE = "trajectory.jsonl"
#: `stop_at_targets`: the model saved where a target is first met (`target-<metric>-<threshold>/`).
TARGET_CHECKPOINT_PATTERN = "target-*"
GEFFECT_FILE = "geffect.json"
#: Where `hf-unlearn robustness --model DIR` writes its results by default (`DIR/robustness/`).
ROBUSTNESS_DIR = "robustness"
#: What `hf-unlearn analyze --output/--plot` results in a model's folder are named (`geffect_npo.json`, ...), so that
#: overwriting the run moves them aside with the weights they were computed on.
ANALYZE_OUTPUT_PATTERNS = ("geffect*.json", "geffect*.png")
#: TOFU's refusal answers (bundled), for IDK-style losses.
REFUSALS_FILE = "idontknow.jsonl"

#: Files that restore training, not a model: never published as part of one.
TRAINING_STATE_FILES = ("trainer_state.json", GRU_WEIGHTS_FILE, GRU_STATE_FILE)
#: Suffixes of pickle-based files, which are never published or downloaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

#: What an earlier run leaves in an output folder: a folder holding one of the first is refused as the output of a
#: new run unless it overwrites (then all of them are moved aside) or resumes.
RUN_MARKERS = (
    UNLEARNING_STATE_FILE,
    GRUN_CONFIG_FILE,
    ADAPTER_CONFIG_FILE,
    "model.safetensors",
    "checkpoint-*",
    TARGET_CHECKPOINT_PATTERN,
)
RUN_ARTIFACTS = (
    *RUN_MARKERS,
    LOSS_STATE_FILE,
    GRUN_WEIGHTS_FILE,
    "adapter_model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "eval",
    "README.md",
    GEFFECT_FILE,
    EVAL_HISTORY_FILE,
    TRAJECTORY_FILE,
    TRAINING_LOG_FILE,
    ROBUSTNESS_DIR,
    *ANALYZE_OUTPUT_PATTERNS,
    "trainer_state.json",
    "training_args.bin",
)
