"""Small models and tokenizers built locally (no download): for tests, the offline quickstart and benchmarks."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..data.collator import pad_examples
from ..data.formatting import PromptEncoder

#: torch threads for the demos' tiny models when neither `--threads` nor OMP_NUM_THREADS says: their matrices are so
#: small that thread hand-offs dominate a step, and with several threads every step waits for the slowest core. On a
#: 2-core machine with one core busy, GRUN's 42 quickstart steps took 128.0 s on torch's default 2 threads and 20.8 s
#: on one (6.1 s against 48.2 s under the other load of a shared machine).
DEMO_THREADS = 1


def set_demo_threads(threads: int | None = None, tiny: bool = True) -> int:
    """Set torch's thread count for a demo and return it: `threads` when given; else, for tiny models,
    [`DEMO_THREADS`] unless OMP_NUM_THREADS is set (torch's default then follows it); a real model (`tiny=False`)
    keeps torch's default."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}.")
        torch.set_num_threads(threads)
    elif tiny and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(DEMO_THREADS)
    return torch.get_num_threads()


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 2048, pad_token: str | None = "<pad>"
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with `<s>` (BOS, prepended), `</s>` (EOS) and a pad token."""
    special = ["<unk>", "<s>", "</s>"] + ([pad_token] if pad_token else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token=pad_token
    )


def llama_shape(heads: int = 0, kv_heads: int = 0, intermediate: int = 0, tie_embeddings: bool = False) -> dict:
    """`LlamaConfig` overrides for [`tiny_llama`] from the benchmarks' shape options; 0 / False leaves the default."""
    shape: dict = {}
    if heads:
        shape["num_attention_heads"] = heads
    if kv_heads:
        shape["num_key_value_heads"] = kv_heads
    if intermediate:
        shape["intermediate_size"] = intermediate
    if tie_embeddings:
        shape["tie_word_embeddings"] = True
    return shape


def tiny_llama(
    vocab_size: int,
    num_layers: int = 2,
    hidden_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    **overrides,
) -> LlamaForCausalLM:
    """A randomly initialised Llama with a few layers, in `dtype` on `device` (default: float32 on the CPU). A dtype
    other than float32 builds the model in place on the device, without a float32 copy on the CPU first (what a
    1B-shaped benchmark model needs)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=overrides.pop("intermediate_size", hidden_size * 2),
        num_hidden_layers=num_layers,
        num_attention_heads=overrides.pop("num_attention_heads", max(1, hidden_size // 32)),
        num_key_value_heads=overrides.pop("num_key_value_heads", max(1, hidden_size // 32)),
        max_position_embeddings=overrides.pop("max_position_embeddings", 512),
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=overrides.pop("tie_word_embeddings", False),
        **overrides,
    )
    if dtype == torch.float32:
        model = LlamaForCausalLM(config)
        return model.to(device) if device is not None else model
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device or "cpu"):
            return LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)


def finetune_on_qa(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    questions: Sequence[str],
    answers: Sequence[str],
    epochs: int = 30,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Teach `model` the answers (answer tokens only, as in TOFU fine-tuning); returns the mean loss per epoch.

    A plain AdamW loop with cosine decay: quick on CPU for the tiny models above, so that the quickstart and the tests
    start from a model that has memorised its data (the "target" model of an unlearning benchmark).
    """
    encoder = PromptEncoder(tokenizer)
    examples = [encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(questions, answers)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    steps = epochs * math.ceil(len(examples) / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    order = list(range(len(examples)))
    rng = random.Random(seed)
    model.train()
    history = []
    bar = tqdm(range(epochs), desc="Fine-tuning the tiny model", disable=not progress)
    for _ in bar:
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), batch_size):
            batch = pad_examples([examples[i] for i in order[start : start + batch_size]], tokenizer.pad_token_id)
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        history.append(sum(losses) / len(losses))
        bar.set_postfix(loss=f"{history[-1]:.3f}")
    model.eval()
    return history
