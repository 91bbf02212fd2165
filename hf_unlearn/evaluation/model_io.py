"""Model-calling helpers shared by the evaluators: device and vocabulary checks, padding and EOS ids, and batched
left-padded greedy generation (teacher-forced scoring is [`hf_unlearn.evaluation.scoring`]).

They work with transformers models, peft models and any ``torch.nn.Module`` whose ``forward(input_ids,
attention_mask)`` returns an object with ``logits`` (and, for generation, that has a transformers-style
``generate``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

__all__ = [
    "accepts_logits_to_keep",
    "check_vocabulary",
    "eos_token_ids",
    "greedy_generate",
    "model_device",
    "resolve_pad_token_id",
]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model (its ``device`` attribute, else that of its first parameter, else the CPU)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def embedding_rows(model: torch.nn.Module) -> int | None:
    """Rows of the model's input embedding matrix (``config.vocab_size`` when it has no ``get_input_embeddings``)."""
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    if embeddings is not None and getattr(embeddings, "num_embeddings", None) is not None:
        return int(embeddings.num_embeddings)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(vocab) if vocab is not None else None


def check_vocabulary(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise a clear ValueError when the tokenizer can produce ids past the model's embedding matrix."""
    if tokenizer is None or not callable(tokenizer):
        raise ValueError(
            f"A Hugging Face tokenizer is needed to evaluate the model, got {type(tokenizer).__name__}: pass the "
            "model's tokenizer (e.g. `AutoTokenizer.from_pretrained(...)`)."
        )
    rows = embedding_rows(model)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's embedding matrix only {rows} rows, "
            "so token ids past the model's vocabulary would crash the forward pass. Use the model's own tokenizer "
            "or call `model.resize_token_embeddings(len(tokenizer))` (after adding tokens)."
        )


def resolve_pad_token_id(tokenizer: PreTrainedTokenizerBase, owner: str = "The evaluator", stacklevel: int = 3) -> int:
    """The id to pad with: the tokenizer's pad token, else its EOS token (with a warning), else 0 (with a warning).

    Padding is always masked out, so any id works; the tokenizer is never modified.
    """
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        warnings.warn(
            f"The tokenizer has no pad token; {owner} pads with the EOS token (padding is masked out).",
            stacklevel=stacklevel,
        )
        return int(tokenizer.eos_token_id)
    warnings.warn(f"The tokenizer has neither a pad nor an EOS token; {owner} pads with id 0.", stacklevel=stacklevel)
    return 0


def eos_token_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int] | None:
    """EOS ids that end a generation: the model's generation config's and the tokenizer's (None if neither has one)."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        for v in [value] if isinstance(value, int) else list(value or []):
            if v not in ids:
                ids.append(int(v))
    return ids or None


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the model's forward (through peft too) takes ``logits_to_keep`` (transformers' causal LMs do)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def padded_batches(
    sequences: Sequence[list[int]],
    *,
    batch_size: int,
    pad_token_id: int,
    left: bool,
    progress: bool = False,
    desc: str = "",
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Sequences sorted by length (longest first), `batch_size` at a time: `(indices, input_ids, attention_mask)`,
    padded on the left (for generation) or on the right (for scoring), with a progress bar."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        chunk = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            span = slice(width - len(sequences[i]), width) if left else slice(0, len(sequences[i]))
            input_ids[row, span] = torch.tensor(sequences[i], dtype=torch.long)
            attention_mask[row, span] = 1
        yield chunk, input_ids, attention_mask


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    pad_token_id: int,
    eos_token_id: list[int] | None = None,
    progress: bool = False,
    desc: str = "generating",
    clean_up_tokenization_spaces: bool | None = None,
) -> list[str]:
    """Greedy continuations of tokenized prompts, decoded with special tokens skipped (not stripped).

    Prompts are sorted by length (longest first) and generated ``batch_size`` at a time with left padding built
    here (the tokenizer's padding side is never touched). Returns the texts in the order of ``prompts``; a prompt
    whose generation stopped at once (EOS first) gives ``""``. ``clean_up_tokenization_spaces`` goes to
    ``batch_decode`` (None: the tokenizer's own setting; MUSE's scripts pass True).
    """
    if not callable(getattr(model, "generate", None)):
        raise TypeError(
            f"{type(model).__name__} has no `generate` method; greedy generation needs a transformers-style model "
            "(a PreTrainedModel, a peft model, or a module that defines `generate(input_ids, attention_mask, ...)`)."
        )
    if any(len(p) == 0 for p in prompts):
        raise ValueError("A prompt encodes to no token at all; there is nothing to continue.")
    texts = [""] * len(prompts)
    device = model_device(model)
    batches = padded_batches(
        prompts, batch_size=batch_size, pad_token_id=pad_token_id, left=True, progress=progress, desc=desc
    )
    for chunk, input_ids, attention_mask in batches:
        width = input_ids.shape[1]
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
        )
        new_tokens = out[:, width:] if out.shape[1] > width else out[:, :0]
        decoded = tokenizer.batch_decode(
            new_tokens.tolist(), skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
        )
        for i, text in zip(chunk, decoded):
            texts[i] = text
    return texts
