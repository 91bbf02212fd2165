"""Base classes of unlearning losses and the per-batch context they read from."""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch

from ..citations import Paper
from ..constants import IGNORE_INDEX
from ..methods.registry import answer_forward_kwargs
from ..modeling import DECODER_LAYER_LIST_NAMES, find_decoder_layers

#: How training losses average over answer tokens: "batch" pools the answer tokens of the whole batch (HF's
#: `outputs.loss`, what the reference codes use), "answer" averages within each answer, then over the batch.
TOKEN_AVERAGES = ("batch", "answer")


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in float32 when it is in a lower precision (bf16 logits lose too much in a softmax); float64 stays."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the label tokens under causal (shifted) logits.

    Position t of `logits` predicts `labels[:, t + 1]`. Returns `(logp, mask)`, both `[batch, seq_len - 1]`:
    `logp` holds log p(y_t | x, y_<t) in float32 (0 where masked) and `mask` is True on answer tokens.
    """
    logits = logits[:, :-1, :]
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe_targets = targets.masked_fill(~mask, 0)
    # log_softmax in float32 at least: bf16 logits lose too much precision in the normaliser.
    logp = torch.log_softmax(at_least_float32(logits), dim=-1).gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NLL(x, y) = sum_t CE_t over the answer tokens of each sequence, shape `[batch]`."""
    logp, _ = token_log_probs(logits, labels)
    return -logp.sum(dim=-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean-NLL(x, y) = NLL / |y| for each sequence, shape `[batch]`."""
    logp, mask = token_log_probs(logits, labels)
    return -logp.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the answer tokens of each sequence, then over the batch (every example weighs the same)."""
    per_example = (values * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return per_example.mean()


def pooled_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over all answer tokens of the batch at once (sum / number of tokens), as HF's `outputs.loss`."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def token_mean(values: torch.Tensor, mask: torch.Tensor, token_average: str = "batch") -> torch.Tensor:
    """[`pooled_token_mean`] for `token_average="batch"`, [`masked_token_mean`] for `"answer"`."""
    if token_average == "batch":
        return pooled_token_mean(values, mask)
    if token_average == "answer":
        return masked_token_mean(values, mask)
    raise ValueError(f"token_average must be one of {list(TOKEN_AVERAGES)}, got {token_average!r}.")


class LossContext:
    """Everything a loss may read for one training batch.

    Model outputs are computed lazily and cached, so a loss that reads the forget logits and another that reads the
    forget log-probabilities share ONE forward pass. Splits: `"forget"`, `"retain"` and `"idk"` (the forget prompts
    paired with refusal answers, present when a loss declares `needs_refusals`).

    Args:
        model: the model being trained (possibly wrapped by DDP/peft).
        batch: a mapping split -> `{"input_ids", "attention_mask", "labels"}`.
        reference_forward: a function running the frozen reference model on a split's inputs (no gradients), or None.
        output_hidden_states: whether forwards return hidden states (some losses declare they need them); the
            output of the last decoder layer before the final norm is then recorded too (see [`layer_output`]).
        token_average: how [`token_mean`] and [`token_nll`] average over answer tokens: `"batch"` (pooled over the
            batch, the reference codes' `outputs.loss`) or `"answer"` (per answer, then over the batch).
        reference_module: the module `reference_forward` runs, when it is not `model` itself (a frozen copy); read
            only to record its last decoder layer's output.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch: Mapping[str, Mapping[str, torch.Tensor]],
        reference_forward: Callable[[Mapping[str, torch.Tensor]], Any] | None = None,
        output_hidden_states: bool = False,
        token_average: str = "batch",
        reference_module: torch.nn.Module | None = None,
    ):
        if token_average not in TOKEN_AVERAGES:
            raise ValueError(f"token_average must be one of {list(TOKEN_AVERAGES)}, got {token_average!r}.")
        self.model = model
        self._batch = batch
        self._reference_forward = reference_forward
        self._reference_module = reference_module
        self._output_hidden_states = output_hidden_states
        self.token_average = token_average
        self._outputs: dict[str, Any] = {}
        self._ref_outputs: dict[str, Any] = {}
        self._last_layer: dict[tuple[str, bool], torch.Tensor] = {}
        #: Per-batch statistics the losses report with [`log_metric`]; the trainer logs them with its own.
        self.metrics: dict[str, torch.Tensor] = {}

    def log_metric(self, name: str, value: torch.Tensor) -> None:
        """Report a scalar of this batch (e.g. a gate's mean) for the trainer's logs, detached."""
        self.metrics[name] = value.detach()

    def batch(self, split: str) -> Mapping[str, torch.Tensor]:
        if split not in self._batch:
            raise KeyError(
                f"This batch has no {split!r} split (it has {sorted(self._batch)}). A loss that reads refusal "
                "answers must declare `needs_refusals = True`."
            )
        return self._batch[split]

    def labels(self, split: str) -> torch.Tensor:
        return self.batch(split)["labels"]

    def _model_inputs(self, split: str) -> dict[str, torch.Tensor]:
        batch = self.batch(split)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def _scoring_inputs(self, split: str, module: torch.nn.Module) -> dict[str, Any]:
        """What a forward of `module` over this split's prompt + answer rows needs beyond the inputs, as its method
        declares it (GRUN: the last prompt token of each row; see `hf_unlearn.methods`)."""
        batch = self.batch(split)
        return answer_forward_kwargs(module, batch["labels"], batch["attention_mask"])

    def outputs(self, split: str) -> Any:
        """The trained model's outputs on a split (cached: one forward per split and batch)."""
        if split not in self._outputs:
            with self._recording_last_layer(self.model, split, reference=False):
                self._outputs[split] = self.model(
                    **self._model_inputs(split),
                    **self._scoring_inputs(split, self.model),
                    output_hidden_states=self._output_hidden_states,
                    use_cache=False,
                )
        return self._outputs[split]

    @contextlib.contextmanager
    def _recording_last_layer(self, module: torch.nn.Module, split: str, reference: bool) -> Iterator[None]:
        """Record the last decoder layer's output during a forward (HF's last hidden state is after the final norm)."""
        if not self._output_hidden_states:
            yield
            return
        layers = find_decoder_layers(module)
        if layers is None:
            yield
            return

        def record(_module, _args, output):
            self._last_layer[(split, reference)] = output[0] if isinstance(output, tuple) else output

        handle = layers[-1].register_forward_hook(record)
        try:
            yield
        finally:
            handle.remove()

    def ref_outputs(self, split: str) -> Any:
        """The reference model's outputs on a split (no gradients, cached)."""
        if self._reference_forward is None:
            raise RuntimeError(
                "This loss reads the reference model but none is available; declare `needs_ref_model = True` on the "
                "loss class so the trainer provides one."
            )
        if split not in self._ref_outputs:
            module = self._reference_module if self._reference_module is not None else self.model
            with torch.no_grad(), self._recording_last_layer(module, split, reference=True):
                inputs = {**self._model_inputs(split), **self._scoring_inputs(split, module)}
                self._ref_outputs[split] = self._reference_forward(inputs)
        return self._ref_outputs[split]

    def release(self, split: str) -> None:
        """Drop the cached outputs of a split (frees its activations once its loss has been backpropagated)."""
        self._outputs.pop(split, None)
        self._ref_outputs.pop(split, None)
        self._last_layer.pop((split, False), None)
        self._last_layer.pop((split, True), None)

    def token_mean(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Average per-token `values` over the answer tokens in `mask`, as `token_average` says."""
        return token_mean(values, mask, self.token_average)

    def token_nll(self, split: str) -> torch.Tensor:
        """The cross-entropy of a split's answer tokens averaged by `token_average` (scalar): with `"batch"`,
        exactly HF's `outputs.loss` for these labels."""
        logp, mask = self.token_log_probs(split)
        return self.token_mean(-logp, mask)

    def logits(self, split: str) -> torch.Tensor:
        return self.outputs(split).logits

    def ref_logits(self, split: str) -> torch.Tensor:
        return self.ref_outputs(split).logits

    def token_log_probs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`(logp, mask)` of the answer tokens, see [`token_log_probs`]."""
        return token_log_probs(self.logits(split), self.labels(split))

    def ref_token_log_probs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return token_log_probs(self.ref_logits(split), self.labels(split))

    def nll(self, split: str) -> torch.Tensor:
        """Sequence NLL (sum over answer tokens), `[batch]`."""
        logp, _ = self.token_log_probs(split)
        return -logp.sum(dim=-1)

    def mean_nll(self, split: str) -> torch.Tensor:
        """Per-token mean NLL of each answer, `[batch]`."""
        logp, mask = self.token_log_probs(split)
        return -logp.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)

    def ref_nll(self, split: str) -> torch.Tensor:
        logp, _ = self.ref_token_log_probs(split)
        return -logp.sum(dim=-1)

    def hidden_states(self, split: str, layer: int) -> torch.Tensor:
        """Hidden state after decoder layer `layer` (0 = embeddings), `[batch, seq_len, hidden]`, as the model
        returns it (for most models the last one is after the final norm; see [`layer_output`])."""
        return _select_hidden(self.outputs(split), layer)

    def ref_hidden_states(self, split: str, layer: int) -> torch.Tensor:
        return _select_hidden(self.ref_outputs(split), layer)

    def layer_output(self, split: str, layer: int, reference: bool = False) -> torch.Tensor:
        """The residual stream at the output of decoder layer `layer` (0-based), before any final norm, also for the
        last layer (what a forward hook on the layer sees, as RMU's reference code reads it)."""
        outputs = self.ref_outputs(split) if reference else self.outputs(split)
        hidden = getattr(outputs, "hidden_states", None)
        if hidden is None:
            raise RuntimeError("Hidden states were not computed; the loss must declare `needs_hidden_states = True`.")
        num_layers = len(hidden) - 1
        if not 0 <= layer < num_layers:
            raise ValueError(f"Decoder layer {layer} does not exist: the model has layers 0..{num_layers - 1}.")
        if layer < num_layers - 1:
            return hidden[layer + 1]  # the input of the next layer: the residual stream, no norm applied
        recorded = self._last_layer.get((split, reference))
        if recorded is None:
            raise RuntimeError(
                f"The output of the last decoder layer ({layer}) was not recorded: the model's decoder layers could "
                f"not be found (a ModuleList named one of {list(DECODER_LAYER_LIST_NAMES)}). Use an earlier layer."
            )
        return recorded


def _select_hidden(outputs: Any, layer: int) -> torch.Tensor:
    hidden = getattr(outputs, "hidden_states", None)
    if hidden is None:
        raise RuntimeError("Hidden states were not computed; the loss must declare `needs_hidden_states = True`.")
    if not -len(hidden) <= layer < len(hidden):
        raise ValueError(f"Layer {layer} is out of range: the model returns {len(hidden)} hidden states.")
    return hidden[layer]


class UnlearningLoss:
    """Base class of every registered loss. Subclass [`ForgetLoss`] or [`RetainLoss`], not this.

    A loss is a small callable object: its constructor takes the hyperparameters (from `forget_loss_kwargs` /
    `retain_loss_kwargs`), `__call__(ctx)` returns a scalar tensor. Class attributes declare what the trainer must
    provide, and the trainer provides exactly that:

    - `needs_ref_model`: a frozen reference model (peft: the same model with adapters off; otherwise a frozen copy).
    - `needs_hidden_states`: forwards return hidden states.
    - `needs_refusals`: an `"idk"` split pairing each forget prompt with a refusal answer.

    `papers` lists what to cite for the method (model cards of models trained with it cite them).
    """

    name: ClassVar[str] = ""
    papers: ClassVar[tuple[Paper, ...]] = ()
    kind: ClassVar[str] = ""
    needs_ref_model: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    needs_refusals: ClassVar[bool] = False

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any] | None) -> UnlearningLoss:
        """Instantiate with user hyperparameters; an unknown one raises an error that lists the accepted ones."""
        kwargs = dict(kwargs or {})
        # A loss without an __init__ of its own takes no hyperparameters (object.__init__ shows *args, **kwargs).
        params = inspect.signature(cls.__init__).parameters if cls.__init__ is not object.__init__ else {}
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = [n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown and not accepts_any:
            raise ValueError(
                f"Loss {cls.name or cls.__name__!r} got unknown hyperparameter(s) {unknown}; "
                f"it accepts: {accepted or 'none'}."
            )
        _check_hyperparameter_types(cls, kwargs)
        return cls(**kwargs)

    def setup(self, model: torch.nn.Module, seed: int) -> None:
        """Called once by the trainer before training (e.g. to draw a fixed random direction from the seed)."""

    def state_dict(self) -> dict[str, Any]:
        """State saved with checkpoints (e.g. a random direction); empty for most losses."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what [`state_dict`] returned."""

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def _check_hyperparameter_types(cls: type, kwargs: Mapping[str, Any]) -> None:
    """Hyperparameters annotated float, int, str or bool must have that type (a float accepts an int): a string
    "0.1" from a recipe would otherwise be converted silently or fail deep inside the loss."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001  (unresolvable annotations of a user loss: nothing to check)
        return
    for key, value in kwargs.items():
        expected = hints.get(key)
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected in (str, bool):
            ok = isinstance(value, expected)
        else:
            continue
        if not ok:
            raise ValueError(
                f"Loss {cls.name or cls.__name__!r}: hyperparameter {key!r} must be a {expected.__name__}, got "
                f"{type(value).__name__} {value!r}."
            )


class ForgetLoss(UnlearningLoss):
    """A forget objective L_forget, computed on the `"forget"` split (and `"idk"` when it declares refusals)."""

    kind: ClassVar[str] = "forget"


class RetainLoss(UnlearningLoss):
    """A retain objective L_retain, computed on the `"retain"` split."""

    kind: ClassVar[str] = "retain"
    #: False for the `none` loss: the trainer then skips the retain forward entirely.
    uses_retain_data: ClassVar[bool] = True


__all__ = [
    "IGNORE_INDEX",
    "TOKEN_AVERAGES",
    "at_least_float32",
    "pooled_token_mean",
    "token_mean",
    "ForgetLoss",
    "LossContext",
    "RetainLoss",
    "UnlearningLoss",
    "masked_token_mean",
    "mean_nll",
    "sequence_nll",
    "token_log_probs",
]
