"""`RobustnessEvaluator`: every robustness attack on an unlearned model, beside the retain and target models, with
scores, a JSON file, a markdown table and a plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ...io import write_json_atomic, write_text_atomic
from ..metrics import mia_auc
from .logit_lens import logit_lens
from .mia import mia_gradient_norm, mia_reference
from .probing import probing_attack
from .quantization import quantization_attack
from .relearning import relearning_attack
from .scoring import answer_probabilities, encode_qa, robustness_score

ROBUSTNESS_FILE = "robustness.json"
FILE_FORMAT = "hf_unlearn.robustness"
ATTACKS = ("relearning", "quantization", "logit_lens", "probing", "mia")


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
      [`mia_gradient_norm`]'s defaults), forget (members) against holdout rows; reported, not scored.

    Args:
        model, tokenizer: the unlearned model (full, peft or GRUN) and its tokenizer.
        forget_dataset: question/answer rows of the forget set.
        retain_model, target_model: optional reference models (the same tokenizer).
        attacks: a subset of `ATTACKS`.
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
        attacks: Sequence[str] = ("relearning", "quantization", "logit_lens", "probing"),
        bits: Sequence[int] = (4, 8),
        quantization_backend: str = "auto",
        relearn_fraction: float = 0.5,
        relearn_steps: int = 10,
        relearn_learning_rate: float = 1e-4,
        relearn_lora: bool = False,
        batch_size: int = 16,
        progress: bool = True,
    ):
        unknown = sorted(set(attacks) - set(ATTACKS))
        if unknown or not attacks:
            raise ValueError(
                f"Unknown or no robustness attack(s) {unknown or list(attacks)}; choose from {list(ATTACKS)}."
            )
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
        results = {"format": FILE_FORMAT, "models": per_model, "scores": _scores(per_model)}
        if output_dir is not None:
            output_dir = Path(output_dir)
            write_json_atomic(output_dir / ROBUSTNESS_FILE, results)
            write_text_atomic(output_dir / "robustness.md", format_robustness_table(results) + "\n")
            plot_robustness(results, output_dir / "robustness.png")
        return results


def _scores(per_model: dict[str, dict[str, Any]]) -> dict[str, float]:
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
    return rows


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
    return "\n".join(lines)


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
