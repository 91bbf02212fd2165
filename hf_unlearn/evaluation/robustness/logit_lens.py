"""Logit lens: is the forgotten answer still decodable from the model's intermediate layers?

nostalgebraist 2020 ("interpreting GPT: the logit lens"); used against unlearning by e.g. Lynch et al. 2024 (arXiv
2402.16835). For every decoder layer l, the model's final norm and LM head are applied to the residual stream at the
output of layer l, and the forget answers' probability is read from those logits. A method that only suppresses the
answer in the last layers leaves it decodable in the middle ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ...data import pad_examples
from ...losses.base import mean_nll
from ...modeling import find_decoder_layers
from ..model_io import model_device, resolve_pad_token_id
from ..scoring import answer_forward
from .scoring import encode_qa

_FINAL_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm")


def _final_norm_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    head = base.get_output_embeddings() if callable(getattr(base, "get_output_embeddings", None)) else None
    decoder = base.get_decoder() if callable(getattr(base, "get_decoder", None)) else getattr(base, "model", None)
    norm = next((getattr(decoder, name) for name in _FINAL_NORM_NAMES if hasattr(decoder, name)), None)
    if head is None or norm is None:
        raise ValueError(
            f"The logit lens needs the model's final norm and LM head; none found on {type(base).__name__} (a "
            "transformers causal LM with `get_output_embeddings()` and a decoder with a `norm` is expected)."
        )
    return norm, head


@dataclass
class LogitLensResult:
    """`probabilities[l]`: the forget answers' mean probability decoded from decoder layer l's output (the last
    entry is the model's own); `per_question[l]`: each question's."""

    probabilities: list[float]
    per_question: list[list[float]]

    @property
    def peak_layer(self) -> int:
        """The layer from which the answers are most decodable."""
        return int(np.argmax(self.probabilities))

    def to_dict(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities, "per_question": self.per_question, "peak_layer": self.peak_layer}


@torch.no_grad()
def logit_lens(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    *,
    batch_size: int = 16,
    use_chat_template: bool | None = None,
) -> LogitLensResult:
    """The probability of each answer of `dataset` (question/answer rows) decoded from every decoder layer: the
    final norm and LM head applied to that layer's residual stream (the last layer's is the model's own logits).
    The model is left unchanged."""
    pairs = encode_qa(tokenizer, dataset, use_chat_template=use_chat_template)
    norm, head = _final_norm_and_head(model)
    layers = find_decoder_layers(model)
    if layers is None:
        raise ValueError(f"The logit lens needs the decoder layers of {type(model).__name__}; none were found.")
    pad = resolve_pad_token_id(tokenizer, owner="The logit lens")
    device = model_device(model)
    outputs: dict[int, torch.Tensor] = {}
    hooks = [
        layer.register_forward_hook(
            lambda m, a, out, i=i: outputs.__setitem__(i, out[0] if isinstance(out, tuple) else out)
        )
        for i, layer in enumerate(layers)
    ]
    was_training = model.training
    model.eval()
    per_layer: list[list[torch.Tensor]] = [[] for _ in layers]
    try:
        for start in range(0, len(pairs), batch_size):
            batch = {k: v.to(device) for k, v in pad_examples(pairs[start : start + batch_size], pad).items()}
            labels = batch["labels"]
            final = answer_forward(model, batch)  # a GRUN model is edited at each row's last prompt token
            for index in range(len(layers)):
                logits = final.logits if index == len(layers) - 1 else head(norm(outputs[index]))
                per_layer[index].append(torch.exp(-mean_nll(logits, labels)).double().cpu())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    per_question = [torch.cat(values).tolist() for values in per_layer]
    return LogitLensResult([float(np.mean(values)) for values in per_question], per_question)
