"""Moved to `hf_unlearn.demo.tiny`; kept importable here."""

from .demo.tiny import finetune_on_qa, tiny_llama, train_tokenizer

__all__ = ["finetune_on_qa", "tiny_llama", "train_tokenizer"]
