"""TOFU-mini v2's report: the matched-forgetting tables, the verdicts, the robustness columns, the learning-rate grid,
the trade-off plots and RESULTS.md, all from a :class:`tofu_mini.BenchmarkResult` (a finished run's result.json)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tofu_mini_matched import MIN_EFFECT, Target, Verdict, paired_verdict

from hf_unlearn.evaluation.robustness import robustness_score
from hf_unlearn.io import write_text_atomic

#: Claims judged, (A, B): "A keeps more retain-author utility than B at the same forgetting".
GRU_BASES = ("ga", "gd", "npo", "npo_kl", "simnpo", "wga", "tnpo", "idk", "dpo", "rmu")
OTHER_CLAIMS = (("grun_ga", "ga"), ("grun_ga", "gd"), ("grun_npo", "npo"), ("wga", "ga"), ("tnpo", "ga"))

COLUMNS = [
    ("forget_probability", "forget prob.", 3),
    ("forget_rougeL_recall", "forget ROUGE-L", 3),
    ("log10_fq", "log10 FQ", 1),
    ("retain_probability", "retain prob.", 3),
    ("retain_rougeL_recall", "retain ROUGE-L", 3),
    ("retain_truth_ratio", "retain truth ratio", 3),
    ("retain_utility", "retain-author utility", 3),
]


def _label(key: str) -> str:
    from tofu_mini import label

    return label(key)


def _targets(result) -> list[Target]:
    return [Target(**t) for t in result.targets]


def _value(summary: Mapping[str, Any], key: str) -> float:
    if key == "log10_fq":
        fq = summary.get("forget_quality")
        return math.log10(max(fq, 1e-300)) if fq is not None else math.nan
    return float(summary[key])


def _runs_by_job(result) -> dict[tuple[str, int, float], dict[str, Any]]:
    return {(r["key"], r["seed"], r["learning_rate"]): r for r in result.runs}


def matched_per_seed(result, key: str, target: str) -> dict[int, dict[str, Any] | None]:
    """seed -> the matched point (step, point, summary, robustness) of `key` at its chosen rate for `target`, None
    where that run did not reach it (or no rate did on seed 0)."""
    lr = result.chosen.get(key, {}).get(target)
    seeds = result.settings["seeds"]
    if lr is None:
        return dict.fromkeys(seeds)
    runs = _runs_by_job(result)
    return {seed: (runs.get((key, seed, lr)) or {}).get("matched", {}).get(target) for seed in seeds}


def _method_keys(result) -> list[str]:
    return list(dict.fromkeys(r["key"] for r in result.runs))


def _mean_std(values: Sequence[float], digits: int) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def matched_table(result, target: Target) -> str:
    """One row per method at its first evaluation meeting `target`, mean ± std over the seeds that reached it."""
    header = "| method | lr | seeds reached | steps | " + " | ".join(t for _, t, _ in COLUMNS) + " |"
    lines = [
        f"### Results at matched forgetting: {target.title}",
        "",
        header,
        "|---|---:|---:|---:|" + "---:|" * len(COLUMNS),
    ]
    for name in ("target", "retain model"):
        summary = result.references[name]
        cells = [_mean_std([_value(summary, k)], d) for k, _, d in COLUMNS]
        lines.append(f"| *{name}* | - | - | - | " + " | ".join(cells) + " |")
    for key in _method_keys(result):
        per_seed = matched_per_seed(result, key, target.name)
        lr = result.chosen.get(key, {}).get(target.name)
        reached = [m for m in per_seed.values() if m is not None]
        count = f"{len(reached)}/{len(per_seed)}"
        if not reached:
            lines.append(f"| {_label(key)} | - | {count} | not reached | " + " | ".join("-" for _ in COLUMNS) + " |")
            continue
        steps = _mean_std([float(m["step"]) for m in reached], 0)
        cells = [_mean_std([_value(m["summary"], k) for m in reached], d) for k, _, d in COLUMNS]
        lines.append(f"| {_label(key)} | {lr:g} | {count} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matched_tables(result) -> str:
    return "\n\n".join(matched_table(result, t) for t in _targets(result))


def _claims(result) -> list[tuple[str, str, str]]:
    keys = set(_method_keys(result))
    pairs = [(f"{b}_gru", b) for b in GRU_BASES] + list(OTHER_CLAIMS)
    return [(f"{_label(a)} > {_label(b)}", a, b) for a, b in pairs if a in keys and b in keys]


def verdicts(result) -> list[Verdict]:
    out = []
    for claim, a, b in _claims(result):
        for target in _targets(result):

            def utilities(key: str, target=target) -> dict[int, float | None]:
                return {
                    s: (m["summary"]["retain_utility"] if m is not None else None)
                    for s, m in matched_per_seed(result, key, target.name).items()
                }

            out.append(paired_verdict(claim, target.name, utilities(a), utilities(b)))
    return out


def verdict_table(result) -> str:
    """The verdict table: one row per claim, one column per target (verdict, mean ± std of the paired difference)."""
    targets = _targets(result)
    by = {(v.claim, v.target): v for v in verdicts(result)}
    lines = [
        "### Verdicts at matched forgetting (paired over seeds: utility of A − utility of B)",
        "",
        "| claim: A keeps more utility than B | " + " | ".join(t.title for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for claim, _, _ in _claims(result):
        lines.append(f"| {claim} | " + " | ".join(by[(claim, t.name)].cell() for t in targets) + " |")
    return "\n".join(lines)


def verdict_counts(result) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in verdicts(result):
        kind = v.verdict.split(" (")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def robustness_table(result) -> str:
    """Relearning and quantization on each method's seed-0 model at the robustness target (its chosen rate)."""
    target = result.settings["robustness_target"]
    if not target or not result.reference_attacks or not getattr(result, "robustness", None):
        return "(robustness attacks off in this run)"
    s = result.settings
    title = next((t.title for t in _targets(result) if t.name == target), target)
    reference_change = result.reference_attacks["retain model"]["relearning"]["change"]
    lines = [
        f"### Robustness at matched forgetting ({title}, seed 0)",
        "",
        f"Relearning: {s['relearn_steps']} AdamW steps (lr {s['relearn_lr']:g}, batch 4, all weights) on the even "
        "forget questions, forget probability measured on the odd ones; R = 1 − |d − d_retain| / (|d| + |d_retain|) "
        f"against the retain model's change under the same attack (d_retain = {reference_change:+.3f}). "
        f"Quantization: {s['quantization_bits']}-bit "
        f"{'NF4' if s['quantization_bits'] == 4 else 'absmax integer'} round trip of every linear weight (group 64), "
        "forget probability before and after; Q = 1 − |after − before| / (|before| + |after|).",
        "",
        "Each method's seed-0 run at its chosen rate is repeated to its first evaluation meeting the target and "
        "attacked there.",
        "",
        "| model | held-out forget prob. | after relearning | R | forget prob. | after quantization | Q |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, attacks: Mapping[str, Any]) -> str:
        rel, q = attacks["relearning"], attacks["quantization"]
        r = robustness_score(rel["change"], reference_change)
        return (
            f"| {name} | {rel['before']:.3f} | {rel['after']:.3f} | {r:.2f} | {q['before']:.3f} | {q['after']:.3f} "
            f"| {q['score']:.2f} |"
        )

    for name in ("target", "retain model"):
        lines.append(row(f"*{name}*", result.reference_attacks[name]))
    robustness = getattr(result, "robustness", None) or {}
    for key in _method_keys(result):
        record = robustness.get(key)
        if record is None or record.get("step") is None:
            lines.append(f"| {_label(key)} | not reached | | | | | |")
        else:
            lines.append(row(f"{_label(key)} (step {record['step']})", record))
    return "\n".join(lines)


def grid_table(result) -> str:
    """Seed 0 over each method's learning-rate grid: the step and utility at which each target was first met."""
    targets = _targets(result)
    head = " | ".join(f"{t.title}: step, utility" for t in targets)
    lines = [f"| method | lr | steps run | {head} | chosen for |", "|---|---:|---:|" + "---|" * (len(targets) + 1)]
    for r in result.runs:
        if r["seed"] != 0:
            continue
        cells = []
        for t in targets:
            m = r["matched"].get(t.name)
            cells.append("-" if m is None else f"{m['step']}, {m['summary']['retain_utility']:.3f}")
        chosen = [t.name for t in targets if result.chosen.get(r["key"], {}).get(t.name) == r["learning_rate"]]
        lines.append(
            f"| {_label(r['key'])} | {r['learning_rate']:g} | {r['steps']} | "
            + " | ".join(cells)
            + f" | {', '.join(chosen)} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------------------------------


def _panels(result) -> list[tuple[str, list[str]]]:
    keys = set(_method_keys(result))
    panels = [(_label(b), [b, f"{b}_gru"]) for b in GRU_BASES if b in keys or f"{b}_gru" in keys]
    for grun, fulls in (("grun_ga", ["ga", "gd"]), ("grun_npo", ["npo"])):
        if grun in keys:
            panels.append((f"{_label(grun)} vs full", [grun, *fulls]))
    return [(title, [k for k in members if k in keys]) for title, members in panels]


def plot_tradeoffs(result, path: Path) -> Path:
    """Per base method, seed 0's trajectories at the rate chosen for the first target, with and without GRU (and
    GRUN against full-parameter training): forget probability (log) against the retain authors' probability, the
    points meeting each target marked."""
    from matplotlib.figure import Figure

    panels = _panels(result)
    targets = _targets(result)
    cols = 4
    rows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    runs = _runs_by_job(result)
    markers = ["o", "s", "^", "D"]
    first = targets[0].name
    for ax, (title, members) in zip(axes, panels):
        for i, key in enumerate(members):
            # the rate chosen for the first target; a method that never reached it: its largest rate
            grid = sorted(lr for k, seed, lr in runs if k == key and seed == 0)
            lr = result.chosen.get(key, {}).get(first) or (grid[-1] if grid else None)
            run = runs.get((key, 0, lr))
            if run is None:
                continue
            x = [max(p["forget_probability"], 1e-6) for p in run["trajectory"]]
            y = [p["retain_probability"] for p in run["trajectory"]]
            ax.plot(x, y, "-", color=f"C{i}", lw=1.2, label=f"{_label(key)} (lr {lr:g})")
            for j, target in enumerate(targets):
                m = run["matched"].get(target.name)
                if m is not None:
                    p = m["point"]
                    ax.plot(
                        max(p["forget_probability"], 1e-6),
                        p["retain_probability"],
                        markers[j % 4],
                        color=f"C{i}",
                        ms=7,
                        mfc="none",
                    )
        target_p = result.references["target"]["retain_probability"]
        ax.axhline(target_p, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("forget probability (→ more forgotten)", fontsize=8)
        ax.set_ylabel("retain-author probability", fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    legend = ", ".join(f"{markers[j % 4]}: {t.title}" for j, t in enumerate(targets))
    fig.suptitle(f"TOFU-mini trade-off curves, seed 0 (markers: first evaluation meeting {legend})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_matched_utility(result, path: Path) -> Path:
    """Per target, each method's retain-author utility at matched forgetting (mean ± std over seeds), GRU pairs side
    by side."""
    from matplotlib.figure import Figure

    targets = _targets(result)
    keys = _method_keys(result)
    fig = Figure(figsize=(max(8, 0.45 * len(keys)), 3.2 * len(targets)))
    axes = np.atleast_1d(fig.subplots(len(targets), 1))
    for ax, target in zip(axes, targets):
        for i, key in enumerate(keys):
            values = [m["summary"]["retain_utility"] for m in matched_per_seed(result, key, target.name).values() if m]
            color = "C1" if key.endswith("_gru") else "C2" if key.startswith("grun") else "C0"
            if values:
                ax.bar(i, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0, color=color)
            else:
                ax.text(i, 0.01, "n.r.", ha="center", fontsize=6, rotation=90)
        ax.axhline(result.references["target"]["retain_utility"], color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(keys)), [_label(k) for k in keys], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("retain-author utility", fontsize=8)
        title = f"at matched forgetting: {target.title} (n.r.: not reached; dotted: the target model)"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# RESULTS.md
# ---------------------------------------------------------------------------------------------------------------------


def write_report(result, path: Path) -> Path:
    """RESULTS.md and its two plots (beside it) from a finished run."""
    from tofu_mini import Separation, format_separation, select_authors, settings_from_dict

    s = result.settings
    curves = plot_tradeoffs(result, path.parent / "tofu_mini_tradeoffs.png")
    bars = plot_matched_utility(result, path.parent / "tofu_mini_matched_utility.png")
    split = select_authors(s["num_authors"])
    half = len(split.authors) // 2
    training = result.model_training
    trained = f"trained in {training['seconds']:.0f} s (both models in parallel, one thread each" + (
        ", by an earlier run and loaded from the cache here)" if training.get("cached") else ")"
    )
    machine = result.machine
    timing = "\n".join(f"- {k}: {v:.0f} s" for k, v in result.seconds.items())
    runs = len(result.runs)
    run_seconds = sum(r["seconds"] for r in result.runs)
    scoring = sum(r["scoring_seconds"] for r in result.runs)
    counts = verdict_counts(result)
    targets = _targets(result)
    load = "not recorded" if result.load_average is None else f"{result.load_average:.1f}"
    separation = [Separation(**sep) for sep in result.separation]
    text = f"""# TOFU-mini v2 results: the methods at matched forgetting

Measured by `examples/benchmarks/tofu_mini.py` (generated file: rerun the command to regenerate it).

```
{result.command or "python examples/benchmarks/tofu_mini.py --results-md examples/benchmarks/RESULTS.md"}
```

Machine: {machine.get("machine")}, {machine.get("cpu_count")} CPU cores (1-minute load average at the end of the run:
{load}); {machine.get("workers")} worker processes with one torch thread each; Python {machine.get("python")}, torch
{machine.get("torch")}, transformers {machine.get("transformers")}. Wall-clock times of this run:

{timing}

The target and the retain model were {trained}. {runs} unlearning runs took {run_seconds:.0f} s of worker time, of
which {scoring:.0f} s were the cheap evaluations along the trajectories.

## Setup (fixed before the run)

- **Data**: TOFU authors {split.authors[0]}-{split.authors[half - 1]} and {split.authors[half]}-{split.authors[-1]}
  ({len(split.authors)} authors x 20 questions, `tofu_mini_data/`); forget authors {list(split.forget)}
  ({len(split.forget) * 20} questions, 10%); retention is evaluated on the retain authors
  {split.retain_eval[0]}-{split.retain_eval[-1]} ({len(split.retain_eval) * 20} questions with paraphrased and
  perturbed answers).
- **Models**: a Llama with {s["num_layers"]} layers, hidden size {s["hidden_size"]}, a byte-level BPE tokenizer of
  {s["vocab_size"]} tokens trained on the authors' questions and answers; target and retain model trained from scratch
  with the same recipe ({s["finetune_epochs"]} epochs, AdamW, lr {s["finetune_lr"]}, cosine, batch 16, seed 0; final
  training losses {", ".join(f"{k} {v:.3f}" for k, v in training.get("final_losses", {}).items())}).
- **Methods**: GA, GD (GA + retain NLL), NPO, NPO+KL, SimNPO, WGA, TNPO, IDK (+ retain NLL), DPO (+ retain NLL) and
  RMU (layer {s["rmu_layer"]}, c = {result.rmu_steering_coeff:.2f} = {s["rmu_norm_scale"]} x the target's mean hidden
  norm there), each alone and as GRU(method) - the same objective, its gradient projected off the moving average of
  the retain-NLL gradient when they conflict (tmlr-group/GRU) - and GRUN with GA and NPO (rank-4 gated edits at the
  last prompt token of layers {list(settings_from_dict(s).grun_layers())}, the paper's relative depths; the
  reference's loss weights; the model frozen). Loss hyperparameters: the papers' / library defaults (NPO and DPO
  beta 0.1, SimNPO beta 4.5, WGA beta 1, TNPO beta 4).
- **Runs**: batch 8 forget + 8 retain questions, constant learning rate, a cheap teacher-forced evaluation (forget and
  retain-author probability, forget quality) before the first step and every {s["eval_every"]} steps (GRUN: every
  {s["eval_every"] * s["grun_steps_factor"]}); a run stops when it has met every target or after {s["max_epochs"]}
  passes over the forget set (GRUN: {s["grun_steps_factor"]}x the steps). Learning-rate grids, half a decade apart:
  full-parameter {list(s["learning_rates"])}, RMU {list(s["rmu_learning_rates"])}, GRUN
  {list(s["grun_learning_rates"])}.
  Seeds {list(s["seeds"])} (batch order, RMU's direction, GRUN's initialisation).
- **Targets**: {"; ".join(f"`{t.name}`: {t.title}" for t in targets)}. At the first cheap evaluation meeting a target,
  the model gets the full TOFU evaluation (greedy generation of {s["max_new_tokens"]} tokens for ROUGE-L).
- **The learning-rate rule** (the same for every method): per method and target, among the seed-0 runs over the
  method's grid, the rate that reaches the target with the highest retain-author utility at its first matching
  evaluation (ties: the smaller rate). Seeds {[x for x in s["seeds"] if x != 0]} then run that rate. A method's
  numbers below are at its chosen rate; "not reached" when no rate reached the target on seed 0.
- **The verdict rule**: a claim "A keeps more retain-author utility than B at the same forgetting" is judged per
  target on the paired differences d_s = U_A(s) − U_B(s) over the seeds: *holds* if d_s > 0 on every seed and
  mean(d) ≥ {MIN_EFFECT}; *contradicted* if d_s < 0 on every seed and mean(d) ≤ −{MIN_EFFECT}; *no clear difference*
  otherwise; *not testable* unless both reached the target on every seed.
- **Utility**: retain-author utility = harmonic mean of the retain authors' answer probability, ROUGE-L recall and
  truth ratio (TOFU's real-author and world-fact splits measure nothing for a model trained only on fictitious
  authors: see the check below).

The targets and both rules were committed before the first full run (the pre-registration, commit 0679a1b). Two
starts were stopped after their first GA runs (no other method had run) because they were on course for about two
hours, mostly in the cheap evaluations: the grids went from three rates to two (the lowest, 3e-5, reached no target
in 60 steps), the cheap evaluation from every 5 to every 10 steps, and the forget-quality target (`fq`, forget
quality >= 0.01) left the trajectories, which then score no perturbed answers; forget quality is still measured and
reported at every matched point. The two forget-probability targets and both rules did not change.

## Do the metrics separate the target from the retain model?

KS two-sample test on the per-question values of both models (for the forget truth ratio the p-value is the target's
forget quality).

{format_separation(separation)}

## Results at matched forgetting (mean ± std over the seeds that reached the target)

Forget quality as log10 (-2 is TOFU's 0.01 line, 0 is indistinguishable from the retain model). "steps": optimizer
steps to the first evaluation meeting the target.

{matched_tables(result)}

![utility at matched forgetting]({bars.name})

## Verdicts

{verdict_table(result)}

Counts over all claims and targets: {", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))}.

## Trade-off curves

![trade-off curves]({curves.name})

## Robustness of the matched models

{robustness_table(result)}

## Seed 0 over the learning-rate grids

{grid_table(result)}
"""
    write_text_atomic(path, text)
    return path
