"""Plots of G-effects (PNG, matplotlib's Agg canvas; pyplot and the global backend are left alone).

Per-layer heat maps over steps and accumulated curves, for one objective or several side by side. Colours: red is
negative (forget: the forget risk rises; retain: retention harmed), blue is positive, white is zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..evaluation.plots import save_figure
from .geffect import GEffect

__all__ = [
    "accumulated",
    "plot_geffect_comparison",
    "plot_geffect_curves",
    "plot_geffect_groups",
    "plot_geffect_heatmap",
]

Records = Sequence[GEffect | Mapping[str, Any]]
SPLIT_LABELS = {"forget": "forget risk", "retain": "retain risk"}


def _records(records: Records, name: str = "run") -> list[GEffect]:
    if isinstance(records, (GEffect, Mapping)):
        records = [records]
    out = [r if isinstance(r, GEffect) else GEffect.from_dict(r) for r in records]
    if not out:
        raise ValueError(f"{name!r} has no G-effect records: there is nothing to plot.")
    return sorted(out, key=lambda r: -1 if r.step is None else r.step)


def _runs(runs: Mapping[str, Records] | Records) -> dict[str, list[GEffect]]:
    if not isinstance(runs, Mapping) or "forget" in runs:
        runs = {"": runs}
    if not runs:
        raise ValueError("No runs given: there is nothing to plot.")
    return {str(name): _records(records, name) for name, records in runs.items()}


def _steps(records: list[GEffect]) -> np.ndarray:
    return np.array([i if r.step is None else r.step for i, r in enumerate(records)], dtype=float)


def accumulated(records: Records, split: str = "forget") -> tuple[np.ndarray, np.ndarray]:
    """`(steps, A)` with A(s) = integral from the first recorded step to s of the G-effect (trapezoid rule).

    It estimates the sum of the per-step G-effects (the paper's accumulated G-effect) whatever the spacing of the
    recorded steps; times the learning rate it is the first-order change of the risk along a plain-SGD run.
    """
    if split not in SPLIT_LABELS:
        raise ValueError(f"split must be 'forget' or 'retain', got {split!r}.")
    records = _records(records)
    steps = _steps(records)
    values = np.array([getattr(r, split) for r in records], dtype=float)
    increments = np.diff(steps) * (values[1:] + values[:-1]) / 2
    return steps, np.concatenate([[0.0], np.cumsum(increments)])


def _group_matrix(records: list[GEffect], split: str) -> tuple[list[str], np.ndarray]:
    names: list[str] = []
    for r in records:
        names += [n for n in r.per_group if n not in names]
    column = 0 if split == "forget" else 1
    matrix = np.full((len(names), len(records)), np.nan)
    for j, r in enumerate(records):
        for i, name in enumerate(names):
            if name in r.per_group:
                matrix[i, j] = r.per_group[name][column]
    return names, matrix


def _draw_heatmap(fig: Figure, ax: Any, records: list[GEffect], split: str, title: str) -> None:
    names, matrix = _group_matrix(records, split)
    steps = _steps(records)
    limit = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
    limit = limit or 1.0
    image = ax.imshow(matrix, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
    ax.set_xticks(ticks, [f"{steps[t]:g}" for t in ticks], fontsize=7)
    ax.set_xlabel("step", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)


def _draw_curves(ax: Any, runs: dict[str, list[GEffect]], split: str) -> None:
    for name, records in runs.items():
        steps, values = accumulated(records, split)
        ax.plot(steps, values, marker="o", markersize=2.5, label=name or None)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("accumulated G-effect")
    ax.set_title(f"{SPLIT_LABELS[split]}: accumulated G-effect", fontsize=10)
    ax.grid(True, alpha=0.3)
    if any(runs):
        ax.legend(fontsize=8)


def plot_geffect_heatmap(records: Records, path: str | Path, title: str | None = None) -> Path:
    """Per-group G-effects over steps of one objective: a forget heat map and a retain heat map (rows: parameter
    groups, columns: recorded steps)."""
    records = _records(records)
    fig = Figure(figsize=(10, 0.3 * len(records[0].per_group) + 2.5))
    axes = fig.subplots(1, 2)
    for ax, split in zip(axes, SPLIT_LABELS):
        _draw_heatmap(fig, ax, records, split, f"G-effect on the {SPLIT_LABELS[split]}")
    fig.suptitle(title or f"G-effect per parameter group: {records[0].objective}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_geffect_curves(runs: Mapping[str, Records] | Records, path: str | Path, title: str | None = None) -> Path:
    """Accumulated G-effects over steps (forget and retain), one line per run (`{name: records}`)."""
    runs = _runs(runs)
    fig = Figure(figsize=(11, 4))
    for ax, split in zip(fig.subplots(1, 2), SPLIT_LABELS):
        _draw_curves(ax, runs, split)
    fig.suptitle(title or "Accumulated G-effect", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_geffect_comparison(runs: Mapping[str, Records] | Records, path: str | Path, title: str | None = None) -> Path:
    """Several objectives side by side: one column per run with its forget and retain per-group heat maps, and
    below them the accumulated forget and retain curves of all runs."""
    runs = _runs(runs)
    n_groups = max(len(r.per_group) for records in runs.values() for r in records)
    heat_height = max(2.2, 0.25 * n_groups + 1.2)
    fig = Figure(figsize=(max(8.0, 3.6 * len(runs)), 2 * heat_height + 3.8))
    grid = fig.add_gridspec(3, 2 * len(runs), height_ratios=[heat_height, heat_height, 3.8])
    for col, (name, records) in enumerate(runs.items()):
        for row, split in enumerate(SPLIT_LABELS):
            ax = fig.add_subplot(grid[row, 2 * col : 2 * col + 2])
            _draw_heatmap(fig, ax, records, split, f"{name or records[0].objective}: {SPLIT_LABELS[split]}")
    half = len(runs)
    for index, split in enumerate(SPLIT_LABELS):
        span = slice(0, half) if index == 0 else slice(half, 2 * half)
        _draw_curves(fig.add_subplot(grid[2, span]), runs, split)
    fig.suptitle(title or "G-effect per parameter group over steps (red: risk rises)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_geffect_groups(result: GEffect | Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Bar chart of one G-effect: forget and retain values per parameter group."""
    result = _records(result)[0]
    names = list(result.per_group)
    forget = [result.per_group[n][0] for n in names]
    retain = [result.per_group[n][1] for n in names]
    positions = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 0.55 * len(names) + 2), 4))
    ax = fig.add_subplot()
    ax.bar(positions - 0.2, forget, width=0.4, label=f"forget (total {result.forget:+.3g})", color="tab:red")
    ax.bar(positions + 0.2, retain, width=0.4, label=f"retain (total {result.retain:+.3g})", color="tab:blue")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("G-effect")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"G-effect per parameter group: {result.objective}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
