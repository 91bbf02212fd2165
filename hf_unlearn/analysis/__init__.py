"""Analysis tools for unlearning objectives: the G-effect (Wang et al., ICLR 2025, "Rethinking LLM Unlearning
Objectives: A Gradient Perspective and Go Beyond").

- [`compute_g_effect`]: e_f = <grad R_f, grad L> and e_r = <grad R_r, grad L> of an objective L, in total, per
  parameter group and per instance (negative forget: the forget risk rises; negative retain: retention harmed).
- [`GEffectCallback`]: the same over the steps of an `UnlearningTrainer` run (logged, and saved to `geffect.json`).
- Plots: per-group heat maps over steps and accumulated curves, one objective or several side by side.
- `hf-unlearn analyze`: the G-effect of an objective at a saved model, from the command line.
"""

from ..constants import GEFFECT_FILE
from ..io import write_json_atomic
from .callback import GEffectCallback, load_geffect_records
from .geffect import GEffect, build_geffect_batch, compute_g_effect, parameter_groups, resolve_objective
from .plots import (
    accumulated,
    plot_geffect_comparison,
    plot_geffect_curves,
    plot_geffect_groups,
    plot_geffect_heatmap,
)

__all__ = [
    "GEFFECT_FILE",
    "GEffect",
    "GEffectCallback",
    "accumulated",
    "build_geffect_batch",
    "compute_g_effect",
    "load_geffect_records",
    "parameter_groups",
    "plot_geffect_comparison",
    "plot_geffect_curves",
    "plot_geffect_groups",
    "plot_geffect_heatmap",
    "resolve_objective",
    "write_json_atomic",
]
