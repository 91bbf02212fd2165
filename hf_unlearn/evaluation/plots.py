"""Plots of unlearning results (PNG, matplotlib's Agg canvas; pyplot and the global backend are left alone)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_fq_vs_utility", "plot_metrics_over_steps"]

_STEP_KEYS = ("step", "global_step")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` (creating its folder) without a display backend."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, format="png")
    return path


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def plot_fq_vs_utility(
    summaries: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    title: str | None = None,
    utility_label: str = "model utility",
) -> Path:
    """Scatter of forget quality (log scale) against model utility, one labelled point per run.

    Args:
        summaries: run name -> TOFU summary (the dict of ``TOFUEvaluator.evaluate`` / ``tofu_summary_from_logs``,
            or any mapping with ``forget_quality`` and ``model_utility``).
        path: the PNG to write (parent directories are created).
        title: figure title.
        utility_label: the x axis label (e.g. "utility over the retain authors" where world knowledge is absent).

    Runs without both numbers (e.g. ``forget_quality`` None: no retain logs) are left out; none left is an error.
    Forget quality 0 (a p-value that underflowed) is drawn at the smallest positive value of the plot.
    """
    points = []
    for name, summary in summaries.items():
        fq, mu = _number(summary.get("forget_quality")), _number(summary.get("model_utility"))
        if fq is not None and mu is not None:
            points.append((str(name), mu, fq))
    if not points:
        raise ValueError(
            "No run has both 'forget_quality' and 'model_utility' (forget quality needs the retain model's logs); "
            f"runs given: {sorted(summaries)}."
        )
    positive = [fq for _, _, fq in points if fq > 0]
    floor = min(positive) / 10 if positive else 1e-30
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    markers = "osD^vP*Xh<>p"
    for index, (name, mu, fq) in enumerate(points):
        # A legend rather than labels beside the points: runs often land on top of each other.
        ax.scatter([mu], [max(fq, floor)], s=45, marker=markers[index % len(markers)], label=name, alpha=0.85)
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(utility_label)
    ax.set_ylabel("forget quality (KS-test p-value)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title or "TOFU: forget quality vs model utility")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_metrics_over_steps(
    history: Sequence[Mapping[str, Any]], keys: Sequence[str], path: str | Path, title: str | None = None
) -> Path:
    """Line plot of metrics over training steps.

    Args:
        history: one dict per evaluation, holding the metrics and the step (``step`` or ``global_step``; the
            position in ``history`` when neither is there). Entries without a key (or with None) are skipped for it.
        keys: the metrics to draw, one line each.
        path: the PNG to write.
        title: figure title.
    """
    if isinstance(keys, str):
        keys = [keys]
    if not keys:
        raise ValueError("keys is empty: name at least one metric to plot.")
    if not history:
        raise ValueError("history is empty: there is nothing to plot.")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    drawn = []
    for key in keys:
        xs, ys = [], []
        for position, entry in enumerate(history):
            y = _number(entry.get(key))
            if y is None:
                continue
            step = next((entry[k] for k in _STEP_KEYS if _number(entry.get(k)) is not None), position)
            xs.append(float(step))
            ys.append(y)
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
            drawn.append(key)
    if not drawn:
        found = sorted({k for entry in history for k in entry})
        raise ValueError(f"None of the keys {list(keys)} has a numeric value in history; its keys are {found}.")
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Metrics over training steps")
    fig.tight_layout()
    return save_figure(fig, path)
