"""GRUN: gated representation unlearning (Ren et al. 2025, "A General Framework to Enhance Fine-tuning-based LLM
Unlearning", arXiv 2502.17823) as a pyreft intervention.

The model stays frozen; a gated LoReFT edit of the residual stream at the last prompt token of a few decoder layers,
h' = h + sigmoid(g(h)) * R^T (W h + b - R h), learns to fire on the forget data and to stay shut elsewhere:

```python
from hf_unlearn import UnlearningConfig
from hf_unlearn.grun import GRUNConfig, GRUNTrainer, get_grun_model, load_grun_model, save_grun_model

grun_model = get_grun_model(model, GRUNConfig(layers=[20, 25, 31], rank=4, forget_loss="npo"))
args = UnlearningConfig(output_dir="out", learning_rate=4e-3, per_device_train_batch_size=16)
GRUNTrainer(grun_model, args, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer).train()
save_grun_model(grun_model, "out/grun")            # grun_config.json + grun_interventions.safetensors
grun_model = load_grun_model(model, "out/grun")      # or a list of folders: sequential requests, stacked
grun_model.generate(input_ids=..., attention_mask=..., max_new_tokens=64)
```

Installation. pyreft releases after 0.0.7 pin transformers 4.45.1, and 0.0.7 declares jupyter, wandb,
ydata-profiling, gcsfs, seaborn==0.12.2, ... which do not resolve beside transformers 5. GRUN only needs what pyreft
and pyvene import, so they are installed without their declared dependencies (verified with torch 2.11 and 2.13,
transformers 5.17 and 5.24, datasets 5.0.1 and 5.2; it changes no installed package):

    pip install 'hf-unlearn[grun]'                       # evaluate and networkx, which pyreft / pyvene import
    pip install --no-deps pyreft==0.0.7 pyvene==0.1.8

(`pyreft/__init__.py` imports its trainer, which imports `evaluate`; pyvene imports `networkx` and `matplotlib`.)
pyreft's loading helpers, trainer and `print_trainable_parameters` are not used (they assume CUDA and transformers
4 on load); [`save_grun_model`] / [`load_grun_model`] are ours.

Only [`GRUNConfig`] is importable without pyreft; the other names import it on first use and raise an ImportError
that gives the install command when it is missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import DEFAULT_RETAIN_WEIGHTS, GRUNConfig

_LAZY = {
    "GatedLoreftIntervention": "intervention",
    "GRUNModel": "model",
    "GRUNRequest": "model",
    "get_grun_model": "model",
    "last_prompt_positions": "model",
    "save_grun_model": "io",
    "load_grun_model": "io",
    "read_grun_config": "io",
    "GRUNTrainer": "trainer",
}

if TYPE_CHECKING:  # names for type checkers; imported lazily at run time (they need pyreft)
    from .intervention import GatedLoreftIntervention
    from .io import load_grun_model, read_grun_config, save_grun_model
    from .model import GRUNModel, GRUNRequest, get_grun_model, last_prompt_positions
    from .trainer import GRUNTrainer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_RETAIN_WEIGHTS",
    "GRUNConfig",
    "GRUNModel",
    "GRUNRequest",
    "GRUNTrainer",
    "GatedLoreftIntervention",
    "get_grun_model",
    "last_prompt_positions",
    "load_grun_model",
    "read_grun_config",
    "save_grun_model",
]
