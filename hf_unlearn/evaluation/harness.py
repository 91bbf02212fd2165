"""General-capability and hazard benchmarks through EleutherAI's lm-evaluation-harness (the `lm-eval` extra).

[`run_lm_eval`] hands a model that is already in memory (a transformers model, a peft model, or any
`torch.nn.Module` with a transformers-style `forward` / `generate`, such as a GRUN-wrapped model) to lm-eval's
`HFLM(pretrained=<model instance>, tokenizer=<tokenizer>)` and runs tasks on it, by default WMDP (the hazardous
knowledge benchmark unlearning methods such as RMU target) and MMLU (general knowledge). Nothing is saved or reloaded.

    pip install "hf-unlearn[lm-eval]"
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from .model_io import check_vocabulary, model_device, resolve_pad_token_id
from .scoring import score_answers

__all__ = ["DEFAULT_LM_EVAL_TASKS", "as_hflm_model", "make_hflm", "run_lm_eval"]

#: The tasks [`run_lm_eval`] runs by default: WMDP (bio, chem, cyber) and MMLU (57 subjects), both zero-shot
#: multiple choice scored by log-likelihood (the `acc` metric).
DEFAULT_LM_EVAL_TASKS: tuple[str, ...] = ("wmdp", "mmlu")
_INSTALL_HINT = 'pip install "hf-unlearn[lm-eval]"'


def _import_lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"run_lm_eval needs EleutherAI's lm-evaluation-harness, which is not installed: {_INSTALL_HINT} "
            f"(or pip install lm-eval). Import error: {err}"
        ) from err
    return lm_eval


class _HFLMModel(torch.nn.Module):
    """What lm-eval's `HFLM` needs of a pre-built model (`config`, `device`, `forward(input_ids).logits`,
    `generate`, `tie_weights`), around a module that lacks some of it. The wrapped module stays a submodule, so
    `eval()` / `train()` reach it."""

    def __init__(self, module: torch.nn.Module, config: PretrainedConfig):
        super().__init__()
        self.module = module
        self.config = config

    @property
    def device(self) -> torch.device:
        return model_device(self.module)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        out = self.module(input_ids=input_ids, **kwargs)
        if isinstance(out, torch.Tensor):
            return SimpleNamespace(logits=out)
        if isinstance(out, (tuple, list)):
            return SimpleNamespace(logits=out[0])
        return out

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not callable(getattr(self.module, "generate", None)):
            raise TypeError(
                f"{type(self.module).__name__} has no `generate` method, which lm-eval's generative tasks need; "
                "multiple-choice tasks (WMDP, MMLU) only need the forward pass."
            )
        return self.module.generate(*args, **kwargs)

    def tie_weights(self) -> None:  # lm-eval calls it; the wrapped module's weights are what they are
        return None


def _find_config(model: torch.nn.Module) -> PretrainedConfig | None:
    """The transformers config of the model or of the model it wraps (peft's base model, pyreft's `.model`)."""
    candidates = [model]
    if hasattr(model, "get_base_model"):
        candidates.append(model.get_base_model())
    candidates += [getattr(model, name, None) for name in ("model", "base_model", "module")]
    for candidate in candidates:
        config = getattr(candidate, "config", None)
        if isinstance(config, PretrainedConfig):
            return config
    return None


def as_hflm_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself when lm-eval's `HFLM` can take it as is (transformers and peft models), otherwise a thin
    wrapper providing `config`, `device`, `tie_weights` and `.logits` outputs."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"run_lm_eval needs a torch.nn.Module, got {type(model).__name__}")
    has_all = (
        isinstance(getattr(model, "config", None), PretrainedConfig)
        and isinstance(getattr(model, "device", None), torch.device)
        and callable(getattr(model, "tie_weights", None))
    )
    if has_all:
        return model
    return _HFLMModel(model, _find_config(model) or PretrainedConfig())


def _scoring_hflm(hflm_class: type) -> type:
    """An `HFLM` subclass whose log-likelihoods come from hf_unlearn's one scoring path
    ([`~hf_unlearn.evaluation.scoring.score_answers`]), for every model kind: lm-eval scores `context +
    continuation` in one forward pass without labels, where a GRUN model could not tell where the context ends.
    Contexts are truncated from the left to the model's length as lm-eval does; the continuation's log-likelihood
    and whether it is the greedy continuation are returned, as lm-eval's own method returns them."""

    class ScoringHFLM(hflm_class):
        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
            pairs = []
            for _, context, continuation in requests:
                ids = (list(context) + list(continuation))[-(self.max_length + 1) :]
                pairs.append((ids[: len(ids) - len(continuation)], list(continuation)))
            batch_size = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 1)
            scores = score_answers(
                self.model,
                pairs,
                pad_token_id=resolve_pad_token_id(self.tokenizer, "run_lm_eval"),
                batch_size=int(batch_size),
                progress=not disable_tqdm and self.rank == 0,
                desc="lm-eval: log-likelihoods",
            )
            results = []
            for request, logprobs, greedy in zip(requests, scores.logprobs, scores.greedy):
                answer = (float(logprobs.sum()), bool(greedy))
                if request[0] is not None:
                    self.cache_hook.add_partial("loglikelihood", request[0], answer)
                results.append(answer)
            return results

    return ScoringHFLM


def make_hflm(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 8,
    max_length: int | None = None,
    **hflm_kwargs: Any,
) -> Any:
    """lm-eval's `HFLM` around an in-memory model (see [`run_lm_eval`]). The tokenizer is copied first when
    lm-eval would otherwise add a pad token to it. Log-likelihoods go through hf_unlearn's one scoring path, so that
    a GRUN model's edit lands on the last context token."""
    _import_lm_eval()
    from lm_eval.models.huggingface import HFLM

    check_vocabulary(model, tokenizer)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tokenizer.pad_token_id is None:
        tokenizer = copy.deepcopy(tokenizer)  # lm-eval sets a pad token on the tokenizer it is given
    wrapped = as_hflm_model(model)
    return _scoring_hflm(HFLM)(
        pretrained=wrapped,
        tokenizer=tokenizer,
        backend="causal",
        batch_size=int(batch_size),
        max_length=max_length,
        **hflm_kwargs,
    )


def _flatten_metrics(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """`{task: {"acc,none": 0.3, "alias": ...}}` -> `{task: {"acc": 0.3}}` (numbers only; filter suffix dropped
    when it is lm-eval's default `none`)."""
    summary: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        clean = {}
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or key in ("sample_len", "sample_count"):
                continue
            name, _, filter_name = key.partition(",")
            clean[name if filter_name in ("", "none") else f"{name},{filter_name}"] = float(value)
        summary[task] = clean
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def run_lm_eval(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str] = DEFAULT_LM_EVAL_TASKS,
    *,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    limit: int | float | None = None,
    max_length: int | None = None,
    include_path: str | Path | Sequence[str | Path] | None = None,
    include_defaults: bool = True,
    output_dir: str | Path | None = None,
    return_raw: bool = False,
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Run lm-evaluation-harness tasks on an in-memory model.

    Args:
        model: a transformers model, a peft model, or any `torch.nn.Module` whose `forward(input_ids)` returns
            `logits` (an object with `.logits`, a tuple whose first item is the logits, or the logits tensor)
            and, for generative tasks, that has `generate`. A GRUN model works too: it is told where each
            context ends (the one scoring path). Left in the train/eval mode it had.
        tokenizer: its tokenizer (not modified).
        tasks: lm-eval task or group names (default: `wmdp` and `mmlu`), or names of tasks found under
            `include_path`.
        num_fewshot: few-shot examples per prompt (None: each task's default).
        batch_size: sequences per forward pass.
        limit: evaluate only the first N documents of each task (a float < 1: that fraction); for quick checks,
            not for reporting.
        max_length: the model's context length (None: lm-eval reads it from the config).
        include_path: directories (or YAML files) of custom task configurations.
        include_defaults: also index lm-eval's built-in tasks (False is faster when only custom tasks run).
        output_dir: where to write `lm_eval_results.json` (lm-eval's results, configs and versions) and
            `lm_eval_summary.json`; None writes nothing.
        return_raw: return lm-eval's full results dict instead of the summary.
        **evaluate_kwargs: passed on to `lm_eval.simple_evaluate` (`gen_kwargs`, `apply_chat_template`,
            `random_seed`, ...).

    Returns `{task or group: {metric: value}}` (e.g. `{"wmdp": {"acc": 0.31, "acc_stderr": 0.01}, ...}`; groups
    carry their aggregate), or lm-eval's own results dict with `return_raw=True`.

    lm-eval runs every task on this process: with an in-memory model it does no data parallelism (call it on one
    rank only).
    """
    lm_eval = _import_lm_eval()
    from lm_eval.tasks import TaskManager

    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks is empty: name at least one lm-eval task (e.g. 'wmdp', 'mmlu').")
    task_manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    unknown = [t for t in tasks if t not in task_manager.all_tasks and not Path(t).is_file()]
    if unknown:
        raise ValueError(
            f"Unknown lm-eval task(s) {unknown}: not among the {len(task_manager.all_tasks)} tasks indexed"
            + (f" (include_path={include_path!r})" if include_path else "")
            + ". List them with `lm-eval ls tasks`."
        )
    was_training = model.training
    try:
        lm = make_hflm(model, tokenizer, batch_size=batch_size, max_length=max_length)
        evaluate_kwargs.setdefault("log_samples", False)
        evaluate_kwargs.setdefault("bootstrap_iters", 0)
        raw = lm_eval.simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=task_manager, **evaluate_kwargs
        )
    finally:
        model.train(was_training)
    if raw is None:  # lm-eval returns None on non-zero ranks
        return {}
    summary = _flatten_metrics({**raw.get("results", {}), **raw.get("groups", {})})
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        sections = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot")
        keep = {k: raw[k] for k in sections if k in raw}
        (out / "lm_eval_results.json").write_text(json.dumps(keep, indent=2, default=_json_default))
        (out / "lm_eval_summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return dict(raw) if return_raw else summary
