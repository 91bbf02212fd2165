"""The comparison's report (`report.md`) and plots, built from `results.json` alone: `hf-unlearn compare --config
FILE --report-only` (or [`write_report`]) regenerates them without running anything."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_text_atomic
from .config import CompareConfig

__all__ = ["format_report", "load_results", "write_report"]

#: The columns of the matched-forgetting tables: summary key -> header.
COLUMNS = {
    "forget_probability": "forget prob.",
    "forget_rougeL_recall": "forget ROUGE-L",
    "forget_quality": "log10 FQ",
    "retain_probability": "retain prob.",
    "retain_rougeL_recall": "retain ROUGE-L",
    "retain_truth_ratio": "retain truth ratio",
    "retain_utility": "retain-author utility",
    "model_utility": "model utility",
}
#: The columns of a MUSE comparison's tables.
MUSE_COLUMNS = {
    "knowmem_forget_rougeL_f1": "KnowMem forget",
    "verbmem_forget_rougeL_f1": "VerbMem forget",
    "privleak_auc": "PrivLeak AUC",
    "knowmem_retain_rougeL_f1": "KnowMem retain",
}


def load_results(output_dir: str | Path) -> dict[str, Any]:
    path = Path(output_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the comparison has not finished in {output_dir}.")
    return json.loads(path.read_text(encoding="utf-8"))


def _value(key: str, value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    if key == "forget_quality":
        return math.log10(value) if value > 0 else -math.inf
    return value


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _columns(config: CompareConfig) -> list[str]:
    if config.data.source == "muse":
        return list(MUSE_COLUMNS)
    keys = [k for k in COLUMNS if k not in ("retain_utility", "model_utility")]
    return keys + [config.utility]


def matched_table(results: Mapping[str, Any], config: CompareConfig, target: str) -> str:
    """One target's table: per method, the chosen rate, the seeds that reached it, the step and the metrics at the
    matched points (mean ± std over the seeds), the target's metric first."""
    named = config.targets[target]
    metric = named.target.metric
    columns = _columns(config)
    names = {**COLUMNS, **MUSE_COLUMNS}
    header = ["method", "lr", "seeds reached", "steps", f"matched {metric}", *(names[c] for c in columns)]
    lines = [f"### {target}: {named.title} (tolerance {named.tolerance:g})", ""]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, summary in results["references"].items():
        cells = [
            f"*{name}*",
            "-",
            "-",
            "-",
            _cell([v] if (v := _value(metric, summary.get(metric))) is not None else []),
        ]
        cells += [_cell([v] if (v := _value(c, summary.get(c))) is not None else []) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    labels = config.labels
    for method in config.methods:
        rate = results["chosen"][method][target]
        runs = [r for r in results["runs"] if r["method"] == method and r["learning_rate"] == rate]
        matched = [r["matched"][target] for r in runs if r["matched"].get(target)]
        tracked = config.methods[method].targets
        if tracked is not None and target not in tracked:
            lines.append(f"| {labels[method]} | - | - | not run to this target |" + " - |" * (len(header) - 4))
            continue
        if rate is None or not matched:
            lines.append(
                f"| {labels[method]} | - | 0/{len(config.seeds)} | not reached |" + " - |" * (len(header) - 4)
            )
            continue
        steps = [m["step"] for m in matched]
        step_cell = f"{steps[0]}" if len(steps) == 1 else f"{np.mean(steps):.0f} ± {np.std(steps, ddof=1):.0f}"
        cells = [labels[method], f"{rate:g}", f"{len(matched)}/{len(config.seeds)}", step_cell]
        cells.append(_cell([_value(metric, m["forget_metric"]) for m in matched]))
        for c in columns:
            values = [_value(c, m["summary"].get(c)) for m in matched]
            cells.append(_cell([v for v in values if v is not None]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_table(results: Mapping[str, Any]) -> str:
    lines = [
        "| claim | target | verdict (mean ± std of the paired utility differences) | matched forget metric gaps |"
    ]
    lines.append("|---|---|---|---|")
    for v in results["verdicts"]:
        gaps = ", ".join(f"{g:.3g}" for g in v["forget_gaps"]) or "-"
        lines.append(f"| {v['claim']} | {v['target']} | {v['cell']} | {gaps} |")
    return "\n".join(lines)


def cost_summary(results: Mapping[str, Any]) -> str:
    totals: dict[str, float] = {}
    for run in results["runs"]:
        for key, value in run["seconds"].items():
            totals[key] = totals.get(key, 0.0) + float(value)
    total = totals.get("total", 0.0)
    share = totals.get("trajectory_evaluation", 0.0) / total if total else 0.0
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in totals.items() if k != "total")
    return (
        f"{len(results['runs'])} runs took {total:.0f} s of worker time ({parts}); the cheap evaluations along the "
        f"trajectories were {100 * share:.0f}% of it."
    )


def attack_table(results: Mapping[str, Any], config: CompareConfig) -> str:
    """Each attacked matched model (at its chosen rate): every attack's measure before and after it (the forget
    answers' probability; the relearning attack measures the held-out half of the forget questions)."""
    if config.attacks is None:
        return ""
    target = config.attacks.target
    rows = []
    for run in results["runs"]:
        entry = run["matched"].get(target) or {}
        if entry.get("attacks") and results["chosen"][run["method"]][target] == run["learning_rate"]:
            rows.append((run, entry["attacks"]))
    names = list(dict.fromkeys(name for _, attacks in rows for name in attacks))
    lines = [f"## Attacks on the matched models at {target}", "", "Forget answers' probability before → after."]
    lines += ["", "| method | seed | " + " | ".join(names) + " |", "|---|---:|" + "---|" * len(names)]
    labels = config.labels
    for run, attacks in rows:
        cells = []
        for name in names:
            result = attacks.get(name) or {}
            before, after = result.get("before"), result.get("after")
            cells.append("-" if before is None or after is None else f"{before:.3f} → {after:.3f}")
        lines.append(f"| {labels[run['method']]} | {run['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(results: Mapping[str, Any]) -> str:
    """`report.md`'s text."""
    config = CompareConfig.from_dict(results["config"])
    budget = f"{config.max_steps} steps" if config.max_steps else f"{config.max_epochs:g} passes over the forget set"
    refine = {
        "replay": "the run is replayed (same seed, data order and schedule) and evaluated at every step since the "
        "evaluation before the one that met the target: the matched point is the first step meeting it",
        "none": "the first cheap evaluation meeting the target (it may overshoot it)",
    }[config.refine]
    lines = [
        "# Methods compared at matched forgetting",
        "",
        "Generated by `hf-unlearn compare` from `results.json`; the settings below were fixed before the runs.",
        "",
        "## Setup",
        "",
        f"- **Target model**: `{config.target_model}`; **retain model**: "
        f"`{config.retain_model or config.retain_logs or 'none (no forget quality)'}`.",
        f"- **Data**: {config.data.describe()}.",
        "- **Methods** (rates): "
        + "; ".join(
            f"{s.display_label()} ({', '.join(f'{r:g}' for r in s.learning_rates)})" for s in config.methods.values()
        )
        + ".",
        "- **Targets**: "
        + "; ".join(f"`{n}`: {t.title} (tolerance {t.tolerance:g})" for n, t in config.targets.items())
        + ".",
        f"- **Runs**: budget {budget} (x each method's steps factor), a cheap evaluation of the target metrics "
        f"before the first step and every {config.eval_every} steps; a run stops once it has met every target. "
        f"Matched point: {refine}. Seeds {config.seeds}.",
        f"- **The rate rule**: per method and target, among the seed-{config.seeds[0]} runs over the grid, the rate "
        f"that reaches the target with the highest {config.utility} at its matched point (ties: the smaller rate); "
        "the other seeds run that rate.",
        '- **The verdict rule**: a claim "A keeps more utility than B at the same forgetting" *holds* if A\'s '
        f"utility is higher on every seed and by at least {config.min_effect:g} on average, is *contradicted* if "
        "lower on every seed by as much, shows *no clear difference* otherwise; it is *not testable* unless both "
        "reached the target on every seed with forget metrics at their matched points within the target's tolerance.",
        "",
        "## Results at matched forgetting (mean ± std over the seeds that reached the target)",
        "",
        'Forget quality as log10 (-2 is TOFU\'s 0.01 line). "steps": optimizer steps to the matched point.',
        "",
    ]
    for target in config.targets:
        lines += [matched_table(results, config, target), ""]
    if results.get("verdicts"):
        lines += ["## Verdicts", "", verdict_table(results), ""]
    attacks = attack_table(results, config)
    if attacks:
        lines += [attacks, ""]
    lines += ["## Cost", "", cost_summary(results), ""]
    machine = results.get("machine", {})
    if machine:
        lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".")
    return "\n".join(lines).rstrip() + "\n"


def plot(results: Mapping[str, Any], output_dir: Path) -> list[Path]:
    """`utility_at_targets.png` (utility at the matched point against the target metric there, per target) and
    `trajectories.png` (each method's first-seed trajectory at its chosen rate of the first target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = CompareConfig.from_dict(results["config"])
    labels = config.labels
    paths = []
    fig, axes = plt.subplots(1, len(config.targets), figsize=(5 * len(config.targets), 4), squeeze=False)
    for ax, (target, named) in zip(axes[0], config.targets.items()):
        for method in config.methods:
            rate = results["chosen"][method][target]
            points = [
                r["matched"][target]
                for r in results["runs"]
                if r["method"] == method and r["learning_rate"] == rate and r["matched"].get(target)
            ]
            if points:
                ax.scatter([p["forget_metric"] for p in points], [p["utility"] for p in points], label=labels[method])
        ax.axvline(named.target.threshold, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(named.target.metric)
        ax.set_ylabel(config.utility)
        ax.set_title(f"{target}: {named.title}")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(output_dir / "utility_at_targets.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    first_target = next(iter(config.targets.values()))
    metric = first_target.target.metric
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in config.methods:
        rate = results["chosen"][method][first_target.name] or config.methods[method].learning_rates[0]
        run = next(
            (r for r in results["runs"] if r["method"] == method and r["learning_rate"] == rate
             and r["seed"] == config.seeds[0]), None)  # fmt: skip
        if run:
            points = [p for p in run["trajectory"] if p.get(metric) is not None]
            ax.plot([p["step"] for p in points], [p[metric] for p in points], label=f"{labels[method]} ({rate:g})")
    ax.axhline(first_target.target.threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(output_dir / "trajectories.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def write_report(results: Mapping[str, Any], output_dir: str | Path, plots: bool = True) -> str:
    """Write `report.md` (and the plots) into `output_dir`; returns the report's text."""
    output_dir = Path(output_dir)
    text = format_report(results)
    write_text_atomic(output_dir / "report.md", text)
    if plots:
        plot(results, output_dir)
    return text
