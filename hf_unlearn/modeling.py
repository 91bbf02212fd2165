"""Finding the decoder layers of a causal LM: used by the losses (RMU, the last layer's output), GRUN (where its edits
go), the logit lens and the G-effect (per-layer groups of parameters)."""

from __future__ import annotations

import torch

__all__ = ["DECODER_LAYER_LIST_NAMES", "find_decoder_layers", "named_decoder_layers"]

#: Attribute names of the decoder-layer list in transformers models (Llama, Qwen, Mistral: "layers"; GPT-2: "h";
#: MPT: "blocks").
DECODER_LAYER_LIST_NAMES = ("layers", "h", "blocks", "block", "layer")


def named_decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """`(attribute path, ModuleList)` of a causal LM's decoder layers, through peft / GRUN wrappers (which forward
    `config`); None if the model has no `config` or no such list (named one of `DECODER_LAYER_LIST_NAMES`, with
    `num_hidden_layers` entries)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = getattr(text_config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) == num_layers
            and name.split(".")[-1] in DECODER_LAYER_LIST_NAMES
        ):
            return name, module
    return None


def find_decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The ModuleList of decoder layers of a causal LM, through DDP / peft / GRUN wrappers; None if not found."""
    if getattr(model, "config", None) is None and hasattr(model, "module"):  # DDP
        model = model.module
    found = named_decoder_layers(model)
    return found[1] if found is not None else None
