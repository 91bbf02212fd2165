"""Data: TOFU loading, prompt/answer formatting and forget/retain batching."""

from .collator import ForgetRetainCollator, pad_examples
from .formatting import DEFAULT_DATE_STRING, PLAIN_PROMPT_TEMPLATE, ColumnLayout, PromptEncoder
from .preparation import prepare_dataset
from .source import DataSource, data_source, with_source
from .tofu import (
    BUNDLED,
    BUNDLED_TOFU_DIR,
    TOFU_HUB_ID,
    available_tofu_configs,
    load_refusal_answers,
    load_tofu,
    read_jsonl,
)

__all__ = [
    "BUNDLED",
    "BUNDLED_TOFU_DIR",
    "PLAIN_PROMPT_TEMPLATE",
    "TOFU_HUB_ID",
    "ColumnLayout",
    "DataSource",
    "ForgetRetainCollator",
    "PromptEncoder",
    "DEFAULT_DATE_STRING",
    "available_tofu_configs",
    "data_source",
    "load_refusal_answers",
    "load_tofu",
    "pad_examples",
    "prepare_dataset",
    "read_jsonl",
    "with_source",
]
