"""G-effect: how much an unlearning objective moves the forget risk and the retain risk (first order).

Wang et al., ICLR 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond". For the
current parameters theta, an objective L (e.g. GA, NPO, WGA, TNPO) and the NLL risks R_f (forget data) and R_r
(retain data), the cross-entropy of the answer tokens pooled over the sample by default (HF's `outputs.loss`, as
tmlr-group/G-effect's `dataloader_ge.py`):

    e_f = <grad R_f(theta), grad L(theta)>,    e_r = <grad R_r(theta), grad L(theta)>.

A gradient step theta - eta * grad L changes R_f by -eta * e_f + O(eta^2) (likewise R_r). Sign convention, as in the
paper: for GA (L = -R_f) e_f = -||grad R_f||^2 < 0. A NEGATIVE forget G-effect means the forget risk rises (the
objective removes the forget answers); a NEGATIVE retain G-effect means the retain risk rises (retention is harmed).
A good objective has e_f strongly negative and e_r near zero or positive.

The inner product is a sum over parameters, so it splits exactly into parameter groups (embeddings, each decoder
layer, the head, and "other", e.g. the final norm): the per-group values sum to the total. The risk is a weighted
mean of the examples' mean-NLLs (weights |y_i| / total answer tokens when pooled, 1 / n per answer), so it also
splits into per-instance values e_f,i = <grad mean-NLL(x_i, y_i), grad L> whose weighted mean is e_f.

Memory: grad L is the only gradient copy held. The risk gradients are never stored: a post-accumulate hook on each
parameter takes its dot product with grad L in float64 the moment that parameter's gradient is ready, then frees it.
Only trainable parameters (`requires_grad`) take part, so with a peft model the space is the adapter's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..evaluation.scoring import answer_token_logprobs
from ..losses import ForgetLoss, LossContext, RetainLoss, get_loss
from ..losses.base import IGNORE_INDEX, TOKEN_AVERAGES, UnlearningLoss
from ..modeling import DECODER_LAYER_LIST_NAMES
from ..reference import REFERENCE_ADAPTERS_OFF, default_reference_mode, freeze, frozen_copy

__all__ = [
    "GEffect",
    "build_geffect_batch",
    "compute_g_effect",
    "parameter_groups",
    "resolve_objective",
]

Batch = Mapping[str, torch.Tensor]
SPLITS = ("forget", "retain")
GROUP_EMBEDDINGS, GROUP_HEAD, GROUP_OTHER = "embeddings", "head", "other"
_DOT_SLICE = 1 << 22  # elements per float64 slice of a dot product (32 MiB)
_LAYER_RE = re.compile(rf"(?:^|\.)(?:{'|'.join(map(re.escape, DECODER_LAYER_LIST_NAMES))})\.(\d+)(?:\.|$)")


@dataclass
class GEffect:
    """G-effects of one objective at one point theta.

    Attributes:
        forget: e_f = <grad R_f, grad L> (negative: the forget risk rises, removal works).
        retain: e_r = <grad R_r, grad L> (negative: the retain risk rises, retention is harmed).
        per_group: group name -> (forget, retain); groups in model order ("embeddings", "layer.0", ..., "head",
            "other"), summing to the totals.
        per_instance: None, or {"forget": [e_f,i per forget example], "retain": [e_r,j per retain example]}; each
            list averages to the total.
        forget_risk / retain_risk: R_f and R_r themselves (the NLL risks, averaged as `token_average`) at theta.
        grad_norms: Euclidean norms of grad L ("objective"), grad R_f ("forget_risk") and grad R_r ("retain_risk")
            over the same parameters, e.g. to turn a G-effect into a cosine.
        objective: a readable description of L.
        num_forget / num_retain: examples the risks were computed on.
        step: the training step (set by the callback), or None.
    """

    forget: float
    retain: float
    per_group: dict[str, tuple[float, float]]
    per_instance: dict[str, list[float]] | None = None
    forget_risk: float = math.nan
    retain_risk: float = math.nan
    grad_norms: dict[str, float] = field(default_factory=dict)
    objective: str = ""
    num_forget: int = 0
    num_retain: int = 0
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (groups as `{"name": {"forget": x, "retain": y}}`)."""
        out = {
            "step": self.step,
            "objective": self.objective,
            "forget": self.forget,
            "retain": self.retain,
            "forget_risk": self.forget_risk,
            "retain_risk": self.retain_risk,
            "grad_norms": dict(self.grad_norms),
            "num_forget": self.num_forget,
            "num_retain": self.num_retain,
            "per_group": {name: {"forget": f, "retain": r} for name, (f, r) in self.per_group.items()},
        }
        if self.per_instance is not None:
            out["per_instance"] = {split: list(values) for split, values in self.per_instance.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GEffect:
        """Inverse of [`to_dict`]."""
        groups = {name: (float(v["forget"]), float(v["retain"])) for name, v in data.get("per_group", {}).items()}
        return cls(
            forget=float(data["forget"]),
            retain=float(data["retain"]),
            per_group=groups,
            per_instance=data.get("per_instance"),
            forget_risk=float(data.get("forget_risk", math.nan)),
            retain_risk=float(data.get("retain_risk", math.nan)),
            grad_norms=dict(data.get("grad_norms", {})),
            objective=str(data.get("objective", "")),
            num_forget=int(data.get("num_forget", 0)),
            num_retain=int(data.get("num_retain", 0)),
            step=data.get("step"),
        )

    def format_table(self) -> str:
        """A markdown table of the per-group values and the total."""
        lines = [
            f"G-effect of {self.objective or 'the objective'} ({self.num_forget} forget / {self.num_retain} retain "
            "examples; negative forget = forget risk rises, negative retain = retention harmed)",
            "| group | forget | retain |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {f:+.4e} | {r:+.4e} |" for name, (f, r) in self.per_group.items()]
        lines.append(f"| **total** | {self.forget:+.4e} | {self.retain:+.4e} |")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- parameter groups
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP / peft wrappers (for locating its embeddings and head)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _module_params(module: torch.nn.Module | None) -> set[int]:
    return {id(p) for p in module.parameters()} if module is not None else set()


def parameter_groups(model: torch.nn.Module) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Trainable parameters by group: "embeddings", "layer.<i>" (each decoder layer), "head", "other".

    The embeddings and the head are the modules `get_input_embeddings()` / `get_output_embeddings()` return (a tied
    weight counts once, as embeddings); a decoder layer is any parameter whose name holds `layers.<i>.` (or another
    of `hf_unlearn.modeling.DECODER_LAYER_LIST_NAMES`: `h.<i>.`, `blocks.<i>.`, ...); everything else (final norm,
    ...) is "other". Empty groups are left out. Order: embeddings, layers by index, head, other.
    """
    base = _unwrap(model)
    get_in, get_out = getattr(base, "get_input_embeddings", None), getattr(base, "get_output_embeddings", None)
    embed_ids = _module_params(get_in() if callable(get_in) else None)
    head_ids = _module_params(get_out() if callable(get_out) else None)
    # named_parameters de-duplicates tied weights: each tensor is seen once.
    layers: dict[int, list] = {}
    embeddings, head, other = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        match = _LAYER_RE.search(name)
        if id(param) in embed_ids or (not embed_ids and "embed" in name):
            embeddings.append((name, param))
        elif id(param) in head_ids:
            head.append((name, param))
        elif match:
            layers.setdefault(int(match.group(1)), []).append((name, param))
        else:
            other.append((name, param))
    groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
    if embeddings:
        groups[GROUP_EMBEDDINGS] = embeddings
    for index in sorted(layers):
        groups[f"layer.{index}"] = layers[index]
    if head:
        groups[GROUP_HEAD] = head
    if other:
        groups[GROUP_OTHER] = other
    return groups


# ---------------------------------------------------------------------------------------------- objectives
def resolve_objective(
    objective: str | ForgetLoss, kwargs: Mapping[str, Any] | None = None, kind: str = "forget"
) -> UnlearningLoss:
    """A loss instance from a registered name (+ hyperparameters) or an instance (returned as is).

    An unknown name raises a ValueError that lists the registered losses of that kind.
    """
    if isinstance(objective, UnlearningLoss):
        if kwargs:
            raise ValueError("Hyperparameters are given with a loss instance; set them on the instance instead.")
        if objective.kind != kind:
            raise ValueError(f"{type(objective).__name__} is a {objective.kind} loss, expected a {kind} loss.")
        return objective
    if not isinstance(objective, str):
        raise TypeError(f"The objective must be a registered loss name or a {kind} loss instance, got {objective!r}.")
    return get_loss(objective, kind).from_kwargs(kwargs)


def _describe(loss: UnlearningLoss, gamma: float, retain: UnlearningLoss | None, alpha: float) -> str:
    text = f"{gamma:g} * {loss!r}" if gamma != 1 else repr(loss)
    if retain is not None:
        text += f" + {alpha:g} * {retain!r}"
    return text


# ---------------------------------------------------------------------------------------------- batches
def _check_batch(batch: Any, split: str) -> int:
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"The {split} batch must be a mapping of tensors (input_ids, attention_mask, labels), got "
            f"{type(batch).__name__}. Encode question/answer datasets with `build_geffect_batch`."
        )
    missing = [k for k in ("input_ids", "attention_mask", "labels") if k not in batch]
    if missing:
        raise ValueError(f"The {split} batch lacks {missing}; it needs input_ids, attention_mask and labels.")
    size = int(batch["input_ids"].shape[0]) if batch["input_ids"].dim() > 0 else 0
    if size == 0:
        raise ValueError(f"The {split} batch is empty: the G-effect needs at least one {split} example.")
    shapes = {k: tuple(batch[k].shape) for k in ("input_ids", "attention_mask", "labels")}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"The {split} batch's tensors differ in shape: {shapes}.")
    answer_tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=-1)
    empty = torch.nonzero(answer_tokens == 0).flatten().tolist()
    if empty:
        raise ValueError(f"Example(s) {empty} of the {split} batch have no answer token (all labels are -100).")
    return size


def _take(batch: Batch, rows: np.ndarray | Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
    """Rows of a padded batch, with the all-padding columns at the right trimmed, on `device`."""
    index = torch.as_tensor(np.asarray(rows), dtype=torch.long)
    out = {k: v[index.to(v.device)] for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 0}
    mask = out["attention_mask"]
    width = int(mask.sum(dim=0).nonzero().max().item()) + 1 if bool(mask.any()) else mask.shape[1]
    return {k: (v[:, :width] if v.dim() > 1 and v.shape[1] == mask.shape[1] else v).to(device) for k, v in out.items()}


def build_geffect_batch(
    tokenizer: Any,
    forget_dataset: Any,
    retain_dataset: Any,
    num_samples: int | None = 16,
    seed: int = 0,
    refusals: bool = False,
    question_key: str = "question",
    answer_key: str = "answer",
    max_length: int | None = None,
    use_chat_template: bool | None = None,
    encoder: Any | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Encode a fixed sample of forget and retain examples into `{"forget": batch, "retain": batch[, "idk"]}`.

    Examples are formatted exactly as the trainer formats them (`PromptEncoder`, answer tokens as labels) and padded
    with `pad_examples`. `num_samples` rows are drawn without replacement from each dataset with a generator seeded by
    `seed` (None or more than the rows: all rows, in order). `refusals=True` adds the `"idk"` split (each forget
    prompt with a refusal answer from TOFU's list) for losses that declare `needs_refusals`.
    """
    from ..data import PromptEncoder, load_refusal_answers, pad_examples, prepare_dataset
    from ..data.preparation import ANSWER_IDS, PROMPT_IDS, truncate_answer

    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be >= 1 (or None for all rows), got {num_samples}.")
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token).")
    encoder = encoder or PromptEncoder(tokenizer, use_chat_template)
    rng = np.random.default_rng(seed)
    batch: dict[str, dict[str, torch.Tensor]] = {}
    for split, dataset in (("forget", forget_dataset), ("retain", retain_dataset)):
        if dataset is None or len(dataset) == 0:
            raise ValueError(f"The {split} dataset is empty: the G-effect needs at least one {split} example.")
        if num_samples is not None and num_samples < len(dataset):
            dataset = dataset.select(sorted(rng.choice(len(dataset), size=num_samples, replace=False).tolist()))
        encoded = prepare_dataset(
            dataset,
            encoder,
            name=f"{split} dataset",
            question_key=question_key,
            answer_key=answer_key,
            max_length=max_length,
        )
        pairs = list(zip(encoded[PROMPT_IDS], encoded[ANSWER_IDS]))
        batch[split] = pad_examples(pairs, tokenizer.pad_token_id)
        if split == "forget" and refusals:
            refusal_ids = encoder.encode_refusals(load_refusal_answers())
            idk = []
            for row, (prompt, _) in enumerate(pairs):
                answer = refusal_ids[int(rng.integers(len(refusal_ids)))]
                idk.append((prompt, truncate_answer(prompt, answer, max_length, f"Refusal for forget row {row}")))
            batch["idk"] = pad_examples(idk, tokenizer.pad_token_id)
    return batch


# ---------------------------------------------------------------------------------------------- reference model
def reference_for(
    model: torch.nn.Module, ref_model: torch.nn.Module | None, output_hidden_states: bool = False
) -> tuple[Callable[[Mapping[str, torch.Tensor]], Any], torch.nn.Module]:
    """A reference forward for `LossContext` and the module it runs, by the trainer's policy
    (`hf_unlearn.reference`): `ref_model` if given; for a peft model the same model with its adapters disabled (no
    copy); otherwise a frozen deep copy of `model`, made once, here (so theta = ref)."""
    kwargs = {"output_hidden_states": output_hidden_states, "use_cache": False}
    if ref_model is None and default_reference_mode(model) == REFERENCE_ADAPTERS_OFF:

        def adapter_off(inputs: Mapping[str, torch.Tensor]) -> Any:
            with model.disable_adapter():
                return model(**inputs, **kwargs)

        return adapter_off, model
    ref_model = frozen_copy(model, "Pass ref_model=...") if ref_model is None else freeze(ref_model)
    return (lambda inputs: ref_model(**inputs, **kwargs)), ref_model


# ---------------------------------------------------------------------------------------------- computation
@contextmanager
def _stashed_grads(params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Move existing `.grad`s aside (no copy) and put them back afterwards, whatever happens in between."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad


class _DotAccumulator:
    """Post-accumulate-grad hooks: <p.grad, g_L[p]> per group in float64, then `p.grad` is freed at once."""

    def __init__(self, params: Sequence[torch.nn.Parameter], group_of: Sequence[int], objective_grads, device):
        self.params, self.group_of, self.objective_grads = params, group_of, objective_grads
        self.n_groups = max(group_of) + 1
        self.device = device
        self.dots = torch.zeros(self.n_groups, dtype=torch.float64, device=device)
        self.sq_norm = torch.zeros((), dtype=torch.float64, device=device)
        self._handles: list[Any] = []

    def reset(self) -> None:
        self.dots = torch.zeros(self.n_groups, dtype=torch.float64, device=self.device)
        self.sq_norm = torch.zeros((), dtype=torch.float64, device=self.device)

    def __enter__(self) -> _DotAccumulator:
        for index, param in enumerate(self.params):
            self._handles.append(param.register_post_accumulate_grad_hook(self._hook(index)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for p in self.params:
            p.grad = None

    def _hook(self, index: int) -> Callable[[torch.Tensor], None]:
        group, g_obj = self.group_of[index], self.objective_grads[index]

        def hook(param: torch.Tensor) -> None:
            grad = param.grad.detach().flatten()
            obj = g_obj.detach().flatten().to(grad.device) if g_obj is not None else None
            # float64 products in bounded slices: exact enough, and no float64 copy of a whole embedding matrix
            for start in range(0, grad.numel(), _DOT_SLICE):
                piece = grad[start : start + _DOT_SLICE].to(torch.float64)
                if obj is not None:
                    self.dots[group] += torch.dot(piece, obj[start : start + _DOT_SLICE].to(torch.float64))
                self.sq_norm += torch.dot(piece, piece)
            param.grad = None

        return hook


@dataclass(frozen=True)
class _ObjectiveTerms:
    """L = gamma * forget + alpha * retain (retain None: no retain term)."""

    forget: ForgetLoss
    retain: RetainLoss | None
    gamma: float
    alpha: float


def _objective_gradient(
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    loss_context_fn: Callable[[torch.nn.Module, Mapping[str, Batch]], LossContext],
    objective: _ObjectiveTerms,
    batches: Mapping[str, Batch | None],
    forget_rows: Sequence[np.ndarray],
    retain_rows: Sequence[np.ndarray],
    bar: tqdm,
) -> list[torch.Tensor | None]:
    """grad L over the sample, accumulated over the micro-batches (each term weighted by its share of the rows);
    the parameters' `.grad` are left None."""
    device = params[0].device
    n_forget, n_retain = sum(len(r) for r in forget_rows), sum(len(r) for r in retain_rows)
    for f_rows, r_rows in zip(forget_rows, retain_rows):
        if len(f_rows) == 0:
            continue
        sub = {"forget": _take(batches["forget"], f_rows, device), "retain": _take(batches["retain"], r_rows, device)}
        if batches.get("idk") is not None:
            sub["idk"] = _take(batches["idk"], f_rows, device)
        ctx = loss_context_fn(model, sub)
        loss = objective.gamma * (len(f_rows) / n_forget) * objective.forget(ctx)
        if objective.retain is not None and len(r_rows):
            loss = loss + objective.alpha * (len(r_rows) / n_retain) * objective.retain(ctx)
        if not torch.isfinite(loss):
            raise ValueError(f"The objective is not finite ({loss.item()}) on this batch.")
        torch.autograd.backward(loss, inputs=list(params))
        del ctx, loss
        bar.update()
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    return grads


@dataclass
class _RiskEffect:
    """One risk's G-effect: per-group dot products with grad L, the risk, ||grad R||^2 (nan when not exact) and the
    per-example values."""

    dots: torch.Tensor
    risk: float
    sq_norm: float
    per_example: list[float]


def _answer_mean_nll(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """mean-NLL of each row's answer, `[rows]`, by the one scoring path (a GRUN model is told where each prompt
    ends); differentiable."""
    logp, rows = answer_token_logprobs(model, batch)
    n = batch["labels"].shape[0]
    sums = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, rows, -logp)
    return sums / torch.bincount(rows, minlength=n).clamp(min=1)


def _risk_effect(
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    accumulator: _DotAccumulator,
    split_batch: Batch,
    rows_list: Sequence[np.ndarray],
    token_average: str,
    per_instance: bool,
    bar: tqdm,
) -> _RiskEffect:
    """<grad R, grad L> for the NLL risk R of one split, from its backward passes (the hooks of `accumulator`)."""
    device = params[0].device
    n_total = sum(len(r) for r in rows_list)
    dots = torch.zeros_like(accumulator.dots, dtype=torch.float64)
    per_example: list[float] = []
    risk = 0.0
    accumulator.reset()
    # The risk is sum_i w_i * mean-NLL_i: w_i = 1 / n (per answer) or |y_i| / total tokens (pooled).
    answer_tokens = (torch.as_tensor(split_batch["labels"])[:, 1:] != IGNORE_INDEX).sum(dim=-1)
    if token_average == "batch":
        row_weights = answer_tokens.double() / answer_tokens.sum().clamp(min=1)
    else:
        row_weights = torch.full((n_total,), 1.0 / n_total, dtype=torch.float64)
    for rows in rows_list:
        if len(rows) == 0:
            continue
        sub = _take(split_batch, rows, device)
        weights = row_weights[torch.as_tensor(rows)].to(device)
        values = _answer_mean_nll(model, sub)  # [rows]
        risk += float((values.detach().double() * weights).sum())
        if per_instance:
            for i in range(len(rows)):
                accumulator.dots.zero_()
                torch.autograd.backward(values[i], inputs=list(params), retain_graph=i < len(rows) - 1)
                per_example.append(float(accumulator.dots.sum()))
                dots += accumulator.dots * weights[i]
                bar.update()
        else:
            accumulator.dots.zero_()
            torch.autograd.backward((values * weights.to(values.dtype)).sum(), inputs=list(params))
            dots += accumulator.dots
            bar.update()
        del values
    # Squared norms of partial gradients do not add up (cross terms): exact only for one backward.
    single_pass = not per_instance and sum(len(r) > 0 for r in rows_list) == 1
    return _RiskEffect(dots, risk, float(accumulator.sq_norm) if single_pass else math.nan, per_example)


def compute_g_effect(
    model: torch.nn.Module,
    objective: str | ForgetLoss,
    forget_batch: Batch | Mapping[str, Batch],
    retain_batch: Batch | None = None,
    *,
    objective_kwargs: Mapping[str, Any] | None = None,
    gamma: float = 1.0,
    retain_objective: str | RetainLoss | None = None,
    retain_objective_kwargs: Mapping[str, Any] | None = None,
    alpha: float = 1.0,
    ref_model: torch.nn.Module | None = None,
    idk_batch: Batch | None = None,
    per_instance: bool = False,
    batch_size: int | None = None,
    seed: int = 0,
    loss_context_fn: Callable[[torch.nn.Module, Mapping[str, Batch]], LossContext] | None = None,
    progress: bool = False,
    token_average: str = "batch",
) -> GEffect:
    """G-effects e_f = <grad R_f, grad L> and e_r = <grad R_r, grad L> of an objective at the model's current weights.

    L = gamma * L_forget (+ alpha * L_retain when `retain_objective` is given); R_f, R_r are the NLL risks of the
    forget and retain answers: the cross-entropy pooled over all answer tokens of the sample (`token_average=
    "batch"`, HF's `outputs.loss`, as tmlr-group/G-effect's `dataloader_ge.py` computes them), or per answer, then
    over examples (`"answer"`). Negative e_f: the
    forget risk rises under a step on L (removal); negative e_r: the retain risk rises (retention harmed). See the
    module docstring for the sign convention and the paper.

    Args:
        model: the model (a transformers causal LM, possibly a peft model); its trainable parameters span the space.
        objective: a registered forget loss name (`hf_unlearn.list_losses("forget")`: "ga", "npo", "wga", "tnpo",
            ...) or a `ForgetLoss` instance (used as is; `setup` is called only for names).
        forget_batch: `{"input_ids", "attention_mask", "labels"}` of forget examples (prompt tokens labelled -100),
            as `pad_examples` / `ForgetRetainCollator` make them; or a whole `{"forget": ..., "retain": ...[,
            "idk": ...]}` batch, with `retain_batch` None. Encode datasets with [`build_geffect_batch`].
        retain_batch: the retain examples, same format.
        objective_kwargs: hyperparameters of a named objective (e.g. `{"beta": 0.1}`).
        gamma: weight of the forget objective (as `UnlearningConfig.gamma`).
        retain_objective, retain_objective_kwargs, alpha: optionally add alpha * L_retain (e.g. "nll") to L, to
            analyse the regularised objective; by default L is the forget objective alone, as in the paper.
        ref_model: the reference for losses that need one (NPO, TNPO, ...). Default: a peft model with adapters
            disabled, otherwise a frozen copy of `model` made once per call (i.e. theta = ref).
        idk_batch: refusal answers for losses that declare `needs_refusals` (or an "idk" split in the batch).
        per_instance: also return e_f,i and e_r,j per example (one backward pass per example).
        batch_size: micro-batch size for the forwards (None: the whole sample at once). The objective over several
            micro-batches is the size-weighted mean of the micro-batch objectives, exact for losses that average
            over examples (all built-in ones do), as with gradient accumulation.
        seed: passed to the loss's `setup` (losses with random state, e.g. RMU's direction).
        loss_context_fn: builds the `LossContext` of a micro-batch (the callback passes the trainer's, to reuse its
            reference model); default: one with `ref_model` as described.
        progress: show a progress bar over the backward passes.
        token_average: how the risks and the default loss context average over answer tokens (`"batch"`: pooled,
            the reference; `"answer"`: per answer first). A `loss_context_fn` sets the objective's own. With
            `per_instance`, e_f,i is example i's own (per-answer) G-effect; the totals weigh them by their share.

    Returns:
        A [`GEffect`]; the model's mode, its `.grad`s and its parameters are as they were.
    """
    if isinstance(forget_batch, Mapping) and "forget" in forget_batch and retain_batch is None:
        if idk_batch is None:
            idk_batch = forget_batch.get("idk")
        forget_batch, retain_batch = forget_batch["forget"], forget_batch.get("retain")
    if retain_batch is None:
        raise ValueError("A retain batch is required: the G-effect measures the objective against both risks.")
    n_forget, n_retain = _check_batch(forget_batch, "forget"), _check_batch(retain_batch, "retain")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (or None), got {batch_size}.")
    if token_average not in TOKEN_AVERAGES:
        raise ValueError(f"token_average must be one of {list(TOKEN_AVERAGES)}, got {token_average!r}.")

    forget_loss = resolve_objective(objective, objective_kwargs, "forget")
    retain_loss = None
    if retain_objective is not None:
        retain_loss = resolve_objective(retain_objective, retain_objective_kwargs, "retain")
    if retain_loss is not None and not getattr(retain_loss, "uses_retain_data", True):
        retain_loss = None  # e.g. "none": no term
    if isinstance(objective, str):
        forget_loss.setup(model, seed)
    if retain_loss is not None and isinstance(retain_objective, str):
        retain_loss.setup(model, seed)
    losses = [loss for loss in (forget_loss, retain_loss) if loss is not None]
    if forget_loss.needs_refusals:
        if idk_batch is None:
            raise ValueError(
                f"{forget_loss!r} trains on refusal answers: pass idk_batch (e.g. build_geffect_batch(..., "
                "refusals=True))."
            )
        if _check_batch(idk_batch, "idk") != n_forget:
            raise ValueError("The idk batch must pair one refusal answer with each forget example.")

    groups = parameter_groups(model)
    if not groups:
        raise ValueError("The model has no trainable parameters (requires_grad=True): there is no gradient to take.")
    group_names = list(groups)
    params = [p for members in groups.values() for _, p in members]
    group_of = [gi for gi, members in enumerate(groups.values()) for _ in members]
    device = params[0].device

    output_hidden_states = any(loss.needs_hidden_states for loss in losses)
    if loss_context_fn is None:
        needs_ref = any(loss.needs_ref_model for loss in losses)
        reference, reference_module = (
            reference_for(model, ref_model, output_hidden_states) if needs_ref else (None, None)
        )

        def loss_context_fn(m: torch.nn.Module, batch: Mapping[str, Batch]) -> LossContext:
            return LossContext(
                m,
                batch,
                reference,
                output_hidden_states=output_hidden_states,
                token_average=token_average,
                reference_module=reference_module,
            )

    chunk = batch_size or max(n_forget, n_retain)
    n_chunks = math.ceil(max(n_forget, n_retain) / chunk)
    forget_rows = np.array_split(np.arange(n_forget), n_chunks)
    retain_rows = np.array_split(np.arange(n_retain), n_chunks)
    total_backwards = n_chunks + (n_forget + n_retain if per_instance else 2 * n_chunks)
    bar = tqdm(total=total_backwards, desc="G-effect backward passes", disable=not progress, leave=False)

    was_training = model.training
    model.eval()  # deterministic gradients (no dropout)
    try:
        with torch.enable_grad(), _stashed_grads(params):
            # 1. g_L = grad of L over the sample: the one gradient copy we keep.
            objective_grads = _objective_gradient(
                model,
                params,
                loss_context_fn,
                _ObjectiveTerms(forget_loss, retain_loss, gamma, alpha),
                {"forget": forget_batch, "retain": retain_batch, "idk": idk_batch},
                forget_rows,
                retain_rows,
                bar,
            )
            obj_sq = sum(float(torch.sum(g.double() ** 2)) for g in objective_grads if g is not None)

            # 2. Risk gradients, reduced on the fly against g_L by the hooks.
            accumulator = _DotAccumulator(params, group_of, objective_grads, device)
            effects = {}
            with accumulator:
                for split, split_batch, rows_list in (
                    ("forget", forget_batch, forget_rows),
                    ("retain", retain_batch, retain_rows),
                ):
                    effects[split] = _risk_effect(
                        model, params, accumulator, split_batch, rows_list, token_average, per_instance, bar
                    )
    finally:
        model.train(was_training)
        bar.close()

    forget, retain = effects["forget"], effects["retain"]
    forget_dots, retain_dots = forget.dots.tolist(), retain.dots.tolist()
    return GEffect(
        forget=float(sum(forget_dots)),
        retain=float(sum(retain_dots)),
        per_group={name: (forget_dots[i], retain_dots[i]) for i, name in enumerate(group_names)},
        per_instance={"forget": forget.per_example, "retain": retain.per_example} if per_instance else None,
        forget_risk=forget.risk,
        retain_risk=retain.risk,
        grad_norms={
            "objective": math.sqrt(obj_sq),
            "forget_risk": math.sqrt(forget.sq_norm) if not math.isnan(forget.sq_norm) else math.nan,
            "retain_risk": math.sqrt(retain.sq_norm) if not math.isnan(retain.sq_norm) else math.nan,
        },
        objective=_describe(forget_loss, gamma, retain_loss, alpha),
        num_forget=n_forget,
        num_retain=n_retain,
    )
