"""Model cards for unlearned models: metadata (`ModelCardData`, `model-index`) and a readable body.

A card is built in two steps: the facts about the model are gathered from what lies beside it
([`~hf_unlearn.hub.facts.gather_card_facts`]: `unlearning.json`, the adapter or GRUN config, an evaluation's
`summary.json`), then rendered into the markdown template `templates/model_card.md` ([`render_model_card`]).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

from ..io import write_text_atomic
from .eval_summary import MUSE_DATASET_ID
from .facts import CardFacts, gather_card_facts

__all__ = ["LIBRARY_URL", "MODEL_CARD_TEMPLATE", "build_model_card", "render_model_card", "write_model_card"]

LIBRARY_URL = "https://github.com/hf-unlearn/hf_unlearn"
#: The card's markdown, filled with `str.format` (see [`render_model_card`]).
MODEL_CARD_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"


def build_model_card(
    folder: str | Path | None = None,
    *,
    repo_id: str | None = None,
    state: Mapping[str, Any] | None = None,
    kind: str | None = None,
    base_model: str | None = None,
    forget_data: str | None = None,
    eval_results: str | Path | Mapping[str, Any] | None = None,
    model_name: str | None = None,
    license: str | None = None,
    tags: Iterable[str] | None = None,
) -> ModelCard:
    """The model card of an unlearned model, built in memory (nothing is written).

    Args:
        folder: the saved model (read for `unlearning.json`, the adapter or GRUN config and an evaluation summary).
        repo_id: the repo it is published as (for the title and the usage snippet).
        state: the unlearning settings (default: the folder's `unlearning.json`).
        kind: `"peft"`, `"grun"` or `"full"` (default: detected from the folder; `"full"` without a folder; see
            `hf_unlearn.methods`).
        base_model: the base model (default: the one recorded by the adapter / GRUN config). Only a Hub id goes into
            the metadata; a local path is left out of the card.
        forget_data: a description of the forget data: a Hub dataset id (`"locuslab/TOFU"`, also listed in the
            metadata), optionally with a configuration after a colon (`"locuslab/TOFU:forget10"`), or free text.
        eval_results: a TOFU evaluation summary (a dict, its `summary.json` or a folder holding it). Default: a
            `summary.json` in the folder or one of its subfolders, if any.
        model_name: the name shown in the card and `model-index` (default: the repo name).
        license: a license id for the metadata.
        tags: extra tags.
    """
    facts = gather_card_facts(
        folder,
        repo_id=repo_id,
        state=state,
        kind=kind,
        base_model=base_model,
        forget_data=forget_data,
        eval_results=eval_results,
        model_name=model_name,
        license=license,
        tags=tags,
    )
    return render_model_card(facts)


# ----------------------------------------------------------------------------------------------------------------
# rendering: each optional part is "" or "\n\n" followed by its markdown, placed at the end of the line before it
# ----------------------------------------------------------------------------------------------------------------


def _base_model_text(facts: CardFacts) -> str:
    if facts.hub_base_model:
        return f"[`{facts.hub_base_model}`](https://huggingface.co/{facts.hub_base_model})"
    if facts.base_model:
        return f"`{Path(facts.base_model).name or facts.base_model}` (a local model)"
    return "a base model (not recorded)"


def _method_text(facts: CardFacts) -> str:
    if not facts.method_rows:
        return "The unlearning settings were not recorded (no `unlearning.json` beside the model)."
    return "\n".join(
        ["| Setting | Value |", "|---|---|"] + [f"| {label} | {value} |" for label, value in facts.method_rows]
    )


def _forget_data_text(facts: CardFacts) -> str:
    if facts.forget_dataset:
        config = f", configuration `{facts.forget_config}`" if facts.forget_config else ""
        return f"[{facts.forget_dataset}](https://huggingface.co/datasets/{facts.forget_dataset}){config}."
    return facts.forget_data or "Not recorded."


def _evaluation_settings(summary: dict) -> str:
    record = summary.get("evaluation") or {}
    settings = [f"{key}={record[key]}" for key in ("max_new_tokens", "max_questions") if key in record]
    return f" Settings: {', '.join(settings)}." if settings else ""


def _evaluation_section(facts: CardFacts) -> str:
    return _summary_section(facts) + _robustness_section(facts)


def _robustness_section(facts: CardFacts) -> str:
    if not facts.robustness_results:
        return ""
    rows = [f"| {result.metric_name} | {result.metric_value:.3f} |" for result in facts.robustness_results]
    intro = (
        "Does the forgotten knowledge come back under attack (`hf-unlearn robustness`)? A score of 1 means the attack "
        "moves the forget answers' probability no more than it moves a model that never saw them (relearning) or "
        "not at all (quantization, logit lens); towards 0, the knowledge returns."
    )
    lines = ["", "", "## Robustness", "", intro, "", "| Attack | Score |", "|---|---|", *rows]
    summary = facts.robustness_summary
    worst = summary.get("worst_case")
    if worst:
        lines += [
            "",
            f"Strongest attack: {worst['attack']}, after which the forget answers' probability is "
            f"{worst['probability']:.3f} (the model's own: {worst['original']:.3f}).",
        ]
    figure = summary.get("open_unlearning")
    if figure and figure.get("robustness") is not None:
        lines += [
            "",
            f"open-unlearning's robustness figure: {figure['robustness']:.3f}, the harmonic mean of relearning "
            f"R = {figure['relearning']:.3f} and quantization Q = {figure['quantization']:.3f}, from "
            f"{figure['source']}.",
        ]
    return "\n".join(lines)


def _summary_section(facts: CardFacts) -> str:
    summary = facts.summary
    if not summary:
        return ""
    if facts.benchmark == "muse":
        description = f"MUSE evaluation on `{summary.get('dataset') or MUSE_DATASET_ID}` (hf_unlearn's evaluator)."
    else:
        split = summary.get("split")
        where = f" on the `{split}` forget split" if split else ""
        description = f"TOFU evaluation{where} (hf_unlearn's evaluator)."
    description += _evaluation_settings(summary)
    if facts.eval_caveats:
        description += " Not a benchmark result, so not in the card's metadata: " + "; ".join(facts.eval_caveats) + "."
    rows = [f"| {result.metric_name} | {result.metric_value:.4g} |" for result in facts.eval_rows]
    return "\n".join(["", "", "## Evaluation", "", description, "", "| Metric | Value |", "|---|---|", *rows])


def _notes(facts: CardFacts) -> str:
    note = facts.model_format.base_model_note
    return f"\n\n{note}" if note and not facts.hub_base_model else ""


def _citations_section(facts: CardFacts) -> str:
    if not facts.papers:
        return ""
    return "\n".join(["", "", "## Citations", "", *(paper.markdown() for paper in facts.papers)])


def render_model_card(facts: CardFacts, template: str | Path | None = None) -> ModelCard:
    """Render the facts into a model card: the metadata as YAML front matter, the body from the markdown template
    (default [`MODEL_CARD_TEMPLATE`]), filled with `str.format`. The template's fields: `card_data`, `model_name`,
    `base_model`, `library_url`, `model_description`, `method`, `forget_data`, `evaluation`, `load_call`, `usage`,
    `notes` and `citations` (the optional parts are empty or start with a blank line)."""
    text = Path(template or MODEL_CARD_TEMPLATE).read_text(encoding="utf-8")
    content = text.format(
        card_data=facts.card_data().to_yaml(),
        model_name=facts.model_name,
        base_model=_base_model_text(facts),
        library_url=LIBRARY_URL,
        model_description=facts.model_format.description,
        method=_method_text(facts),
        forget_data=_forget_data_text(facts),
        evaluation=_evaluation_section(facts),
        load_call=facts.load_call,
        usage=facts.usage,
        notes=_notes(facts),
        citations=_citations_section(facts),
    )
    return ModelCard(content)


def write_model_card(card: ModelCard | str, folder: str | Path) -> Path:
    """Write `README.md` into `folder` atomically: a temporary file in the same folder, then a rename."""
    return write_text_atomic(Path(folder) / "README.md", str(card))
