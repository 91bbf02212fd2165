"""Saving and loading GRUN modules (our own code: safetensors + JSON, exact on any device).

A saved folder holds two files:

- `grun_config.json`: `base_model_name_or_path`, the format version, the hidden size and, under `requests`, one
  entry per unlearning request (oldest first): its [`GRUNConfig`] fields, its `request_id` and its resolved layers.
  The Hub code recognises a GRUN folder by this file.
- `grun_interventions.safetensors`: every tensor of every gated module (including the orthogonal parametrization's
  tensors, so that the rotation is restored bit for bit), keyed `request_{i}.layer_{l}.{name}`.

pyreft's own helpers are not used: on transformers 5 they load interventions on CUDA only and lose their dtype.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..constants import GRUN_CONFIG_FILE, GRUN_WEIGHTS_FILE
from .config import GRUNConfig
from .model import GRUNModel, GRUNRequest, _hidden_size, get_grun_model, new_request

FORMAT_VERSION = 1


def _tensor_key(request_index: int, layer: int, name: str) -> str:
    return f"request_{request_index}.layer_{layer}.{name}"


def save_grun_model(model: GRUNModel, directory: str | os.PathLike) -> None:
    """Write `grun_config.json` and `grun_interventions.safetensors` for all requests of `model` into `directory`.

    The base model is not saved: load it again and call [`load_grun_model`]. Tensors are saved in their own dtype
    (float32 by default), contiguous and on the CPU.
    """
    if not isinstance(model, GRUNModel):
        raise TypeError(f"save_grun_model expects a GRUNModel (from get_grun_model), got {type(model).__name__}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    requests = []
    for index, request in enumerate(model.requests):
        for layer, module in request.modules.items():
            for name, value in torch.nn.Module.state_dict(module).items():
                tensors[_tensor_key(index, layer, name)] = value.detach().to("cpu").contiguous()
        requests.append(
            {**request.config.to_dict(), "request_id": request.request_id, "resolved_layers": sorted(request.modules)}
        )
    config = {
        "base_model_name_or_path": getattr(model.model.config, "_name_or_path", None) or None,
        "format_version": FORMAT_VERSION,
        "hidden_size": _hidden_size(model.model),
        "requests": requests,
    }
    save_file(tensors, str(directory / GRUN_WEIGHTS_FILE), metadata={"format": "pt", "method": "grun"})
    (directory / GRUN_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def read_grun_config(directory: str | os.PathLike) -> dict:
    """The parsed `grun_config.json` of a saved folder (clear errors for a missing or foreign file)."""
    path = Path(directory) / GRUN_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} holds no {GRUN_CONFIG_FILE}: it is not a saved GRUN model (save one with save_grun_model "
            "or GRUNTrainer.save_model)."
        )
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("requests"), list) or not config["requests"]:
        raise ValueError(f"{path} has no `requests` list: it was not written by hf_unlearn.grun.save_grun_model.")
    if config.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {config['format_version']}, newer than this hf_unlearn reads "
            f"({FORMAT_VERSION}); upgrade hf_unlearn."
        )
    return config


def load_grun_model(
    base_model: torch.nn.Module,
    path_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
    is_trainable: bool = False,
) -> GRUNModel:
    """Re-attach saved GRUN modules to `base_model` (the same base model they were trained on).

    Several folders are stacked in the order given (sequential unlearning: h + sum_i s_i(h) edit_i(h)); a request
    found in two folders (the same `request_id`, e.g. a folder saved after request 2 also holds request 1) is loaded
    once. The modules are created in their saved dtype on the base model's device and their tensors copied
    exactly.

    Args:
        base_model: the transformers model the modules were trained on (its parameters get frozen).
        path_or_paths: a saved folder or a list of them.
        is_trainable: leave the newest request trainable (to continue its training); by default every module is
            frozen, as for inference. To add a new request on top, call `get_grun_model(loaded, new_config)`.

    Returns:
        A [`GRUNModel`] in eval mode.
    """
    if isinstance(base_model, GRUNModel):
        raise TypeError("load_grun_model expects the base transformers model, not a GRUNModel; pass `model.model`.")
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    if not paths:
        raise ValueError("load_grun_model needs at least one saved GRUN folder.")
    hidden_size = _hidden_size(base_model)
    device = next(base_model.parameters()).device
    requests: list[GRUNRequest] = []
    seen: set[str] = set()
    for path in paths:
        saved = read_grun_config(path)
        if saved.get("hidden_size", hidden_size) != hidden_size:
            raise ValueError(
                f"The GRUN modules in {path} were trained on a model of hidden size {saved['hidden_size']}, but the "
                f"base model has {hidden_size}: load them on their base model "
                f"({saved.get('base_model_name_or_path')})."
            )
        weights_path = Path(path) / GRUN_WEIGHTS_FILE
        if not weights_path.is_file():
            raise FileNotFoundError(f"{path} has {GRUN_CONFIG_FILE} but no {GRUN_WEIGHTS_FILE}.")
        tensors = load_file(str(weights_path), device="cpu")
        for index, entry in enumerate(saved["requests"]):
            entry = dict(entry)
            request_id = entry.pop("request_id")
            layers = entry.pop("resolved_layers")
            if request_id in seen:
                continue
            seen.add(request_id)
            request = new_request(base_model, GRUNConfig.from_dict(entry))
            if sorted(request.modules) != sorted(layers):
                raise ValueError(
                    f"{path}: request {index} was saved for layers {layers}, which this model resolves "
                    f"to {sorted(request.modules)}."
                )
            request.request_id = request_id
            for layer, module in request.modules.items():
                prefix = _tensor_key(index, layer, "")
                state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
                # strict: a missing or unexpected tensor means the file does not match this module.
                module.load_state_dict(state, strict=True)
            requests.append(request)
    for param in base_model.parameters():
        param.requires_grad_(False)
    model = GRUNModel(base_model, requests)
    for request in requests:
        for module in request.modules.values():
            module.to(device)
            module.requires_grad_(is_trainable and request is requests[-1])
    model.eval()
    return model


def load_grun_weights_(model: GRUNModel, directory: str | os.PathLike) -> None:
    """Copy the weights saved in `directory` into `model`'s requests, in place, to resume training from a checkpoint.

    The folder must hold the same requests (same count, order and layers) as `model`; each request takes its saved
    weights and `request_id`.
    """
    saved = read_grun_config(directory)
    tensors = load_file(str(Path(directory) / GRUN_WEIGHTS_FILE), device="cpu")
    entries = saved["requests"]
    if len(entries) != len(model.requests):
        raise ValueError(
            f"{directory} holds {len(entries)} GRUN request(s) but the model has {len(model.requests)}: resume with "
            "the same GRUN configuration the checkpoint was written with."
        )
    for index, (request, entry) in enumerate(zip(model.requests, entries)):
        if sorted(request.modules) != sorted(entry["resolved_layers"]):
            raise ValueError(
                f"{directory}: request {index} was saved for layers {entry['resolved_layers']}, but the model's "
                f"request edits {sorted(request.modules)}."
            )
        for layer, module in request.modules.items():
            prefix = _tensor_key(index, layer, "")
            state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
            module.load_state_dict(state, strict=True)
        request.request_id = entry["request_id"]


__all__ = [
    "get_grun_model",
    "load_grun_model",
    "load_grun_weights_",
    "read_grun_config",
    "save_grun_model",
]
