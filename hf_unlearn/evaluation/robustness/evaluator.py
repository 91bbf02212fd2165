"""`RobustnessEvaluator`: every robustness attack on an unlearned model, beside the retain and target models, with
scores, a JSON file, a markdown table and a plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ...io import write_json_atomic, write_text_atomic
from ..metrics import mia_auc
from .logit_lens import logit_lens
from .mia import mia_gradient_norm, mia_reference
from .presets import get_preset, open_unlearning_scores, run_preset
from .probing import probing_attack
from .quantization import quantization_attack
from .relearning import relearning_attack
from .scoring import answer_probabilities, encode_qa, robustness_score, stability_score

ROBUSTNESS_FILE = "robustness.json"
FILE_FORMAT = "hf_unlearn.robustness"
ATTACKS = ("relearning", "quantization", "logit_lens", "probing", "mia")
DEFAULT_ATTACKS = ("relearning", "quantization", "logit_lens", "probing")


class RobustnessEvaluator:
    """Runs the attacks of `attacks` on the unlearned `model` and, when given, on the `retain_model` (which never saw
    the forget data: the reference of the scores) and the `target_model` (before unlearning), on one forget set.

    The metric is TOFU's forget-answer probability (mean over questions, teacher forced). Per attack, the table holds
    that metric after the attack for each model, and a score:
    - relearning (fine-tuned on the first `relearn_fraction` of the forget set, measured on the rest):
      R = 1 - |d_unlearned - d_retain| / (|d_unlearned| + |d_retain|) (needs the retain model);
    - quantization (each of `bits`): Q = 1 - |m_after - m_before| / (|m_before| + |m_after|);
    - logit lens: the highest probability decoded from any layer, against the model's own (Q of the two);
    - probing: the worst prompt variant's probability against the original prompt's (Q of the two);
    - mia (needs `holdout_dataset`, questions the models never saw): the AUC of the reference-model attack (the
      reference: the retain model; skipped without one) and of the gradient-norm attack (open-unlearning's
      `mia_gradnorm`: the mean of the per-tensor gradient norms of the answer's mean NLL without its closing token,
      [`mia_gradient_norm`]'s defaults), forget (members) against holdout rows; reported, not scored;
    - each preset of `preset` ([`~hf_unlearn.evaluation.robustness.presets`], a published attack setting): its worst
      run; relearning and fine-tuning presets scored as relearning (needs the retain model), quantization and
      jailbreak presets as Q; `open-unlearning` gives the three scores below.

    Beside the scores, the results name each model's strongest attack (`worst_case`: the attack after which the
    forget answers' probability is highest, of every row of the table) and open-unlearning's robustness figure
    (`open_unlearning`: R = min(d_retain / d_model, 1) under relearning, Q = min(m_before / m_after, 1) under
    4-bit quantization, their harmonic mean; from the `open-unlearning` preset when it ran, else from the default
    relearning and 4-bit attacks, which `source` then says).

    Args:
        model, tokenizer: the unlearned model (full, peft or GRUN) and its tokenizer.
        forget_dataset: question/answer rows of the forget set.
        retain_model, target_model: optional reference models (the same tokenizer).
        attacks: a subset of `ATTACKS` (default: relearning, quantization, logit_lens and probing; none when a
            preset is given).
        preset: the name of a preset, or several (see `PRESETS`), run beside the attacks.
        corpus: unrelated text (strings or rows with a "text" column) for the presets that fine-tune on one.
        preset_overrides: per preset name, settings to change (recorded in the results).
        bits: quantization widths (4: NF4; others: integers).
        quantization_backend: `"auto"` (bitsandbytes for a model on CUDA when installed), `"ours"` or
            `"bitsandbytes"` (see [`quantized_copy`]).
        relearn_steps, relearn_learning_rate, relearn_lora: the relearning attack's settings.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        forget_dataset: Any,
        *,
        retain_model: torch.nn.Module | None = None,
        target_model: torch.nn.Module | None = None,
        holdout_dataset: Any | None = None,
        attacks: Sequence[str] | None = None,
        bits: Sequence[int] = (4, 8),
        quantization_backend: str = "auto",
        relearn_fraction: float = 0.5,
        relearn_steps: int = 10,
        relearn_learning_rate: float = 1e-4,
        relearn_lora: bool = False,
        batch_size: int = 16,
        progress: bool = True,
        preset: str | Sequence[str] | None = None,
        corpus: Any | None = None,
        preset_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        names = [preset] if isinstance(preset, str) else list(preset or [])
        self.presets = [get_preset(name) for name in names]  # a ValueError naming the valid presets
        if attacks is None:
            attacks = () if self.presets else DEFAULT_ATTACKS
        unknown = sorted(set(attacks) - set(ATTACKS))
        if unknown or not (attacks or self.presets):
            raise ValueError(
                f"Unknown or no robustness attack(s) {unknown or list(attacks)}; choose from {list(ATTACKS)}."
            )
        for chosen in self.presets:
            if "corpus" in chosen.needs and corpus is None:
                raise ValueError(f"Preset {chosen.name} fine-tunes on unrelated text: pass corpus= (or --corpus).")
        overrides = dict(preset_overrides or {})
        stray = sorted(set(overrides) - {p.name for p in self.presets})
        if stray:
            raise ValueError(f"preset_overrides names preset(s) {stray} that are not run.")
        self.preset_overrides = overrides
        self.corpus = corpus
        if not 0 < relearn_fraction < 1:
            raise ValueError(f"relearn_fraction must be in (0, 1), got {relearn_fraction}.")
        encode_qa(tokenizer, forget_dataset, what="forget dataset")  # fails early on empty data or missing columns
        if len(forget_dataset) < 2 and "relearning" in attacks:
            raise ValueError("The relearning attack needs at least 2 forget questions (one to relearn, one to test).")
        if "mia" in attacks and (holdout_dataset is None or len(holdout_dataset) == 0):
            raise ValueError("The mia attack needs holdout_dataset: questions none of the models was trained on.")
        self.holdout_dataset = holdout_dataset
        self.models = {"unlearned": model, "retain": retain_model, "target": target_model}
        self.tokenizer = tokenizer
        self.forget_dataset = forget_dataset
        self.attacks = list(attacks)
        self.bits = list(bits)
        self.quantization_backend = quantization_backend
        self.relearn_fraction = relearn_fraction
        self.relearn = {"steps": relearn_steps, "learning_rate": relearn_learning_rate, "lora": relearn_lora}
        self.batch_size = batch_size
        self.progress = progress

    def _run(self, model: torch.nn.Module) -> dict[str, Any]:
        data, results = self.forget_dataset, {}
        pairs = encode_qa(self.tokenizer, data)
        results["original"] = float(answer_probabilities(model, self.tokenizer, pairs, self.batch_size).mean())
        if "relearning" in self.attacks:
            split = max(1, min(len(data) - 1, int(len(data) * self.relearn_fraction)))
            relearn, held_out = data.select(range(split)), data.select(range(split, len(data)))
            results["relearning"] = relearning_attack(
                model, self.tokenizer, relearn, held_out, batch_size=4, progress=self.progress, **self.relearn
            ).to_dict()
        if "quantization" in self.attacks:
            results["quantization"] = {
                str(bits): quantization_attack(
                    model,
                    self.tokenizer,
                    data,
                    bits=bits,
                    batch_size=self.batch_size,
                    backend=self.quantization_backend,
                ).to_dict()
                for bits in self.bits
            }
        if "logit_lens" in self.attacks:
            lens = logit_lens(model, self.tokenizer, data, batch_size=self.batch_size)
            results["logit_lens"] = {"probabilities": lens.probabilities, "peak_layer": lens.peak_layer}
        if "probing" in self.attacks:
            probing = probing_attack(model, self.tokenizer, data, batch_size=self.batch_size, progress=self.progress)
            results["probing"] = probing.to_dict()
        if "mia" in self.attacks:
            results["mia"] = self._membership(model)
        if self.presets:
            results["presets"] = {
                chosen.name: run_preset(
                    chosen,
                    model,
                    self.tokenizer,
                    data,
                    corpus=self.corpus,
                    overrides=self.preset_overrides.get(chosen.name),
                    batch_size=self.batch_size,
                    quantization_backend=self.quantization_backend,
                    progress=self.progress,
                )
                for chosen in self.presets
            }
        return results

    def _membership(self, model: torch.nn.Module) -> dict[str, float]:
        forget, holdout = self.forget_dataset, self.holdout_dataset
        auc = {
            "gradient_norm": mia_auc(
                mia_gradient_norm(model, self.tokenizer, forget), mia_gradient_norm(model, self.tokenizer, holdout)
            )
        }
        reference = self.models.get("retain")
        if reference is not None and reference is not model:
            auc["reference"] = mia_auc(
                mia_reference(model, reference, self.tokenizer, forget),
                mia_reference(model, reference, self.tokenizer, holdout),
            )
        return auc

    def evaluate(self, output_dir: str | Path | None = None) -> dict[str, Any]:
        """Run every attack on every model given; write `robustness.json`, `robustness.md` and `robustness.png`
        into `output_dir` (when given); return the results."""
        per_model = {name: self._run(model) for name, model in self.models.items() if model is not None}
        results: dict[str, Any] = {"format": FILE_FORMAT, "models": per_model}
        if self.presets:
            results["presets"] = {p.name: p.to_dict() for p in self.presets}
            for name, changed in self.preset_overrides.items():
                results["presets"][name]["overrides"] = dict(changed)
        open_unlearning = _open_unlearning(per_model)
        results["scores"] = _scores(per_model, open_unlearning)
        results["open_unlearning"] = open_unlearning
        results["worst_case"] = worst_case(results)
        if output_dir is not None:
            output_dir = Path(output_dir)
            write_json_atomic(output_dir / ROBUSTNESS_FILE, results)
            write_text_atomic(output_dir / "robustness.md", format_robustness_table(results) + "\n")
            plot_robustness(results, output_dir / "robustness.png")
        return results


def _open_unlearning(per_model: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """open-unlearning's R, Q and robustness per model (see [`open_unlearning_scores`]): from the open-unlearning
    preset when it ran, else from the default relearning and 4-bit quantization; None when neither ran."""
    unlearned, retain = per_model["unlearned"], per_model.get("retain") or {}
    if "open-unlearning" in unlearned.get("presets", {}):
        source = "the open-unlearning preset (one epoch on the forget set; 4-bit NF4)"

        def numbers(results: dict[str, Any]) -> tuple[dict | None, dict | None]:
            run = results.get("presets", {}).get("open-unlearning")
            return (run["relearning"], run["quantization"]) if run else (None, None)

    elif "relearning" in unlearned or "4" in unlearned.get("quantization", {}):
        source = (
            "hf_unlearn's default attacks (relearning measured on held-out forget questions; 4-bit NF4 with the LM "
            "head quantized), not open-unlearning's protocol: run the open-unlearning preset for it"
        )

        def numbers(results: dict[str, Any]) -> tuple[dict | None, dict | None]:
            return results.get("relearning"), results.get("quantization", {}).get("4")

    else:
        return None
    retain_relearning, _ = numbers(retain) if retain else (None, None)
    models = {}
    for name, results in per_model.items():
        relearning, quantization = numbers(results)
        models[name] = open_unlearning_scores(
            relearning and relearning["before"],
            relearning and relearning["after"],
            retain_relearning and retain_relearning["before"],
            retain_relearning and retain_relearning["after"],
            quantization and quantization["before"],
            quantization and quantization["after"],
        )
    return {"source": source, "models": models}


def _preset_scores(per_model: dict[str, dict[str, Any]]) -> dict[str, float]:
    unlearned, retain = per_model["unlearned"], per_model.get("retain") or {}
    scores: dict[str, float] = {}
    for name, run in unlearned.get("presets", {}).items():
        if run["attack"] in ("relearning", "finetuning"):
            reference = retain.get("presets", {}).get(name)
            if reference is not None:
                scores[f"preset_{name}"] = robustness_score(
                    run["after"] - run["before"], reference["after"] - reference["before"]
                )
        elif run["attack"] in ("quantization", "jailbreak"):
            scores[f"preset_{name}"] = stability_score(run["before"], run["after"])
    return scores


def _scores(per_model: dict[str, dict[str, Any]], open_unlearning: dict[str, Any] | None = None) -> dict[str, float]:
    unlearned, retain = per_model["unlearned"], per_model.get("retain")
    scores: dict[str, float] = {}
    if "relearning" in unlearned and retain is not None:
        scores["relearning"] = robustness_score(unlearned["relearning"]["change"], retain["relearning"]["change"])
    for bits, result in unlearned.get("quantization", {}).items():
        scores[f"quantization_{bits}bit"] = result["score"]
    if "logit_lens" in unlearned:
        probabilities = unlearned["logit_lens"]["probabilities"]
        scores["logit_lens"] = robustness_score(max(probabilities), probabilities[-1])
    if "probing" in unlearned:
        scores["probing"] = robustness_score(unlearned["probing"]["worst_case_probability"], unlearned["original"])
    scores.update(_preset_scores(per_model))
    if open_unlearning is not None:
        for key, value in open_unlearning["models"]["unlearned"].items():
            if value is not None:
                scores[f"open_unlearning_{key}"] = value
    return scores


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float | None], float | None]]:
    """(attack, forget probability after it per model, score) rows."""
    models, scores = results["models"], results["scores"]
    names = list(models)
    rows = [("none (the model itself)", {n: models[n]["original"] for n in names}, None)]
    if "relearning" in models["unlearned"]:
        rows.append(("relearning", {n: models[n]["relearning"]["after"] for n in names}, scores.get("relearning")))
    for bits in models["unlearned"].get("quantization", {}):
        after = {n: models[n]["quantization"][bits]["after"] for n in names}
        rows.append((f"quantization {bits}-bit", after, scores.get(f"quantization_{bits}bit")))
    if "logit_lens" in models["unlearned"]:
        peak = {n: max(models[n]["logit_lens"]["probabilities"]) for n in names}
        rows.append(("logit lens (best layer)", peak, scores.get("logit_lens")))
    if "probing" in models["unlearned"]:
        worst = {n: models[n]["probing"]["worst_case_probability"] for n in names}
        rows.append(("probing (worst prompt)", worst, scores.get("probing")))
    for preset, run in models["unlearned"].get("presets", {}).items():
        after = {n: models[n]["presets"][preset]["after"] for n in names}
        rows.append((f"preset {preset} ({_worst_label(run)})", after, scores.get(f"preset_{preset}")))
    return rows


def _worst_label(run: dict[str, Any]) -> str:
    """Which run of a preset was the worst: "4-bit fp4", "100 steps", "lr 3.2e-06", a jailbreak variant..."""
    worst = run["runs"][run["worst_run"]]
    if "variant" in worst:
        return worst["variant"]
    if "bits" in worst:
        return f"{worst.get('attack', 'quantization')} {worst['bits']}-bit {worst['scheme']}"
    label = f"{worst['steps']} steps, lr {worst['learning_rate']:g}"
    return f"{worst['attack']}, {label}" if "attack" in worst else label


def worst_case(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each model's strongest attack: the row of the table whose forget-answer probability is highest, with that
    probability, the model's own (no attack) and the increase."""
    rows = _rows(results)
    original, attacked = rows[0][1], rows[1:]
    worst: dict[str, dict[str, Any]] = {}
    for name in results["models"]:
        if not attacked:
            continue
        attack, values, _ = max(attacked, key=lambda row: row[1][name])
        worst[name] = {
            "attack": attack,
            "probability": values[name],
            "original": original[name],
            "increase": values[name] - original[name],
        }
    return worst


def format_worst_case(results: dict[str, Any]) -> str:
    """Markdown lines: each model's strongest attack and open-unlearning's robustness figure."""
    lines = []
    worst = results.get("worst_case") or worst_case(results)
    if worst:
        cells = [
            f"{name}: {row['attack']}, {row['probability']:.4f} (from {row['original']:.4f})"
            for name, row in worst.items()
        ]
        lines.append("Strongest attack (highest forget-answer probability) per model: " + "; ".join(cells) + ".")
    figure = results.get("open_unlearning")
    if figure:

        def show(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        cells = [
            f"{name}: {show(v['robustness'])} (R {show(v['relearning'])}, Q {show(v['quantization'])})"
            for name, v in figure["models"].items()
        ]
        lines.append(
            "open-unlearning robustness (harmonic mean of relearning R and quantization Q), from "
            f"{figure['source']}: " + "; ".join(cells) + "."
        )
    return "\n\n".join(lines)


def format_robustness_table(results: dict[str, Any]) -> str:
    """Markdown: the forget answers' probability after each attack, per model, and the attack's score (1: robust)."""
    names = list(results["models"])
    lines = [
        "| attack | " + " | ".join(f"{name} model" for name in names) + " | score |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for attack, values, score in _rows(results):
        cells = [f"{values[n]:.4f}" for n in names] + ["-" if score is None else f"{score:.3f}"]
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    below = format_worst_case(results)
    return "\n".join(lines) + (f"\n\n{below}" if below else "")


def plot_robustness(results: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars: the forget answers' probability after each attack, one bar per model."""
    from matplotlib.figure import Figure

    from ..plots import save_figure

    rows = _rows(results)
    names = list(results["models"])
    fig = Figure(figsize=(max(6, 1.6 * len(rows)), 3.6))
    axes = fig.add_subplot()
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        xs = [i + (index - (len(names) - 1) / 2) * width for i in range(len(rows))]
        axes.bar(xs, [values[name] for _, values, _ in rows], width=width, label=f"{name} model")
    axes.set_xticks(range(len(rows)), [attack for attack, _, _ in rows], rotation=15, fontsize=8)
    axes.set_ylabel("forget answer probability")
    axes.set_title("Does the forgotten knowledge come back?", fontsize=10)
    axes.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
