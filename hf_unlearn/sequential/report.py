"""The report of a sequence (`report.md`) and its plot (`sequential.png`) from `results.json`: per method, the
metrics against the number of requests; the forget probability of every request after each one (does an earlier
request come back?); GRUN's gate firing matrix; the cost; per seed, and the claims' verdicts over the seeds.

MUSE sequences (sustainability folds) show MUSE's numbers (KnowMem forget, VerbMem forget, the utility KnowMem
retain) and each fold's mean per-token NLL in place of TOFU's forget probability; no cumulative forget quality."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_report", "load_results", "plot", "write_report"]

REPORT_FILE = "report.md"
PLOT_FILE = "sequential.png"
#: MUSE's forget numbers in a MUSE sequence's table (on MUSE's standard forget set; lower: more forgotten).
MUSE_FORGET_COLUMNS = {"knowmem_forget_rougeL_f1": "KnowMem forget", "verbmem_forget_rougeL_f1": "VerbMem forget"}


def is_muse(results: Mapping[str, Any]) -> bool:
    """Whether `results` are a MUSE sequence's (its requests are MUSE-News's sustainability folds)."""
    return results["config"].get("data", {}).get("source") == "muse"


def forget_metric(results: Mapping[str, Any]) -> str:
    """The per-request forget measure: TOFU's forget probability, or a MUSE fold's mean per-token NLL."""
    return "nll" if is_muse(results) else "forget_probability"


def load_results(output_dir: str | Path) -> dict[str, Any]:
    path = Path(output_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"No results.json in {output_dir}: run the sequence first.")
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value != 0 and abs(value) < 10 ** (-digits):
        return f"{value:.1e}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _records(results: Mapping[str, Any], method: str, seed: str | None = None) -> list[dict[str, Any]]:
    """A method's records on `seed` (default: the first seed; one-seed results have only `requests`)."""
    entry = results["methods"][method]
    if seed is None or "seeds" not in entry:
        return entry["requests"]
    return entry["seeds"][str(seed)]


def muse_method_table(results: Mapping[str, Any], method: str, seed: str | None = None) -> str:
    """MUSE: metrics against the number of folds unlearned (row 0: the target model) on `seed`: the fold's own NLL,
    the lowest NLL of an earlier fold (the one that came back most), MUSE's forget numbers and the utility."""
    utility = results["config"]["utility"]
    target = results["references"]["target"]
    columns = dict(MUSE_FORGET_COLUMNS)
    if results["config"].get("privleak"):
        columns["privleak"] = "PrivLeak"
    lines = [
        f"| requests | fold | steps | targets met | NLL of this fold | lowest earlier fold's NLL | "
        f"{' | '.join(columns.values())} | {utility} | trainable params | stored | seconds |",
        "|---:|---|---:|---|---:|---:|" + "---:|" * len(columns) + "---:|---:|---:|---:|",
    ]
    first = target["forget"]["per_request"][0]
    numbers = " | ".join(_fmt(target["utility"].get(k)) for k in columns)
    lines.append(
        f"| 0 (target) | – | – | – | {_fmt(first['nll'])} ({first['split']}) | – | {numbers} | "
        f"{_fmt(target['utility'].get(utility))} | – | – | – |"
    )
    for record in _records(results, method, seed):
        k = record["request"]
        per = record["forget"]["per_request"]
        earlier = [p["nll"] for p in per[: k - 1] if p["nll"] is not None]
        met = ", ".join(f"{t} @{s}" for t, s in record["met"].items()) or "none"
        numbers = " | ".join(_fmt(record["utility"].get(key)) for key in columns)
        lines.append(
            f"| {k} | {per[k - 1]['split']} | {record['steps']} | {met} | {_fmt(per[k - 1]['nll'])} | "
            f"{_fmt(min(earlier)) if earlier else '–'} | {numbers} | {_fmt(record['utility'].get(utility))} | "
            f"{record['trainable_parameters']:,} | {_bytes(record['stored_bytes'])} | "
            f"{record['seconds']['total']:.1f} |"
        )
    return "\n".join(lines)


def method_table(results: Mapping[str, Any], method: str, seed: str | None = None) -> str:
    """Metrics against the number of requests (row 0: the target model) on `seed` (default: the first)."""
    if is_muse(results):
        return muse_method_table(results, method, seed)
    utility = results["config"]["utility"]
    target = results["references"]["target"]
    lines = [
        "| requests | steps | targets met | forget prob. (this request) | worst earlier request's forget prob. | "
        f"cumulative forget prob. | cumulative forget quality | {utility} | trainable params | stored | seconds |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = target["forget"]["per_request"][0]["forget_probability"]
    lines.append(
        f"| 0 (target) | – | – | {_fmt(first)} (request 1) | – | – | – | {_fmt(target['utility'].get(utility))} "
        "| – | – | – |"
    )
    for record in _records(results, method, seed):
        k = record["request"]
        per = record["forget"]["per_request"]
        earlier = [p["forget_probability"] for p in per[: k - 1]]
        cumulative = record["forget"]["cumulative"] or {}
        met = ", ".join(f"{t} @{s}" for t, s in record["met"].items()) or "none"
        lines.append(
            f"| {k} | {record['steps']} | {met} | {_fmt(per[k - 1]['forget_probability'])} | "
            f"{_fmt(max(earlier)) if earlier else '–'} | {_fmt(cumulative.get('forget_probability'))} | "
            f"{_fmt(cumulative.get('forget_quality'))} | {_fmt(record['utility'].get(utility))} | "
            f"{record['trainable_parameters']:,} | {_bytes(record['stored_bytes'])} | "
            f"{record['seconds']['total']:.1f} |"
        )
    return "\n".join(lines)


def request_matrix(results: Mapping[str, Any], method: str, metric: str | None = None, seed: str | None = None) -> str:
    """`metric` (default: [`forget_metric`]) of request j (columns) after k requests (rows); requests not yet made
    in italics."""
    metric = metric or forget_metric(results)
    records = _records(results, method, seed)
    numbers = [r["request"] for r in results["requests"]]
    lines = ["| after \\ request | " + " | ".join(f"#{j}" for j in numbers) + " |"]
    lines.append("|---:|" + "---:|" * len(numbers))
    rows = [("target", results["references"]["target"]["forget"]["per_request"], 0)]
    rows += [(str(r["request"]), r["forget"]["per_request"], r["request"]) for r in records]
    for name, per, done in rows:
        cells = [_fmt(p[metric]) if p["request"] <= done else f"*{_fmt(p[metric])}*" for p in per]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gate_table(record: Mapping[str, Any]) -> str:
    """GRUN after a request: each request's mean gate on each request's prompts and on retain prompts."""
    gates = record["gates"]
    groups = list(next(iter(gates["mean"].values())))
    lines = ["| gate of \\ prompts of | " + " | ".join(g.replace("request_", "#") for g in groups) + " |"]
    lines.append("|---|" + "---:|" * len(groups))
    for name, row in gates["mean"].items():
        cells = [
            f"{_fmt(row[g], 2)} ({_fmt(gates['fires'][name][g], 2)})" if row[g] is not None else "–" for g in groups
        ]
        lines.append(f"| {name.replace('request_', '#')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(results: Mapping[str, Any]) -> str:
    """One row per method and seed: how many requests met every target, the steps over the sequence, the utility
    after each request and the worst request's forget measure after the last one (TOFU: the highest forget
    probability; MUSE: the lowest fold NLL)."""
    utility = results["config"]["utility"]
    targets = list(results["config"]["targets"].values())
    n = len(results["requests"])
    worst = "lowest fold NLL" if is_muse(results) else "highest forget prob."
    lines = [
        "| method | seed | requests that met every target | steps | "
        + " | ".join(f"{utility} after {k}" for k in range(1, n + 1))
        + f" | {worst} after {n} |",
        "|---|---:|---:|---:|" + "---:|" * (n + 1),
    ]
    metric = forget_metric(results)
    for method, entry in results["methods"].items():
        for seed in list(entry.get("seeds") or {"–": None}):
            records = _records(results, method, None if seed == "–" else seed)
            met = sum(all(t in r.get("met", {}) for t in targets) for r in records)
            values = [r["utility"].get(utility) for r in records] + [None] * (n - len(records))
            last = (
                [p[metric] for p in records[-1]["forget"]["per_request"] if p[metric] is not None] if records else []
            )
            extreme = (min(last) if is_muse(results) else max(last)) if last else None
            lines.append(
                f"| {entry['label']} | {seed} | {met}/{len(records)} | {sum(r['steps'] for r in records)} | "
                + " | ".join(_fmt(v) for v in values)
                + f" | {_fmt(extreme)} |"
            )
    return "\n".join(lines)


def verdict_table(results: Mapping[str, Any]) -> str:
    """The claims' verdicts: claim, the request after which it is judged, the verdict (mean ± std of d), d per
    seed."""
    lines = ["| claim | metric | after request | verdict | d per seed |", "|---|---|---:|---|---|"]
    for v in results.get("verdicts", []):
        per_seed = ", ".join(f"{s}: {d:+.3f}" for s, d in zip(v["seeds"], v["differences"])) or "–"
        lines.append(f"| {v['claim']} | {v['metric']} | {v['request']} | {v['cell']} | {per_seed} |")
    return "\n".join(lines)


def format_report(results: Mapping[str, Any]) -> str:
    """`report.md`'s text: the header of the sequence's benchmark, the verdicts, and per method and seed the
    table, the matrix of every request after each one and GRUN's gates."""
    lines = _muse_header(results) if is_muse(results) else _tofu_header(results)
    return _body(results, lines)


def _muse_header(results: Mapping[str, Any]) -> list[str]:
    config = results["config"]
    requests = results["requests"]
    folds = ", ".join(f"{r['split']} ({r['questions']} texts)" for r in results["requests"])
    return [
        "# Sequential unlearning: MUSE-News sustainability",
        "",
        f"Target model `{config['target_model']}`; {len(requests)} folds, each unlearned from the model the fold "
        f"before it left: {folds}; each stops at "
        + " and ".join(f"`{t}`" for t in config["targets"].values())
        + " (on MUSE's standard forget set), or at its step budget. Reference of NPO-like losses from fold 2 on: the "
        f"{config['reference']} model. Utility: `{config['utility']}`.",
        "",
        "The folds are raw news text without questions: each fold's forget measure is the mean per-token NLL of its "
        "evaluated texts (teacher-forced; higher: more forgotten). Cumulative forget quality is TOFU's (the KS test "
        "of QA truth ratios) and is not computed on MUSE. LoRA adapters are merged into the weights after each fold; "
        "GRUN adds one gated module per fold on the frozen earlier ones.",
        "",
    ]


def _tofu_header(results: Mapping[str, Any]) -> list[str]:
    config = results["config"]
    requests = results["requests"]
    return [
        "# Sequential unlearning",
        "",
        f"Target model `{config['target_model']}`; {len(requests)} requests of "
        + ", ".join(str(r["questions"]) for r in requests)
        + " forget rows; each stops at "
        + " and ".join(f"`{t}`" for t in config["targets"].values())
        + " on its own questions, or at its step budget. Reference of NPO-like losses from request 2 on: the "
        f"{config['reference']} model. Retain model: `{config.get('retain_model') or config.get('retain_logs')}`.",
        "",
        "Cumulative forget quality after k requests: the KS test of the truth-ratio statistics of every question of "
        "requests 1..k against the retain model's on the same questions. LoRA adapters are merged into the weights "
        "after each request; GRUN adds one gated module per request on the frozen earlier ones.",
        "",
    ]


def _body(results: Mapping[str, Any], lines: list[str]) -> str:
    config = results["config"]
    refs = results["references"]
    if "retain model" in refs:
        retain = refs["retain model"]["utility"].get(config["utility"])
        lines += [f"Retain model's {config['utility']}: {_fmt(retain)}.", ""]
    if results.get("verdicts"):
        lines += [
            "## Verdicts",
            "",
            f"Over the seeds {config.get('seeds')}, d = A's value - B's after the request; *holds* if d > 0 on every "
            f"seed and mean(d) >= {config.get('min_effect', 0.01)}, *contradicted* if d < 0 on every seed and "
            "mean(d) <= -that, *no clear difference* otherwise (hf_unlearn.compare.rules.paired_verdict); *not "
            "testable* unless both methods met every request's target, requests 1..k, on every seed.",
            "",
            verdict_table(results),
            "",
        ]
    lines += ["## Summary", "", summary_table(results), ""]
    for method, entry in results["methods"].items():
        seeds = list(entry.get("seeds") or {None: entry["requests"]})
        lines += [f"## {entry['label']} (`{method}`, {entry['kind']})", ""]
        for seed in seeds:
            if len(seeds) > 1:
                lines += [f"### seed {seed}", ""]
            lines += [method_table(results, method, seed), ""]
            what = "Mean per-token NLL of each fold" if is_muse(results) else "Forget probability of each request"
            lines += [f"{what} (columns) after k requests (rows; *italics*: not yet made):"]
            lines += ["", request_matrix(results, method, seed=seed), ""]
            records = _records(results, method, seed)
            last = records[-1] if records else None
            if last and last.get("gates"):
                lines += [
                    f"Gates after request {last['request']}: mean gate (share of prompts with gate > 0.5) of each "
                    "request's module on each request's evaluated prompts and on retain prompts:",
                    "",
                    gate_table(last),
                    "",
                ]
    machine = results.get("machine", {})
    if machine:
        lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".")
    return "\n".join(lines).rstrip() + "\n"


def plot(results: Mapping[str, Any], output_dir: Path) -> Path:
    """`sequential.png`: cumulative forget quality, the current request's forget probability and the utility
    against the number of requests, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utility = results["config"]["utility"]
    target = results["references"]["target"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))

    metric = forget_metric(results)

    def current(record: Mapping[str, Any]) -> float | None:
        return record["forget"]["per_request"][record["request"] - 1][metric]

    panels: Sequence[tuple[str, Any]] = (
        ("cumulative forget quality", lambda r: (r["forget"]["cumulative"] or {}).get("forget_quality")),
        ("forget probability of the request", current),
        (utility, lambda r: r["utility"].get(utility)),
    )
    if is_muse(results):  # no cumulative forget quality: MUSE's VerbMem on its standard forget set instead
        panels = (
            ("verbmem_forget_rougeL_f1", lambda r: r["utility"].get("verbmem_forget_rougeL_f1")),
            ("NLL of the fold (higher: more forgotten)", current),
            (utility, lambda r: r["utility"].get(utility)),
        )
    for ax, (title, get) in zip(axes, panels):
        for i, entry in enumerate(results["methods"].values()):
            per_seed = entry.get("seeds") or {"": entry["requests"]}
            for j, records in enumerate(per_seed.values()):
                points = [(r["request"], get(r)) for r in records if get(r) is not None]
                if title in (utility, "verbmem_forget_rougeL_f1") and target["utility"].get(title) is not None:
                    points = [(0, target["utility"][title]), *points]
                if points:  # one colour per method, one line per seed
                    label = entry["label"] if j == 0 else None
                    ax.plot(*zip(*points), marker="o", color=f"C{i % 10}", alpha=0.8, label=label)
        if title.startswith("cumulative"):
            ax.set_yscale("log")
        ax.set_xlabel("requests")
        ax.set_title(title)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    path = Path(output_dir) / PLOT_FILE
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: Mapping[str, Any], output_dir: str | Path, plots: bool = True) -> str:
    """Write `report.md` (and the plot) into `output_dir`; returns the report's text."""
    output_dir = Path(output_dir)
    text = format_report(results)
    if plots:
        plot(results, output_dir)
        text += f"\n![metrics against requests]({PLOT_FILE})\n"
    (output_dir / REPORT_FILE).write_text(text, encoding="utf-8")
    return text
