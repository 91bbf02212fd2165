"""Compare unlearning objectives by their G-effect (Wang et al., ICLR 2025) at a MATCHED forget effect, offline.

    python examples/geffect_compare.py     # GA, NPO, WGA (beta 1 and 5), TNPO; writes examples/geffect_compare.png
    python examples/geffect_compare.py --objectives ga,wga_b5 --max-steps 40

The paper's qualitative claim ("Rethinking LLM Unlearning Objectives"): GA's 1/p_t token weighting harms retention
more than WGA and TNPO for a similar forget effect. This script tests it on a tiny model, fairly:

1. The target model is a tiny Llama (2 layers, hidden 128) fine-tuned on ALL bundled TOFU questions: the 2 forget
   authors (40 questions) and the 8 retain authors (160 questions), the offline quickstart's recipe (20 epochs,
   lr 2e-3). It is built once and cached in `<output-dir>/target`.
2. Each objective unlearns the forget authors with `UnlearningTrainer` and NO retain term (only the objective acts, as
   in the paper's G-effect analysis), the same data order, AdamW at a constant learning rate, and stops as soon as its
   forget risk has risen by the largest comparison level (or at `--max-steps`).
3. Both risks (mean-NLL of the answers: all 40 forget questions, all 160 retain questions) are measured after every
   step; a `GEffectCallback` records the G-effects on a fixed sample every `--every` steps.
4. The objectives are compared where their forget risk FIRST rises by 0.5, 1 and 2 nats (per-token probability of
   the forget answers divided by e^0.5, e, e^2), the retain-risk rise there interpolated linearly between steps.

Settings chosen up front from the objectives' scale, not tuned on the outcome:
- Adam moves each weight by about lr per step whatever the gradient's scale, so objectives whose gradients differ in
  size (WGA's p_t^beta weights shrink it as the model forgets; NPO/TNPO's weights drift from 1) progress at comparable
  speeds, and one learning rate serves all. lr = 1e-4, a twentieth of the fine-tuning peak: small steps keep each run
  close to its gradient flow, so where it stands at a given forget level depends little on the step size; the
  previous version of this demo (lr 1e-3, 64 hidden units) collapsed the model in a dozen steps (both risks ~15).
- Hyperparameters: the library's defaults (the losses' keyword defaults, `hf_unlearn/losses/`) - NPO beta 0.1, TNPO
  beta 4; WGA at beta 1 (the library's default) and beta 5 (the G-effect paper's code).
- At theta = ref, TNPO's token weights are 1, so its step-0 G-effects are GA's; NPO's gradient there is GA's on the
  sequence-SUM NLL (longer answers weigh more, hence its larger scale). They differ from GA once the model has moved.

Result of `python examples/geffect_compare.py` (seed 0; the print-out ends with this table and its conclusion):

Target: forget risk 0.421, retain risk 0.432 (mean-NLL). Retain-risk rise (nats) where the forget risk first rose
by each level (fractional step in brackets); last column: accumulated retain / forget G-effect up to +2.

| objective | G-effect step 0: forget / retain (ratio) | @ forget +0.5 | @ forget +1 | @ forget +2 | G-effect ratio |
|---|---|---|---|---|---|
| ga | -0.616 / +0.00336 (-0.005) | +0.123 (13.6) | +0.328 (17.4) | +0.859 (21.9) | +0.434 |
| npo beta 0.1 | -27.7 / +0.376 (-0.014) | +0.127 (13.9) | +0.332 (17.7) | +0.878 (22.6) | +0.346 |
| wga beta 1 | -0.245 / -0.00454 (+0.019) | +0.135 (11.7) | +0.305 (14.5) | +0.714 (17.5) | +0.356 |
| wga beta 5 | -0.0476 / -0.00289 (+0.061) | +0.152 (10.7) | +0.322 (13.3) | +0.741 (16.7) | +0.366 |
| tnpo beta 4 | -0.616 / +0.00336 (-0.005) | +0.122 (14.6) | +0.317 (18.7) | +0.834 (23.4) | +0.365 |

With `--unlearning-seed 1` (another batch order and G-effect sample, same target), retain rise at +0.5 / +1 / +2:
GA +0.117 / +0.312 / +0.853; NPO +0.118 / +0.302 / +0.824; WGA beta 1 +0.150 / +0.335 / +0.781; WGA beta 5
+0.166 / +0.354 / +0.812; TNPO +0.111 / +0.292 / +0.781.

Conclusion (one target model, two data orders): the claim holds only weakly, and only once forgetting is
substantial. At +2 nats GA harmed retention the most of GA / WGA / TNPO in both orders, but by little (WGA 8-17%
less, TNPO 3-8% less); at +1 nat WGA was better in one order and worse in the other; at +0.5 nat WGA was worse than
GA in both (by 10-42%). Seed 0 in detail:
At a forget-risk rise of 2 nats GA raised the retain risk by 0.86 nats, WGA by 0.71 (beta 1, -17%) and 0.74
(beta 5, -14%), TNPO by 0.83 (-3%, within what a different data order could change); NPO was the worst (0.88). At
+1 nat all five lie within 0.305-0.332 (WGA beta 1 best, by 7%). At +0.5 nat GA is NOT worse: WGA harms retention
more (+10% at beta 1, +24% at beta 5) and TNPO ties. The G-effect ratio panel shows why: WGA's retain/forget ratio
is the highest early (its p^beta weights favour the confident tokens; that these carry the knowledge shared with the
retain answers is our reading, not tested here) and grows more slowly than GA's as the forget tokens lose
probability: the ratio curves cross near +0.5 nat, the measured trade-off curves near +1. GA's
step-0 retain G-effect is even slightly positive. On this tiny model the benefit of WGA / TNPO over GA is modest and
appears late (8-17% / 3-8% less retention harm at +2 nats), and no objective avoids the harm: without a retain term
all of them raise the retain risk by 0.7-0.9 nats (from 0.43) to raise the forget risk by 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging

from hf_unlearn import UnlearningConfig, UnlearningTrainer, load_tofu
from hf_unlearn.analysis import GEffect, GEffectCallback
from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.demo.tiny import finetune_on_qa, set_demo_threads, tiny_llama, train_tokenizer
from hf_unlearn.losses import mean_nll

HERE = Path(__file__).resolve().parent
#: run name -> (forget loss, forget_loss_kwargs): the library's defaults, plus WGA at the G-effect code's beta 5
OBJECTIVES: dict[str, tuple[str, dict[str, float]]] = {
    "ga": ("ga", {}),
    "npo": ("npo", {"beta": 0.1}),
    "wga": ("wga", {"beta": 1.0}),
    "wga_b5": ("wga", {"beta": 5.0}),
    "tnpo": ("tnpo", {"beta": 4.0}),
}
#: forget-risk rises (nats) at which the objectives are compared; the last one also ends each run
LEVELS = (0.5, 1.0, 2.0)
#: the target model: the offline quickstart's recipe (hf_unlearn/demo/quickstart.py)
TARGET = {"num_layers": 2, "hidden_size": 128, "epochs": 20, "learning_rate": 2e-3, "vocab_size": 1024}


# ---------------------------------------------------------------------------------------------- risks
class RiskSet:
    """The answers of a data set, encoded once, and their mean-NLL risk under a model (no gradient)."""

    def __init__(self, tokenizer: Any, dataset: Any, batch_size: int = 40):
        encoder = PromptEncoder(tokenizer)
        pairs = [
            encoder.encode([{"role": "user", "content": q}], a) for q, a in zip(dataset["question"], dataset["answer"])
        ]
        self.batches = [
            pad_examples(pairs[start : start + batch_size], tokenizer.pad_token_id)
            for start in range(0, len(pairs), batch_size)
        ]
        self.size = len(pairs)

    @torch.no_grad()
    def risk(self, model: torch.nn.Module) -> float:
        """Mean over examples of the per-token mean-NLL of the answer (the risk R of the G-effect)."""
        was_training = model.training
        model.eval()
        total = 0.0
        for batch in self.batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            total += float(mean_nll(logits, batch["labels"]).double().sum())
        model.train(was_training)
        return total / self.size


class RiskTracker(TrainerCallback):
    """Measures both risks before training and after every optimizer step; stops the run once the forget risk has
    risen by `stop_rise` nats."""

    def __init__(self, forget: RiskSet, retain: RiskSet, stop_rise: float):
        self.forget, self.retain, self.stop_rise = forget, retain, stop_rise
        self.trainer: Any = None
        self.steps: list[int] = []
        self.forget_risk: list[float] = []
        self.retain_risk: list[float] = []

    def bind(self, trainer: Any) -> RiskTracker:
        """Called by UnlearningTrainer: the model to measure is the trainer's."""
        self.trainer = trainer
        return self

    def _measure(self, step: int) -> None:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        self.steps.append(step)
        self.forget_risk.append(self.forget.risk(model))
        self.retain_risk.append(self.retain.risk(model))

    def on_train_begin(self, args, state, control, **kwargs):
        self._measure(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._measure(state.global_step)
        if self.forget_risk[-1] - self.forget_risk[0] >= self.stop_rise:
            control.should_training_stop = True


def at_forget_rise(rise_f: np.ndarray, rise_r: np.ndarray, steps: np.ndarray, level: float) -> dict[str, float] | None:
    """Where the forget-risk rise FIRST reaches `level`: the step (fractional) and the retain-risk rise there,
    interpolated linearly between the two measured steps around the crossing. None if it never does."""
    above = np.nonzero(rise_f >= level)[0]
    if len(above) == 0:
        return None
    i = int(above[0])
    if i == 0:
        return {"step": float(steps[0]), "retain_rise": float(rise_r[0])}
    t = (level - rise_f[i - 1]) / (rise_f[i] - rise_f[i - 1])
    return {
        "step": float(steps[i - 1] + t * (steps[i] - steps[i - 1])),
        "retain_rise": float(rise_r[i - 1] + t * (rise_r[i] - rise_r[i - 1])),
    }


def geffect_ratio_until(history: list[GEffect], step: float) -> float:
    """Accumulated retain G-effect / accumulated forget G-effect over the records up to `step` (trapezoids): the
    first-order retain-risk rise per unit of forget-risk rise the objective predicts along its path."""
    records = [r for r in history if r.step is not None and r.step <= step + 1e-9]
    if len(records) < 2:
        return records[0].retain / records[0].forget if records else math.nan
    steps = np.array([r.step for r in records], dtype=float)
    forget = np.array([r.forget for r in records])
    retain = np.array([r.retain for r in records])
    return float(np.trapezoid(retain, steps) / np.trapezoid(forget, steps))


# ---------------------------------------------------------------------------------------------- the runs
def target_model(output_dir: Path, full: Any, seed: int) -> tuple[torch.nn.Module, Any]:
    """The model that knows every bundled author (built once, then reloaded from `output_dir/target`)."""
    path = output_dir / "target"
    settings = {**TARGET, "seed": seed, "questions": len(full)}
    stamp = path / "recipe.json"
    if (path / "model.safetensors").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)
    print(f"Fine-tuning the target model on {len(full)} questions ({TARGET['epochs']} epochs; cached afterwards)")
    texts = [f"{q} {a}" for q, a in zip(full["question"], full["answer"])]
    tokenizer = train_tokenizer(texts, vocab_size=TARGET["vocab_size"])
    model = tiny_llama(len(tokenizer), num_layers=TARGET["num_layers"], hidden_size=TARGET["hidden_size"], seed=seed)
    finetune_on_qa(
        model,
        tokenizer,
        full["question"],
        full["answer"],
        epochs=TARGET["epochs"],
        learning_rate=TARGET["learning_rate"],
        seed=seed,
        progress=False,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    stamp.write_text(json.dumps(settings))
    return model, tokenizer


def unlearn(
    name: str,
    target: torch.nn.Module,
    tokenizer: Any,
    forget: Any,
    retain: Any,
    risk_sets: tuple[RiskSet, RiskSet],
    output_dir: Path,
    max_steps: int,
    every: int,
    num_samples: int,
    learning_rate: float,
    seed: int,
) -> dict[str, Any]:
    """One objective from the target until its forget risk has risen by max(LEVELS) nats (or `max_steps`)."""
    loss, kwargs = OBJECTIVES[name]
    geffect = GEffectCallback(forget, retain, every_n_steps=every, num_samples=num_samples, seed=seed)
    tracker = RiskTracker(*risk_sets, stop_rise=max(LEVELS))
    args = UnlearningConfig(
        output_dir=str(output_dir / name),
        forget_loss=loss,
        forget_loss_kwargs=kwargs,
        retain_loss="none",
        per_device_train_batch_size=8,
        max_steps=max_steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
    )
    trainer = UnlearningTrainer(
        model=copy.deepcopy(target),
        args=args,
        forget_dataset=forget,
        processing_class=tokenizer,
        callbacks=[geffect, tracker],
    )
    trainer.remove_callback(PrinterCallback)  # no log lines on the console: the script prints its own summary
    trainer.train()
    return {
        "steps": tracker.steps,
        "forget_risk": tracker.forget_risk,
        "retain_risk": tracker.retain_risk,
        "geffect": [r.to_dict() for r in geffect.history],
    }


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per objective: the step-0 G-effects, and at each level the step, the retain-risk rise and the G-effect ratio."""
    summary = {}
    for name, run in runs.items():
        steps = np.array(run["steps"], dtype=float)
        rise_f = np.array(run["forget_risk"]) - run["forget_risk"][0]
        rise_r = np.array(run["retain_risk"]) - run["retain_risk"][0]
        history = [GEffect.from_dict(r) for r in run["geffect"]]
        levels = {}
        for level in LEVELS:
            hit = at_forget_rise(rise_f, rise_r, steps, level)
            if hit is not None:
                hit["geffect_ratio"] = geffect_ratio_until(history, hit["step"])
            levels[str(level)] = hit
        summary[name] = {
            "geffect_forget_step0": history[0].forget,
            "geffect_retain_step0": history[0].retain,
            "steps_run": int(steps[-1]),
            "max_forget_rise": float(rise_f.max()),
            "levels": levels,
        }
    return summary


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """Markdown: retain-risk rise (nats) where each objective's forget risk first rose by each level."""
    head = " | ".join(f"retain rise @ forget +{level:g} (step)" for level in LEVELS)
    lines = [
        f"| objective | G-effect step 0: forget / retain (ratio) | {head} | G-effect ratio up to +{LEVELS[-1]:g} |",
        "|---|---|" + "---|" * len(LEVELS) + "---|",
    ]
    for name, s in summary.items():
        label = f"{OBJECTIVES[name][0]}" + "".join(f" {k} {v:g}" for k, v in OBJECTIVES[name][1].items())
        ratio0 = s["geffect_retain_step0"] / s["geffect_forget_step0"]
        cells = []
        for level in LEVELS:
            hit = s["levels"][str(level)]
            cells.append(
                f"{hit['retain_rise']:+.3f} ({hit['step']:.1f})"
                if hit
                else f"not reached ({s['steps_run']} steps, max +{s['max_forget_rise']:.2f})"
            )
        last = s["levels"][str(LEVELS[-1])]
        step0 = f"{s['geffect_forget_step0']:+.3g} / {s['geffect_retain_step0']:+.3g} ({ratio0:+.3f})"
        ratio = f"{last['geffect_ratio']:+.3f}" if last else "-"
        lines.append(f"| {label} | {step0} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def conclusion(summary: dict[str, dict[str, Any]]) -> str:
    """Whether GA's retain-risk rise is the largest at each matched forget level (computed, never assumed)."""
    if "ga" not in summary:
        return "GA was not run: no conclusion about the paper's claim."
    lines = []
    for level in LEVELS:
        key = str(level)
        reached = {n: s["levels"][key]["retain_rise"] for n, s in summary.items() if s["levels"][key] is not None}
        if "ga" not in reached:
            lines.append(f"forget +{level:g}: GA did not get there; no comparison.")
            continue
        others = {n: v for n, v in reached.items() if n in ("wga", "wga_b5", "tnpo")}
        missing = sorted({"wga", "wga_b5", "tnpo"} & set(summary) - set(others))
        below = sorted(n for n, v in others.items() if v < reached["ga"])
        above = sorted(n for n, v in others.items() if v >= reached["ga"])
        text = (
            f"forget +{level:g}: GA raised the retain risk by {reached['ga']:+.3f}; "
            + ", ".join(f"{n} {others[n]:+.3f} ({others[n] / reached['ga'] - 1:+.0%} vs GA)" for n in others)
            + (f" ({', '.join(missing)} did not reach this level)" if missing else "")
            + ". "
        )
        if others and not above:
            text += "GA harmed retention MORE than every WGA/TNPO run that got there: the claim holds here."
        elif others and not below:
            text += "GA harmed retention LESS than (or as little as) every WGA/TNPO run: the claim does not hold here."
        elif others:
            text += f"Mixed: GA harmed retention more than {', '.join(below)} but not more than {', '.join(above)}."
        lines.append(text)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- figure
def plot(runs: dict[str, dict[str, Any]], path: str | Path, title: str) -> Path:
    """Four panels along each run's forget-risk rise: the measured trade-off (retain-risk rise), the G-effect ratio
    e_r / e_f (scale-free: retain harm per unit of forgetting, first order), the forget and retain G-effects
    themselves, and each objective's share of its accumulated retain G-effect per parameter group."""
    fig = Figure(figsize=(15, 8.5))
    axes = fig.subplots(2, 2)
    ax_trade, ax_ratio, ax_raw, ax_groups = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]
    for name, run in runs.items():
        rise_f = np.array(run["forget_risk"]) - run["forget_risk"][0]
        rise_r = np.array(run["retain_risk"]) - run["retain_risk"][0]
        (line,) = ax_trade.plot(rise_f, rise_r, marker="o", markersize=2, label=name)
        history = [GEffect.from_dict(r) for r in run["geffect"]]
        at = {s: f for s, f in zip(run["steps"], rise_f)}
        kept = [r for r in history if r.step in at]
        xs = [at[r.step] for r in kept]
        color = line.get_color()
        ax_ratio.plot(xs, [r.retain / r.forget for r in kept], marker="o", markersize=3, color=color, label=name)
        ax_raw.plot(xs, [r.forget for r in kept], marker="o", markersize=3, color=color, label=f"{name}: forget")
        ax_raw.plot(xs, [r.retain for r in kept], marker="x", markersize=3, color=color, linestyle="--")
    for level in LEVELS:
        for ax in (ax_trade, ax_ratio, ax_raw):
            ax.axvline(level, color="grey", linestyle=":", linewidth=0.8)
    ax_trade.set(xlabel="forget-risk rise (nats)", ylabel="retain-risk rise (nats)")
    ax_trade.set_title("Measured trade-off (lower: less retention harm at the same forgetting)", fontsize=10)
    ax_ratio.set(xlabel="forget-risk rise (nats)", ylabel="G-effect ratio e_r / e_f")
    ax_ratio.set_title("Retain / forget G-effect (> 0: retention harmed, per unit of forgetting)", fontsize=10)
    ax_raw.set(xlabel="forget-risk rise (nats)", ylabel="G-effect", yscale="symlog")
    ax_raw.set_title("G-effects: forget (solid), retain (dashed); scales differ by objective", fontsize=10)
    for ax in (ax_trade, ax_ratio, ax_raw):
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.grid(True, alpha=0.3)
    ax_trade.legend(fontsize=8)
    ax_ratio.legend(fontsize=8)
    # Each group's share of the run's accumulated retain G-effect (which layers carry the harm).
    names = list(runs)
    groups: list[str] = []
    for run in runs.values():
        groups += [g for g in run["geffect"][0]["per_group"] if g not in groups]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        records = runs[name]["geffect"]
        steps = np.array([r["step"] for r in records], dtype=float)
        values = []
        for group in groups:
            series = np.array([r["per_group"].get(group, {"retain": 0.0})["retain"] for r in records])
            values.append(np.trapezoid(series, steps) if len(steps) > 1 else series[0])
        total = sum(values) or 1.0
        shares = [v / total for v in values]
        ax_groups.bar(np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width, shares, width=width, label=name)
    ax_groups.set_xticks(np.arange(len(groups)), groups, fontsize=8)
    ax_groups.axhline(0.0, color="grey", linewidth=0.8)
    ax_groups.set_ylabel("share of the accumulated retain G-effect")
    ax_groups.set_title("Where the retention harm is: retain G-effect per parameter group", fontsize=10)
    ax_groups.grid(True, axis="y", alpha=0.3)
    ax_groups.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path


def report(runs: dict[str, dict[str, Any]], figure: str | Path, learning_rate: float, output_dir: Path) -> dict:
    """Summary, table, conclusion, figure and `<output_dir>/summary.json` of finished runs (also usable on the
    `runs` of a saved summary.json, to redraw without training)."""
    first = next(iter(runs.values()))
    r_f, r_r = first["forget_risk"][0], first["retain_risk"][0]  # the target's risks (every run starts there)
    summary = summarise(runs)
    table, verdict = format_table(summary), conclusion(summary)
    plot(
        runs,
        figure,
        title=f"Tiny TOFU Llama (2x128): unlearning 2 authors, no retain term, AdamW lr {learning_rate:g}, each run "
        f"stopped at forget-risk rise +{LEVELS[-1]:g} (target: forget {r_f:.2f}, retain {r_r:.2f} nats)",
    )
    print(f"\nTarget: forget risk {r_f:.3f}, retain risk {r_r:.3f}. Retain-risk rise (nats) where the forget risk")
    print("first rose by each level (linear interpolation between steps; the fractional step in brackets):\n")
    print(table)
    print("\n" + verdict)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").write_text(
        json.dumps({"summary": summary, "learning_rate": learning_rate, "runs": runs}, indent=1)
    )
    print(f"\nFigure: {figure}\nSummary: {output_dir / 'summary.json'}")
    return summary


# ---------------------------------------------------------------------------------------------- main
def main(
    objectives: list[str] | None = None,
    max_steps: int = 60,
    every: int = 3,
    num_samples: int = 16,
    learning_rate: float = 1e-4,
    output_dir: str | Path = "geffect_compare_output",
    figure: str | Path = HERE / "geffect_compare.png",
    seed: int = 0,
    unlearning_seed: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the comparison; returns the summary (also written to `<output_dir>/summary.json`). `seed` builds the
    target model; `unlearning_seed` (default: `seed`) orders the forget batches and draws the G-effect sample."""
    unlearning_seed = seed if unlearning_seed is None else unlearning_seed
    objectives = objectives or list(OBJECTIVES)
    unknown = sorted(set(objectives) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"Unknown objective(s) {unknown}; choose from {sorted(OBJECTIVES)}.")
    hf_logging.set_verbosity_error()
    output_dir = Path(output_dir)
    full = load_tofu("full", "bundled")
    forget, retain = load_tofu("forget01", "bundled"), load_tofu("retain99", "bundled")
    target, tokenizer = target_model(output_dir, full, seed)
    risk_sets = (RiskSet(tokenizer, forget), RiskSet(tokenizer, retain))
    r_f, r_r = risk_sets[0].risk(target), risk_sets[1].risk(target)
    print(f"Target model: forget risk {r_f:.3f}, retain risk {r_r:.3f} (mean-NLL, {len(forget)} / {len(retain)} q.)")

    runs = {}
    for name in objectives:
        print(f"Unlearning with {name} {OBJECTIVES[name][1]} (lr {learning_rate:g}, at most {max_steps} steps)")
        runs[name] = unlearn(
            name, target, tokenizer, forget, retain, risk_sets, output_dir, max_steps, every, num_samples,
            learning_rate, unlearning_seed,
        )  # fmt: skip
        print(
            f"  {runs[name]['steps'][-1]} steps: forget risk {runs[name]['forget_risk'][-1]:.3f}, "
            f"retain risk {runs[name]['retain_risk'][-1]:.3f}"
        )
    return report(runs, figure, learning_rate, output_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help=f"Comma-separated: {', '.join(OBJECTIVES)}")
    parser.add_argument("--max-steps", type=int, default=60, help="Most unlearning steps per objective.")
    parser.add_argument("--every", type=int, default=3, help="Steps between G-effect computations.")
    parser.add_argument("--num-samples", type=int, default=16, help="Forget and retain examples of the G-effect.")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--output-dir", default="geffect_compare_output")
    parser.add_argument("--figure", default=str(HERE / "geffect_compare.png"))
    parser.add_argument("--seed", type=int, default=0, help="Seed of the target model (and of unlearning by default).")
    parser.add_argument("--unlearning-seed", type=int, default=None, help="Seed of the forget batches' order.")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1, unless OMP_NUM_THREADS is set)."
    )
    cli = parser.parse_args()
    set_demo_threads(cli.threads)  # tiny models: one thread is fastest on a shared machine (hf_unlearn.demo.tiny)
    main(
        objectives=[o.strip() for o in cli.objectives.split(",") if o.strip()],
        max_steps=cli.max_steps,
        every=cli.every,
        num_samples=cli.num_samples,
        learning_rate=cli.learning_rate,
        output_dir=cli.output_dir,
        figure=cli.figure,
        seed=cli.seed,
        unlearning_seed=cli.unlearning_seed,
    )
