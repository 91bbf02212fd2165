"""UnlearningConfig: trl's SFTConfig plus the unlearning objective."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import SFTConfig

from .data.formatting import DEFAULT_DATE_STRING
from .io import parse_json_object

#: Values of `UnlearningConfig.token_average` (see `hf_unlearn.losses.base.TOKEN_AVERAGES`).
TOKEN_AVERAGES = ("batch", "answer")
#: Values of `UnlearningConfig.smoothing` (None: off) and the `smoothing_kwargs` each accepts, with their defaults
#: (OPTML-Group/Unlearn-Smooth: `sam_rho` 0.1 in its WMDP configs; RSTrainer draws 3 samples of std `sam_rho`).
SMOOTHING_KWARGS = {
    "sam": {"rho": 0.1},
    "rs": {"sigma": 0.1, "num_samples": 3},
}


def _bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


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
            with `prompt`/`completion` or conversational `messages` columns are recognised as well, and raw text in
            the `dataset_text_field` column (trl's, default `"text"`): trained on whole, in chunks of `max_length`
            tokens (MUSE's and WMDP's corpora).
        overwrite_output_dir (`bool`, defaults to `False`): training into an `output_dir` that holds an earlier run
            (its `unlearning.json`, weights, GRUN or adapter files, checkpoints) is refused unless this is set, or
            the run resumes (`resume_from_checkpoint`). With it, the earlier run's files are moved aside to
            `<output_dir>.replaced-<time>` first, so that no old checkpoint, evaluation or GRUN file labels the new
            model. (transformers 5 dropped its own option of this name.)
        invalid_rows (`str`, defaults to `"error"`): a forget or retain row whose prompt or answer is missing (None,
            NaN, an empty CSV cell, a missing JSON key), not text or empty is refused with its row and column
            (`"error"`), or dropped with a warning that counts them (`"drop"`); never trained on as "None".
        refusal_answers_file (`str`, *optional*): one refusal answer a line, for losses that need refusals
            (defaults to TOFU's `idontknow.jsonl`, bundled).
        use_chat_template (`bool`, *optional*): None applies the tokenizer's chat template when it has one, and the
            plain `Question: ...\nAnswer: ...` template otherwise.
        token_average (`str`, defaults to `"batch"`): how losses average over answer tokens. `"batch"` pools the
            answer tokens of the whole batch (sum of the token losses / number of answer tokens), as HF's
            `outputs.loss` and every reference code (TOFU, open-unlearning, GRU, GRUN, G-effect) do; `"answer"`
            averages within each answer first, then over the batch, so every example weighs the same whatever its
            length. Losses defined on sequence sums (NPO, DPO) and SimNPO's per-answer mean NLL are unaffected.
        date_string (`str`, defaults to `"10 Apr 2025"`): the date that chat templates which print one (Llama 3.x's
            "Today Date") receive, so that prompts do not change with the day a model is trained or evaluated (the
            date open-unlearning pins). [`TOFUEvaluator`] uses the same default. None lets the template print today's.
        rectification (`str`, *optional*): `"gru"` turns on gradient rectification (GRU, arXiv 2503.09117) around
            any objective: once per optimizer step the gradient of the whole objective gamma * L_forget + alpha *
            L_retain is projected off the moving average of the gradient of the retain NLL when they conflict
            (negative dot product over all trainable parameters), and the optimizer steps on that, as the reference
            code (tmlr-group/GRU) does. The projection direction is always the retain NLL (also with `kl` or
            `embed_diff` as the retain loss, or `none`: GRU then needs retain data for the direction alone). Each
            micro-batch runs two backward passes when the retain loss is `nll` (its gradient is reused for the
            direction), three otherwise. Logs `gru/cosine`, `gru/projected`, `gru/objective_grad_norm`,
            `gru/retain_grad_norm` (the smoothed one) per step. Single device, DDP or FSDP2 (not DeepSpeed or FSDP1).
            None (or the strings `"none"` / `"null"`, e.g. `--rectification none` over a recipe's `gru`) is off.
        gru_projected (`str`, defaults to `"objective"`): what GRU projects. `"objective"`: the whole objective (the
            reference). `"forget"`: only gamma * L_forget, against the gradient of the configured retain loss, and
            the retain term is left out of the update (hf_unlearn's behaviour before 0.2; `alpha` then does not enter
            the update).
        gru_ema (`float`, defaults to `0.8`): weight m of the NEW retain gradient in its moving average,
            gbar_r <- m * g_r + (1 - m) * gbar_r, in (0, 1] (1 = no smoothing).
        gru_retain_weight (`float`, defaults to `0.0`): lambda of the reference's "+ce" variant: the optimizer steps
            on g_o' + lambda * g_r (g_r the current step's retain NLL gradient, added after the projection). >= 0.
        smoothing (`str`, *optional*): smoothness-enhanced unlearning of the forget term (Fan et al., ICML 2025,
            arXiv 2502.05374; OPTML-Group/Unlearn-Smooth), a defense against relearning. `"sam"`: per micro-batch the
            forget loss's gradient g at theta gives eps = rho * g / ||g|| (norm over all trainable parameters; under
            DDP of the averaged gradient, so every rank perturbs alike), and the forget term's gradient is taken at
            theta + eps, the weights restored exactly; the retain term stays at theta. `"rs"` (randomized smoothing):
            the forget term's gradient is the mean over `num_samples` draws of N(0, sigma^2) weight noise (the same
            noise on every rank, drawn from the seed, the step and the micro-batch). Any forget loss, peft, gradient
            accumulation, DDP; with `rectification="gru"` the smoothed objective's gradient is what GRU projects.
            Cost per micro-batch: SAM two forget passes and a copy of the trainable weights; RS `num_samples` forget
            passes. Logs `loss/forget` at the perturbed weights and, for SAM, `smoothing/forget_loss_unperturbed` and
            `smoothing/forget_grad_norm`. None (or `"none"` / `"null"`) is off.
        smoothing_kwargs (`dict`, *optional*): `{"rho": 0.1}` for `"sam"`; `{"sigma": 0.1, "num_samples": 3}` for
            `"rs"` (the reference's defaults); a dict or a JSON string.
        trainable_parameters (`str`, *optional*): a regular expression over parameter names (`re.search`); only
            the matching parameters train, all others are frozen. RMU's paper trains three MLPs, e.g.
            `r"layers\.(5|6|7)\.mlp\.down_proj"`. With peft it narrows the adapter's parameters. None trains
            everything that is trainable.
        stop_at_targets (`list[str]`, *optional*): forgetting targets such as `"forget_probability<=0.1"` or
            `"forget_quality>=0.05"` (a list, or comma-separated strings; metrics:
            `hf_unlearn.evaluation.TARGET_METRICS`). Every `target_eval_steps` optimizer steps (and at the last one)
            a cheap TOFU evaluation scores what the targets need (generation only for `forget_rougeL_recall`); the
            model is saved to `<output_dir>/target-<metric>-<threshold>/` at the first evaluation meeting each
            target, every evaluation is a line of `<output_dir>/trajectory.jsonl`, and training stops once every
            target is met ([`~hf_unlearn.evaluation.StopAtTargetCallback`]).
        target_eval_steps (`int`, defaults to `10`): evaluate the targets every this many optimizer steps.
        target_eval_kwargs (`dict`, *optional*): keyword arguments of the targets' [`TOFUEvaluator`] (`forget_split`,
            `data_dir`, `max_questions`, `batch_size`, `max_new_tokens`, ...) plus `retain_logs`, the retain model's
            TOFU logs (needed by a `forget_quality` target); a dict or a JSON string. When the targets are MUSE
            metrics (`knowmem_forget_rougeL_f1`, `verbmem_forget_rougeL_f1`, `knowmem_retain_rougeL_f1`), they go to
            the targets' [`MUSEEvaluator`] instead (`data_dir`, `dataset`, `max_items`, `batch_size`,
            `knowmem_max_new_tokens`, `verbmem_max_new_tokens`, ...; its `metrics` follow the targets).

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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into an output_dir that holds an earlier run (its files are moved aside first)."},
    )
    invalid_rows: str = field(
        default="error",
        metadata={"help": "Rows with a missing or non-text prompt/answer: 'error' or 'drop' (with a warning)."},
    )
    refusal_answers_file: str | None = field(
        default=None, metadata={"help": "File of refusal answers (one a line) for IDK-style losses."}
    )
    use_chat_template: bool | None = field(
        default=None, metadata={"help": "Apply the tokenizer's chat template (default: when it has one)."}
    )
    token_average: str = field(
        default="batch",
        metadata={"help": "Token averaging of the losses: 'batch' (pooled, as the reference codes) or 'answer'."},
    )
    date_string: str | None = field(
        default=DEFAULT_DATE_STRING,
        metadata={"help": "Date given to chat templates that print one (pinned: prompts do not change by the day)."},
    )
    rectification: str | None = field(
        default=None,
        metadata={"help": "Gradient rectification of the objective: 'gru', or none (also 'none'/'null': off)."},
    )
    gru_projected: str = field(
        default="objective",
        metadata={"help": "GRU: project the whole objective ('objective', the reference) or the forget term alone."},
    )
    gru_ema: float = field(
        default=0.8, metadata={"help": "GRU: weight of the new retain gradient in its moving average, in (0, 1]."}
    )
    gru_retain_weight: float = field(
        default=0.0, metadata={"help": "GRU: weight of the retain gradient added to the projected update (>= 0)."}
    )
    smoothing: str | None = field(
        default=None,
        metadata={"help": "Smoothness-enhanced unlearning of the forget term: 'sam', 'rs', or none (off)."},
    )
    smoothing_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Smoothing settings (dict or JSON string): sam {'rho': 0.1}; rs {'sigma': 0.1, 'num_samples': 3}."
        },
    )
    trainable_parameters: str | None = field(
        default=None,
        metadata={"help": "Regex over parameter names: train only the matching parameters (e.g. RMU's MLPs)."},
    )
    stop_at_targets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Forgetting targets, e.g. 'forget_probability<=0.1,forget_quality>=0.05': save the model where "
            "each is first met (target-<metric>-<threshold>/) and stop once all are."
        },
    )
    target_eval_steps: int = field(
        default=10, metadata={"help": "Evaluate the stop_at_targets metrics every this many optimizer steps."}
    )
    target_eval_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "TOFUEvaluator keyword arguments of the target evaluations (forget_split, data_dir, "
            "max_questions, ...) and retain_logs (for forget_quality), as a dict or a JSON string; for MUSE targets, "
            "MUSEEvaluator keyword arguments (data_dir, max_items, batch_size, ...)."
        },
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute activations in the backward pass to save memory (default: True, trl's). transformers "
            ">= 5.23 names it activation_checkpointing; either name works, without a deprecation warning."
        },
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
        self.forget_loss_kwargs = parse_json_object("forget_loss_kwargs", self.forget_loss_kwargs)
        self.retain_loss_kwargs = parse_json_object("retain_loss_kwargs", self.retain_loss_kwargs)
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True would strip the forget/retain columns the trainer batches; leave it False."
            )
        for name in ("gamma", "alpha", "learning_rate", "gru_ema", "gru_retain_weight"):
            _check_real(name, getattr(self, name))
        if self.gamma < 0 or self.alpha < 0:
            raise ValueError(
                f"gamma and alpha are loss weights and must be >= 0, got gamma={self.gamma}, alpha={self.alpha}."
            )
        if self.gamma == 0 and self.alpha == 0:
            raise ValueError("gamma = alpha = 0 weighs every loss by zero: the run would not change the model.")
        if self.invalid_rows not in ("error", "drop"):
            raise ValueError(f"invalid_rows must be 'error' or 'drop', got {self.invalid_rows!r}.")
        if self.token_average not in TOKEN_AVERAGES:
            raise ValueError(f"token_average must be one of {list(TOKEN_AVERAGES)}, got {self.token_average!r}.")
        self._check_rectification()
        self._check_smoothing()
        self._check_targets()
        if self.trainable_parameters is not None:
            try:
                re.compile(self.trainable_parameters)
            except re.error as err:
                raise ValueError(
                    f"trainable_parameters must be a regular expression over parameter names, got "
                    f"{self.trainable_parameters!r}: {err}."
                ) from err
        # trl 1.12-1.14 default loss_type to "chunked_nll" (None there), for which SFTTrainer replaces the model's
        # forward, for good, by one that returns no logits when given labels (nor a GRUN model's gate logits). The
        # unlearning losses compute their own, so it is "nll", trl >= 1.15's default (and what "chunked_nll" means
        # there).
        if self.loss_type in (None, "chunked_nll"):
            self.loss_type = "nll"
        # The trainer tokenizes forget/retain data itself, so trl's dataset preparation must be skipped.
        self.dataset_kwargs = {
            **parse_json_object("dataset_kwargs", self.dataset_kwargs),
            "skip_prepare_dataset": True,
        }
        self._resolve_checkpointing_names()
        # Pinned memory only helps copies to an accelerator; without one torch warns on every DataLoader.
        if self.dataloader_pin_memory and (self.use_cpu or not _accelerator_available()):
            self.dataloader_pin_memory = False
        super().__post_init__()

    def _resolve_checkpointing_names(self) -> None:
        """transformers >= 5.23 renamed `gradient_checkpointing(_kwargs)` to `activation_checkpointing(_kwargs)` and
        warns on the old names, which trl (default True) and transformers < 5.23 still use: hand the setting over
        under the name the installed transformers reads, so that recipes work on every supported version without a
        warning (an explicit `activation_checkpointing` wins, as in transformers)."""
        if hasattr(self, "activation_checkpointing"):
            for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
                new = old.replace("gradient", "activation", 1)
                if getattr(self, new) is None:
                    setattr(self, new, getattr(self, old))
                setattr(self, old, None)  # transformers mirrors the new name into the old one
            if self.activation_checkpointing is None:
                self.activation_checkpointing = True
        elif self.gradient_checkpointing is None:
            self.gradient_checkpointing = True

    def _check_targets(self) -> None:
        from .evaluation.targets import parse_targets

        self.target_eval_kwargs = parse_json_object("target_eval_kwargs", self.target_eval_kwargs)
        if isinstance(self.stop_at_targets, str):
            self.stop_at_targets = [self.stop_at_targets]
        if self.stop_at_targets is not None:
            # one target a string ("a<=1,b>=2" on the command line becomes two); errors name the allowed metrics
            self.stop_at_targets = [str(t) for t in parse_targets(self.stop_at_targets)] or None
        if isinstance(self.target_eval_steps, bool) or not isinstance(self.target_eval_steps, int):
            raise ValueError(f"target_eval_steps must be an integer >= 1, got {self.target_eval_steps!r}.")
        if self.target_eval_steps < 1:
            raise ValueError(f"target_eval_steps must be >= 1, got {self.target_eval_steps}.")

    def _check_smoothing(self) -> None:
        if isinstance(self.smoothing, str) and self.smoothing.strip().lower() in ("none", "null", ""):
            self.smoothing = None
        choices = [None, *SMOOTHING_KWARGS]
        if self.smoothing not in choices:
            raise ValueError(f"smoothing must be one of {choices}, got {self.smoothing!r}.")
        kwargs = parse_json_object("smoothing_kwargs", self.smoothing_kwargs)
        if self.smoothing is None:  # settings of a recipe's smoothing switched off with `--smoothing none`
            self.smoothing_kwargs = None
            return
        defaults = SMOOTHING_KWARGS[self.smoothing]
        unknown = sorted(set(kwargs) - set(defaults))
        if unknown:
            raise ValueError(
                f"smoothing={self.smoothing!r} got unknown smoothing_kwargs {unknown}; it accepts {sorted(defaults)}."
            )
        resolved = {**defaults, **kwargs}
        for key in ("rho", "sigma"):
            if key in resolved:
                _check_real(f"smoothing_kwargs[{key!r}]", resolved[key])
                if resolved[key] < 0:
                    raise ValueError(f"smoothing_kwargs[{key!r}] must be >= 0, got {resolved[key]}.")
                resolved[key] = float(resolved[key])
        if "num_samples" in resolved:
            n = resolved["num_samples"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"smoothing_kwargs['num_samples'] must be an integer >= 1, got {n!r}.")
        self.smoothing_kwargs = resolved
        if self.gamma == 0:
            raise ValueError(
                f"smoothing={self.smoothing!r} smooths the forget term, which gamma=0 leaves out of the objective."
            )
        if self.fp16:
            raise ValueError(
                f"smoothing={self.smoothing!r} does not support fp16=True: the perturbation comes from a loss-scaled "
                "gradient that can overflow before the scaler skips the step. Use bf16=True or float32."
            )

    def _check_rectification(self) -> None:
        # On the command line and in YAML strings, "none" / "null" switch a recipe's GRU off (argparse gives strings).
        if isinstance(self.rectification, str) and self.rectification.strip().lower() in ("none", "null", ""):
            self.rectification = None
        choices = [None, "gru"]
        if self.rectification not in choices:
            raise ValueError(f"rectification must be one of {choices}, got {self.rectification!r}.")
        if not 0.0 < self.gru_ema <= 1.0:
            raise ValueError(
                f"gru_ema is the weight of the new retain gradient in its moving average and must be in (0, 1], got "
                f"{self.gru_ema} (1 disables the smoothing)."
            )
        if self.gru_retain_weight < 0:
            raise ValueError(f"gru_retain_weight must be >= 0, got {self.gru_retain_weight}.")
        if self.gru_projected not in ("objective", "forget"):
            raise ValueError(f"gru_projected must be 'objective' or 'forget', got {self.gru_projected!r}.")
        if self.rectification is None:
            return
        if self.fp16:
            raise ValueError(
                "rectification='gru' does not support fp16=True: the dynamic loss scale would change between the "
                "steps that the retain-gradient moving average mixes. Use bf16=True or float32."
            )
        if "lomo" in str(self.optim).lower():
            raise ValueError(
                f"rectification='gru' cannot be used with optim={self.optim!r}: LOMO optimizers update the weights "
                "during the backward pass, before the gradients can be rectified. Choose another optimizer."
            )


def _check_real(name: str, value: Any) -> None:
    """A finite real number (not a string, a list or a bool), or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a number, got {type(value).__name__} {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value}.")


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()
