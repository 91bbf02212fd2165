"""Quantization attack: does a quantized copy of an unlearned model remember what the model forgot?

Zhang et al. 2024 ("Catastrophic Failure of LLM Unlearning via Quantization", arXiv 2410.16454) found that 4-bit
quantization of models unlearned with gradient-based methods restores much of the forgotten knowledge: the unlearning
updates are small next to the quantization step, so rounding undoes them. This module builds a quantized copy of a
model's linear layers by quantize-dequantize, group-wise, on any device:

- `"nf4"` (4 bits): QLoRA's NormalFloat code book (Dettmers et al. 2023, arXiv 2305.14314), absmax-scaled per group
  of `group_size` weights (bitsandbytes' default block size 64), as bitsandbytes' `quantize_4bit(quant_type="nf4")`;
- `"fp4"` (4 bits): bitsandbytes' FP4 code book ([`FP4_CODE_BOOK`]; 1 sign, 2 exponent and 1 mantissa bits,
  normalised to [-1, 1]), absmax-scaled per group, as bitsandbytes' `quantize_4bit(quant_type="fp4")`: the quant type
  of `BitsAndBytesConfig(load_in_4bit=True)` left at its defaults, the setting of Zhang et al.'s code
  (zzwjames/FailureLLMUnlearning, `utils.py`, `load_model`);
- `"int"` (2 to 8 bits): symmetric absmax integers per group, q = round(w / absmax * (2^(b-1) - 1)); with 8 bits and
  one group per output row this is LLM.int8()'s vector-wise absmax quantization without its outlier decomposition.

With `backend="bitsandbytes"` the round trip is bitsandbytes' own (`quantize_4bit` / `dequantize_4bit` with
`quant_type="nf4"` or `"fp4"`, `int8_vectorwise_quant` for 8 bits), on CUDA or on the CPU where bitsandbytes
supports it; `"auto"` (the default) uses it for a model on CUDA when bitsandbytes is installed. Both give the same
weights: NF4 and FP4 bit for bit, int8 to float32 rounding (tests/test_robustness.py compares them).

A 4-bit or 8-bit load through transformers (`BitsAndBytesConfig`) keeps the output embeddings (the LM head) and
tied weights in full precision; `keep_output_embeddings=True` does the same (the default, False, quantizes the LM
head too, as before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ...reference import independent_copy
from .scoring import answer_probabilities, encode_qa, stability_score

#: QLoRA's NF4 code book (the 16 values of bitsandbytes' `nf4` data type): quantiles of N(0, 1) normalised to [-1, 1]
#: with an exact zero, 8 positive and 7 negative values.
NF4_CODE_BOOK = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
#: bitsandbytes' FP4 code book, indexed by the 4-bit code as `bitsandbytes.functional.get_4bit_type("fp4")` lists
#: it: bit 3 is the sign; codes 0 and 8 are both zero; 0.0052083 (1/192) is the subnormal value.
FP4_CODE_BOOK = (
    0.0,
    0.005208333333333333,
    0.6666666666666666,
    1.0,
    0.3333333333333333,
    0.5,
    0.16666666666666666,
    0.25,
    0.0,
    -0.005208333333333333,
    -0.6666666666666666,
    -1.0,
    -0.3333333333333333,
    -0.5,
    -0.16666666666666666,
    -0.25,
)
CODE_BOOKS = {"nf4": NF4_CODE_BOOK, "fp4": FP4_CODE_BOOK}
SCHEMES = ("nf4", "fp4", "int")
BACKENDS = ("auto", "ours", "bitsandbytes")


def _groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    flat = weight.detach().float().reshape(-1)
    pad = (-flat.numel()) % group_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, group_size), pad


def quantize_dequantize(
    weight: torch.Tensor, bits: int = 4, scheme: str = "nf4", group_size: int = 64
) -> torch.Tensor:
    """`weight` after a round trip through the quantized format (same shape and dtype): absmax-scaled per group of
    `group_size` consecutive values, then rounded to the nearest NF4 or FP4 code (`scheme="nf4"` / `"fp4"`, 4 bits)
    or to a symmetric `bits`-bit integer (`"int"`).

    The 4-bit code books round as bitsandbytes does: values scaled by the reciprocal of their group's absmax (the
    last, partial group divided by it), clamped to [-1, 1], and sent to the code whose interval between midpoints of
    the sorted code book holds them (a value on a midpoint takes the lower code)."""
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown quantization scheme {scheme!r}; choose one of {list(SCHEMES)}.")
    if scheme in CODE_BOOKS and bits != 4:
        raise ValueError(
            f"{scheme.upper()} is a 4-bit code book; bits={bits} is not supported with it (use scheme='int')."
        )
    if scheme == "int" and not 2 <= bits <= 8:
        raise ValueError(f"Integer quantization supports 2 to 8 bits, got bits={bits}.")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}.")
    groups, pad = _groups(weight, group_size)
    absmax = groups.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    if scheme in CODE_BOOKS:
        book = torch.tensor(sorted(set(CODE_BOOKS[scheme])), dtype=torch.float32, device=groups.device)
        scaled = groups * absmax.reciprocal()
        if pad:  # the partial group is divided by its absmax, as bitsandbytes does
            scaled[-1] = groups[-1] / absmax[-1]
        midpoints = (book[:-1] + book[1:]) / 2
        restored = book[torch.bucketize(scaled.clamp(-1, 1), midpoints)] * absmax
    else:
        levels = 2 ** (bits - 1) - 1
        # w * (levels / absmax), in this order, as bitsandbytes' int8_vectorwise_quant: the same codes at ties
        restored = torch.round(groups * (levels / absmax)).clamp(-levels, levels) / levels * absmax
    restored = restored.reshape(-1)
    if pad:
        restored = restored[:-pad]
    return restored.view_as(weight).to(weight.dtype)


def _bitsandbytes_round_trip(weight: torch.Tensor, bits: int, scheme: str, group_size: int) -> torch.Tensor:
    """`weight` after bitsandbytes' quantization round trip (NF4 or FP4 in blocks of `group_size`, or int8 per
    row)."""
    import bitsandbytes.functional as bnb_functional

    if scheme in CODE_BOOKS and bits == 4:
        packed, state = bnb_functional.quantize_4bit(weight.detach(), blocksize=group_size, quant_type=scheme)
        return bnb_functional.dequantize_4bit(packed, state).to(weight.dtype)
    # LLM.int8()'s vector-wise absmax quantization: one scale per output row
    codes, row_absmax, _ = bnb_functional.int8_vectorwise_quant(weight.detach().float())
    return (codes.float() * row_absmax.float().unsqueeze(1) / 127).to(weight.dtype)


def resolve_backend(model: torch.nn.Module, backend: str, bits: int, scheme: str) -> str:
    """`"ours"` or `"bitsandbytes"` for `backend` (`"auto"`: bitsandbytes for a model on CUDA when it is installed);
    a clear error when bitsandbytes is asked for but missing or cannot do `bits`-bit `scheme`."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown quantization backend {backend!r}; choose one of {list(BACKENDS)}.")
    if backend == "ours":
        return backend
    supported = (bits, scheme) in ((4, "nf4"), (4, "fp4"), (8, "int"))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        if backend == "bitsandbytes":
            raise ImportError(
                "backend='bitsandbytes' needs bitsandbytes: `pip install bitsandbytes` (or use backend='ours', the "
                "same NF4 / absmax round trip in torch, on any device)."
            ) from err
        return "ours"
    if backend == "bitsandbytes":
        if not supported:
            raise ValueError(
                f"bitsandbytes quantizes to 4-bit NF4 or FP4 and 8-bit integers; {bits}-bit {scheme} needs "
                "backend='ours'."
            )
        return backend
    on_cuda = any(p.is_cuda for p in model.parameters())
    return "bitsandbytes" if on_cuda and supported else "ours"


def quantized_copy(
    model: torch.nn.Module,
    bits: int = 4,
    scheme: str | None = None,
    group_size: int = 64,
    progress: bool = False,
    backend: str = "auto",
    keep_output_embeddings: bool = False,
) -> torch.nn.Module:
    """A deep copy of `model` whose `nn.Linear` weights went through a quantization round trip (`scheme` None: NF4
    for 4 bits, integers otherwise): [`quantize_dequantize`] (`backend="ours"`) or bitsandbytes' (`"bitsandbytes"`;
    int8 then scales per output row, as LLM.int8(), whatever `group_size`); `"auto"` takes bitsandbytes for a model
    on CUDA when installed. The input model is untouched. Embeddings and norms are not quantized; the LM head is,
    unless `keep_output_embeddings` (what a transformers `BitsAndBytesConfig` load does: it leaves the output
    embeddings, and weights tied to them, in full precision)."""
    scheme = scheme or ("nf4" if bits == 4 else "int")
    quantize_dequantize(torch.zeros(1), bits, scheme, group_size)  # checks the settings before any copy
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to quantize.")
    backend = resolve_backend(model, backend, bits, scheme)
    round_trip = _bitsandbytes_round_trip if backend == "bitsandbytes" else quantize_dequantize
    quantized = independent_copy(model)
    kept: set[int] = set()
    if keep_output_embeddings and hasattr(quantized, "get_output_embeddings"):
        head = quantized.get_output_embeddings()
        if head is not None:
            kept.add(id(head))
    with torch.no_grad():
        for module in tqdm(
            [m for m in quantized.modules() if isinstance(m, torch.nn.Linear) and id(m) not in kept],
            desc=f"Quantizing to {bits}-bit {scheme} ({backend})",
            disable=not progress,
            leave=False,
        ):
            module.weight.copy_(round_trip(module.weight, bits, scheme, group_size))
    return quantized


@dataclass
class QuantizationAttackResult:
    """The forget answers' mean probability before and after quantization, and Q (1: quantization changes
    nothing; towards 0: it moves the metric as far as its own size)."""

    bits: int
    scheme: str
    group_size: int
    before: float
    after: float
    score: float
    backend: str = "ours"
    keep_output_embeddings: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def quantization_attack(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    forget_dataset: Any,
    *,
    bits: int = 4,
    scheme: str | None = None,
    group_size: int = 64,
    batch_size: int = 16,
    use_chat_template: bool | None = None,
    progress: bool = False,
    backend: str = "auto",
    keep_output_embeddings: bool = False,
) -> QuantizationAttackResult:
    """The forget answers' probability (TOFU's, mean over questions) of `model` and of a quantized copy
    ([`quantized_copy`]), and the stability score Q = 1 - |m_after - m_before| / (|m_before| + |m_after|). The input
    model is left unchanged. `backend`, `keep_output_embeddings`: see [`quantized_copy`]."""
    pairs = encode_qa(tokenizer, forget_dataset, use_chat_template=use_chat_template, what="forget dataset")
    scheme = scheme or ("nf4" if bits == 4 else "int")
    backend = resolve_backend(model, backend, bits, scheme)
    before = float(answer_probabilities(model, tokenizer, pairs, batch_size).mean())
    quantized = quantized_copy(model, bits, scheme, group_size, progress, backend, keep_output_embeddings)
    after = float(answer_probabilities(quantized, tokenizer, pairs, batch_size).mean())
    del quantized
    if not (math.isfinite(before) and math.isfinite(after)):
        raise ValueError(f"The forget metric is not finite (before {before}, after {after}).")
    score = stability_score(before, after)
    return QuantizationAttackResult(bits, scheme, group_size, before, after, score, backend, keep_output_embeddings)
