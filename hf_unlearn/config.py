"""UnlearningConfig: trl's SFTConfig plus the unlearning objective."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import SFTConfig


def _bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def _parse_kwargs(name: str, value: Any) -> dict[str, Any]:
    """Accept a dict or a JSON string (from the command line)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"`{name}` must be a dict or a JSON object string, got {value!r}: {err.msg}.") from err
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a dict of hyperparameters, got {type(value).__name__}.")
    return dict(value)


@dataclass
class UnlearningConfig(SFTConfig):
    r"""Configuration of [`UnlearningTrainer`]: every [`~trl.SFTConfig`] / `TrainingArguments` option, plus the
    unlearning objective L = gamma * L_forget + alpha * L_retain.

    Parameters:
        forget_loss (`str`, defaults to `"ga"`): a registered forget loss (`hf_unlearn.list_losses("forget")`).
        forget_loss_kwargs (`dict`, *optional*): its hyperparameters, e.g. `{"beta": 0.1}` for NPO.
        retain_loss (`str`, defaults to `"nll"`): a registered retain loss (`"nll"`, `"kl"`, `"none"`, ...).
        retain_loss_kwargs (`dict`, *optional*): its hyperparameters.
        gamma (`float`, defaults to `1.0`): weight of the forget loss.
        alpha (`float`, defaults to `1.0`): weight of the retain loss.
        question_key / answer_key (`str`): column names of question/answer datasets (TOFU's by default). Datasets
            with `prompt`/`completion` or conversational `messages` columns are recognised as well.
        refusal_answers_file (`str`, *optional*): one refusal answer a line, for losses that need refusals
            (defaults to TOFU's `idontknow.jsonl`, bundled).
        use_chat_template (`bool`, *optional*): None applies the tokenizer's chat template when it has one, and the
            plain `Question: ...\nAnswer: ...` template otherwise.

    Differences from `SFTConfig` defaults: `learning_rate` 1e-5 (TOFU's), `bf16` only where the hardware supports it,
    `remove_unused_columns=False` (batches hold forget and retain examples), `logging_steps` 1 and `save_only_model`
    left to the user.
    """

    forget_loss: str = field(default="ga", metadata={"help": "Registered forget loss, e.g. ga, npo, idk."})
    forget_loss_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Hyperparameters of the forget loss, as a dict or a JSON string."}
    )
    retain_loss: str = field(default="nll", metadata={"help": "Registered retain loss: nll, kl, none, ..."})
    retain_loss_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Hyperparameters of the retain loss, as a dict or a JSON string."}
    )
    gamma: float = field(default=1.0, metadata={"help": "Weight of the forget loss."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain loss."})
    question_key: str = field(default="question", metadata={"help": "Question column of question/answer datasets."})
    answer_key: str = field(default="answer", metadata={"help": "Answer column of question/answer datasets."})
    refusal_answers_file: str | None = field(
        default=None, metadata={"help": "File of refusal answers (one a line) for IDK-style losses."}
    )
    use_chat_template: bool | None = field(
        default=None, metadata={"help": "Apply the tokenizer's chat template (default: when it has one)."}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial learning rate (TOFU uses 1e-5)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X optimizer steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: batches carry forget and retain examples."}
    )

    def __post_init__(self):
        # trl turns bf16 on by default, which fails on hardware without bf16: default it to what the hardware has,
        # and give an actionable error when it was asked for explicitly.
        if self.bf16 is None:
            self.bf16 = _bf16_supported() and not self.fp16
        elif self.bf16 and not (_bf16_supported() or self.use_cpu):
            raise ValueError(
                "bf16=True was requested, but this machine has no bf16-capable accelerator (no CUDA GPU with bf16 "
                "support or XPU found). Set bf16=False to train in float32, or use_cpu=True for CPU bf16 autocast."
            )
        self.forget_loss_kwargs = _parse_kwargs("forget_loss_kwargs", self.forget_loss_kwargs)
        self.retain_loss_kwargs = _parse_kwargs("retain_loss_kwargs", self.retain_loss_kwargs)
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True would strip the forget/retain columns the trainer batches; leave it False."
            )
        if self.gamma < 0 or self.alpha < 0:
            raise ValueError(
                f"gamma and alpha are loss weights and must be >= 0, got gamma={self.gamma}, alpha={self.alpha}."
            )
        # The trainer tokenizes forget/retain data itself, so trl's dataset preparation must be skipped.
        self.dataset_kwargs = {**_parse_kwargs("dataset_kwargs", self.dataset_kwargs), "skip_prepare_dataset": True}
        super().__post_init__()
