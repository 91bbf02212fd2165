"""Model cards for unlearned models: metadata (`ModelCardData`, `model-index`) and a readable body.

The card is built from what lies beside the model: `unlearning.json` (written by `UnlearningTrainer.save_model`,
see `UnlearningTrainer.unlearning_state`), `adapter_config.json` (peft) or `grun_config.json` (GRUN), and the TOFU
evaluator's `summary.json` when an evaluation ran.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "GRUN_CONFIG_FILE",
    "PAPERS",
    "Paper",
    "MUSE_SUMMARY_METRICS",
    "TOFU_METRICS",
    "build_model_card",
    "detect_model_kind",
    "eval_results_from_summary",
    "find_eval_summary",
    "is_hub_model_id",
    "load_eval_summary",
    "papers_for",
    "read_base_model",
    "summary_benchmark",
    "write_model_card",
]

from ..citations import Paper
from ..constants import ADAPTER_CONFIG_FILE, EVAL_SUMMARY_FILE, GRUN_CONFIG_FILE, UNLEARNING_STATE_FILE
from ..io import write_text_atomic

TOFU_DATASET_ID = "locuslab/TOFU"
LIBRARY_URL = "https://github.com/hf-unlearn/hf_unlearn"


PAPERS: dict[str, Paper] = {
    "tofu": Paper("TOFU: A Task of Fictitious Unlearning for LLMs", "Maini et al. 2024", "2401.06121"),
    "muse": Paper("MUSE: Machine Unlearning Six-Way Evaluation for Language Models", "Shi et al. 2024", "2407.06460"),
    "npo": Paper(
        "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "Zhang et al. 2024",
        "2404.05868",
    ),
    "simnpo": Paper(
        "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
        "Fan et al. 2024",
        "2410.07163",
    ),
    "wmdp": Paper(
        "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning", "Li et al. 2024", "2403.03218"
    ),
    "gru": Paper(
        "GRU: Mitigating the Trade-off between Unlearning and Retention for LLMs", "Wang et al. 2025", "2503.09117"
    ),
    "grun": Paper("A General Framework to Enhance Fine-tuning-based LLM Unlearning", "Ren et al. 2025", "2502.17823"),
    "ga": Paper(
        "Knowledge Unlearning for Mitigating Privacy Risks in Language Models", "Jang et al. 2023", "2210.01504"
    ),
    "dpo": Paper(
        "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        "Rafailov et al. 2023",
        "2305.18290",
    ),
    "ceu": Paper("CE-U: Cross Entropy Unlearning", "Yang et al. 2025", "2503.01224"),
    "undial": Paper(
        "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
        "Dong et al. 2024",
        "2402.10052",
    ),
    "g_effect": Paper(
        "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond", "Wang et al., ICLR 2025"
    ),
    "satimp": Paper("Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", "Yang et al., ICML 2025"),
}

# Registered loss name -> the papers that define it (hf_unlearn.losses).
_LOSS_PAPERS: dict[str, tuple[str, ...]] = {
    "npo": ("npo",),
    "simnpo": ("simnpo",),
    "rmu": ("wmdp",),
    "embed_diff": ("wmdp",),
    "idk": ("tofu",),
    "dpo": ("dpo", "npo"),
    "ga": ("ga",),
    "ceu": ("ceu",),
    "undial": ("undial",),
    "wga": ("g_effect",),
    "tnpo": ("g_effect",),
    "wtnpo": ("g_effect",),
    "satimp": ("satimp",),
}

#: TOFU summary keys reported in `model-index`, in this order, with their display names.
TOFU_METRICS: dict[str, str] = {
    "forget_quality": "Forget quality",
    "model_utility": "Model utility",
    "forget_rougeL_recall": "Forget ROUGE-L recall",
    "forget_probability": "Forget probability",
    "forget_truth_ratio": "Forget truth ratio",
    "retain_rougeL_recall": "Retain ROUGE-L recall",
    "retain_probability": "Retain probability",
    "retain_truth_ratio": "Retain truth ratio",
    "real_authors_rougeL_recall": "Real authors ROUGE-L recall",
    "real_authors_probability": "Real authors probability",
    "real_authors_truth_ratio": "Real authors truth ratio",
    "world_facts_rougeL_recall": "World facts ROUGE-L recall",
    "world_facts_probability": "World facts probability",
    "world_facts_truth_ratio": "World facts truth ratio",
}

#: MUSE summary keys (hf_unlearn.evaluation.MUSEEvaluator) reported in `model-index`, with their display names.
MUSE_SUMMARY_METRICS: dict[str, str] = {
    "knowmem_forget_rougeL_f1": "KnowMem forget ROUGE-L F1",
    "knowmem_retain_rougeL_f1": "KnowMem retain ROUGE-L F1",
    "verbmem_forget_rougeL_f1": "VerbMem forget ROUGE-L F1",
    "privleak": "PrivLeak",
    "privleak_auc_muse": "PrivLeak Min-K% AUC",
}
MUSE_DATASET_ID = "muse-bench/MUSE-News"


def summary_benchmark(summary: Mapping[str, Any]) -> str | None:
    """ "tofu" or "muse" for an evaluation summary of either evaluator, None for anything else."""
    if any(key in summary for key in TOFU_METRICS):
        return "tofu"
    if any(key in summary for key in MUSE_SUMMARY_METRICS):
        return "muse"
    return None


_KIND_DESCRIPTIONS = {
    "peft": "a peft adapter, loaded on top of the base model",
    "grun": "GRUN modules (a gate and ReFT interventions), attached to the frozen base model",
    "full": "full model weights",
}

# A Hub repo id: "name" or "namespace/name" (letters, digits, "-", "_", "."), not a path.
_REPO_ID_PATTERN = re.compile(r"^(?:[\w][\w.-]*/)?[\w][\w.-]*$")


# ----------------------------------------------------------------------------------------------------------------
# reading a model folder
# ----------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def detect_model_kind(folder: str | Path) -> str:
    """What a saved unlearned model is: `"grun"` (`grun_config.json`), `"peft"` (`adapter_config.json`) or
    `"full"` (`config.json`)."""
    folder = Path(folder)
    if (folder / GRUN_CONFIG_FILE).is_file():
        return "grun"
    if (folder / ADAPTER_CONFIG_FILE).is_file():
        return "peft"
    if (folder / "config.json").is_file():
        return "full"
    raise FileNotFoundError(
        f"{folder} holds no model: expected {GRUN_CONFIG_FILE} (GRUN modules), {ADAPTER_CONFIG_FILE} (a peft "
        "adapter) or config.json (full weights). Save the model first, e.g. with `trainer.save_model()`."
    )


def read_base_model(folder: str | Path, kind: str | None = None) -> str | None:
    """The base model recorded in a saved adapter or GRUN module set (`base_model_name_or_path`); None for full
    weights or when it is not recorded."""
    folder = Path(folder)
    kind = kind or detect_model_kind(folder)
    config_file = {"peft": ADAPTER_CONFIG_FILE, "grun": GRUN_CONFIG_FILE}.get(kind)
    if config_file is None:
        return None
    config = _read_json(folder / config_file)
    return config.get("base_model_name_or_path") if isinstance(config, Mapping) else None


def is_hub_model_id(name: str | None) -> bool:
    """Whether `name` can only be a Hub model id (`"org/name"` or `"name"`), not an existing local path."""
    if not name or os.path.exists(name) or ".." in name:
        return False
    return bool(_REPO_ID_PATTERN.match(name))


def load_unlearning_state(folder: str | Path) -> dict[str, Any] | None:
    """`unlearning.json` of a saved model (what was unlearned and how), or None if there is none."""
    path = Path(folder) / UNLEARNING_STATE_FILE
    if not path.is_file():
        return None
    state = _read_json(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} must hold a JSON object, got {type(state).__name__}.")
    return dict(state)


def load_eval_summary(path: str | Path) -> dict[str, Any]:
    """Read an evaluation summary (the `summary.json` of the TOFU or MUSE evaluator, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Evaluation results file {path} does not exist.")
    summary = _read_json(path)
    if not isinstance(summary, Mapping) or summary_benchmark(summary) is None:
        keys = sorted(summary) if isinstance(summary, Mapping) else type(summary).__name__
        raise ValueError(
            f"{path} is not a TOFU or MUSE evaluation summary: expected some of {sorted(TOFU_METRICS)} or of "
            f"{sorted(MUSE_SUMMARY_METRICS)} (the keys of the `summary.json` that `TOFUEvaluator` / "
            f"`MUSEEvaluator` write); it has {keys}."
        )
    return dict(summary)


def find_eval_summary(folder: str | Path) -> Path | None:
    """The TOFU evaluation summary saved in a model folder or one of its direct subfolders, if there is exactly one.

    Raises ValueError when several subfolders hold one (pass the right one explicitly).
    """
    folder = Path(folder)
    if (folder / EVAL_SUMMARY_FILE).is_file():
        return folder / EVAL_SUMMARY_FILE
    found = sorted(p for p in folder.glob(f"*/{EVAL_SUMMARY_FILE}") if not p.parent.name.startswith("checkpoint-"))
    if len(found) > 1:
        raise ValueError(
            f"Several evaluation summaries in {folder}: {[str(p.relative_to(folder)) for p in found]}. "
            "Choose one with `eval_results=` (`--eval-results FILE` on the command line)."
        )
    return found[0] if found else None


# ----------------------------------------------------------------------------------------------------------------
# metadata
# ----------------------------------------------------------------------------------------------------------------


def eval_results_from_summary(summary: Mapping[str, Any]) -> list[EvalResult]:
    """`model-index` entries for the TOFU or MUSE metrics of a summary that have a value (None values are left
    out)."""
    if summary_benchmark(summary) == "muse":
        metrics = MUSE_SUMMARY_METRICS
        dataset = str(summary.get("dataset") or MUSE_DATASET_ID)
        dataset_name, dataset_config = f"MUSE ({dataset.split('/')[-1]})", None
    else:
        metrics = TOFU_METRICS
        split = summary.get("split") or "forget"
        dataset, dataset_name, dataset_config = TOFU_DATASET_ID, f"TOFU ({split})", str(split)
    results = []
    for key, name in metrics.items():
        value = summary.get(key)
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Machine unlearning",
                dataset_type=dataset,
                dataset_name=dataset_name,
                dataset_config=dataset_config,
                metric_type=key,
                metric_name=name,
                metric_value=float(f"{float(value):.6g}"),  # significant digits: forget quality can be 1e-12
            )
        )
    return results


def _grun_requests(state: Mapping[str, Any] | None, grun_config: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The GRUN requests (a `GRUNConfig` dict each, oldest first), from `grun_config.json` or `unlearning.json`."""
    requests = (grun_config or {}).get("requests") or (state or {}).get("grun") or []
    return [dict(request) for request in requests if isinstance(request, Mapping)]


def papers_for(
    state: Mapping[str, Any] | None,
    kind: str,
    evaluated_on_tofu: bool = False,
    grun_config: Mapping[str, Any] | None = None,
    evaluated_on_muse: bool = False,
) -> list[Paper]:
    """The papers to cite for a method: its losses, GRU rectification, GRUN, and TOFU / MUSE when evaluated on
    them."""
    keys: list[str] = []
    state = state or {}
    grun_requests = _grun_requests(state, grun_config) if kind == "grun" else []
    losses = [request.get("forget_loss") for request in grun_requests]
    losses = losses or [state.get("forget_loss"), state.get("retain_loss")]
    for loss in losses:
        keys.extend(_LOSS_PAPERS.get(str(loss), ()))
    if state.get("rectification") == "gru":
        keys.append("gru")
    if kind == "grun":
        keys.append("grun")
    if evaluated_on_tofu:
        keys.append("tofu")
    if evaluated_on_muse:
        keys.append("muse")
    return [PAPERS[key] for key in dict.fromkeys(keys)]


# ----------------------------------------------------------------------------------------------------------------
# body
# ----------------------------------------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items()) or "defaults"
    return str(value)


def _loss_cell(name: Any, kwargs: Any) -> str:
    return f"`{name}`" + (f" ({_format_value(kwargs)})" if kwargs else "")


def _grun_request_cell(request: Mapping[str, Any]) -> str:
    layers = request.get("resolved_layers", request.get("layers"))
    parts = [f"layers={layers}", f"rank={request.get('rank')}", f"gate={request.get('gate')}"]
    parts.append(f"forget loss {_loss_cell(request.get('forget_loss'), request.get('forget_loss_kwargs'))}")
    weights = (("forget_weight", "forget weight"), ("gate_weight", "gate weight"), ("retain_weight", "retain weight"))
    for key, label in (*weights, ("dtype", "dtype")):
        if request.get(key) is not None:
            parts.append(f"{label}={_format_value(request[key])}")
    return ", ".join(parts)


# Runs saved before `gru_projected` existed projected the forget term alone.
_GRU_PROJECTION = {
    "objective": "projects the whole objective's gradient against the retain NLL's moving-average gradient",
    "forget": "projects the forget term's gradient against the retain loss's moving-average gradient",
}


def _method_rows(state: Mapping[str, Any] | None, grun_requests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    state = state or {}
    for index, request in enumerate(grun_requests, start=1):
        label = "GRUN" if len(grun_requests) == 1 else f"GRUN request {index}"
        rows.append((label, _grun_request_cell(request)))
    if state and not grun_requests:  # GRUN's own losses are per request, above
        rows.append(("Forget loss", _loss_cell(state.get("forget_loss"), state.get("forget_loss_kwargs"))))
        rows.append(("Retain loss", _loss_cell(state.get("retain_loss"), state.get("retain_loss_kwargs"))))
        for key, label in (("gamma", "gamma (forget weight)"), ("alpha", "alpha (retain weight)")):
            if state.get(key) is not None:
                rows.append((label, _format_value(state[key])))
    for key, label in (("learning_rate", "Learning rate"), ("seed", "Seed")):
        if state.get(key) is not None:
            rows.append((label, _format_value(state[key])))
    if state.get("rectification") == "gru":
        rows.append(
            (
                "Gradient rectification",
                f"GRU ({_GRU_PROJECTION[state.get('gru_projected', 'forget')]}; "
                f"ema={_format_value(state.get('gru_ema'))}, "
                f"retain weight={_format_value(state.get('gru_retain_weight'))})",
            )
        )
    known = {"forget_loss", "forget_loss_kwargs", "retain_loss", "retain_loss_kwargs", "gamma", "alpha", "method"}
    known |= {"learning_rate", "seed", "peft", "rectification", "gru_ema", "gru_retain_weight", "gru_projected"}
    known |= {"grun"}
    for key in sorted(set(state) - known):
        rows.append((key, _format_value(state[key])))
    return rows


def _usage_snippet(repo_id: str, base_model: str | None) -> str:
    call = f'load_unlearned("{repo_id}")'
    if base_model is None or not is_hub_model_id(base_model):
        call = f'load_unlearned("{repo_id}", base_model="<the base model: a Hub id or a local path>")'
    return (
        "```python\n"
        "from hf_unlearn.hub import load_unlearned\n\n"
        f"model, tokenizer = {call}\n"
        'inputs = tokenizer("Who wrote the book?", return_tensors="pt")\n'
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0], skip_special_tokens=True))\n"
        "```"
    )


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
        kind: `"peft"`, `"grun"` or `"full"` (default: detected from the folder; `"full"` without a folder).
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
    folder = Path(folder) if folder is not None else None
    if kind is None:
        kind = detect_model_kind(folder) if folder is not None else "full"
    if state is None and folder is not None:
        state = load_unlearning_state(folder)
    grun_config = None
    if folder is not None and kind == "grun":
        config = _read_json(folder / GRUN_CONFIG_FILE)
        grun_config = config if isinstance(config, Mapping) else None
    grun_requests = _grun_requests(state, grun_config) if kind == "grun" else []
    if base_model is None and folder is not None:
        base_model = read_base_model(folder, kind)
    if eval_results is None and folder is not None:
        eval_results = find_eval_summary(folder)
    summary = None
    if eval_results is not None:
        summary = dict(eval_results) if isinstance(eval_results, Mapping) else load_eval_summary(eval_results)

    name = model_name or (repo_id.split("/")[-1] if repo_id else folder.name if folder else "unlearned-model")
    repo_id = repo_id or name
    hub_base_model = base_model if is_hub_model_id(base_model) else None

    benchmark = summary_benchmark(summary) if summary else None
    forget_dataset = forget_config = None
    if forget_data is None and benchmark == "tofu" and summary.get("split"):
        forget_dataset, forget_config = TOFU_DATASET_ID, str(summary["split"])
    elif forget_data:
        dataset, _, config = forget_data.partition(":")
        if "/" in dataset and is_hub_model_id(dataset):
            forget_dataset, forget_config = dataset, config or None

    card_tags = ["hf-unlearn", "unlearning", "machine-unlearning"]
    if grun_requests:
        card_tags.extend(str(request["forget_loss"]) for request in grun_requests if request.get("forget_loss"))
    elif state and state.get("forget_loss"):
        card_tags.append(str(state["forget_loss"]))
    if state and state.get("rectification") == "gru":
        card_tags.append("gru")
    if kind == "grun":
        card_tags.append("grun")
    if kind == "peft":
        card_tags.append("peft")
    card_tags.extend(tags or [])
    evaluation = eval_results_from_summary(summary) if summary else []
    data = ModelCardData(
        base_model=hub_base_model,
        datasets=[forget_dataset] if forget_dataset else None,
        library_name="peft" if kind == "peft" else "transformers",
        license=license,
        model_name=name,
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(card_tags)),
        eval_results=evaluation or None,
    )

    lines = [f"# {name}", ""]
    base_text = f"[`{hub_base_model}`](https://huggingface.co/{hub_base_model})" if hub_base_model else "a base model"
    if base_model and not hub_base_model:
        base_text = "a local base model"
    lines += [
        f"This model is {base_text} after machine unlearning with [hf_unlearn]({LIBRARY_URL}). "
        f"The repo holds {_KIND_DESCRIPTIONS.get(kind, kind)}, in safetensors.",
        "",
        "## Method",
        "",
    ]
    rows = _method_rows(state, grun_requests)
    if rows:
        lines += ["| Setting | Value |", "|---|---|"] + [f"| {label} | {value} |" for label, value in rows]
    else:
        lines.append("The unlearning settings were not recorded (no `unlearning.json` beside the model).")
    lines += ["", "## Forget data", ""]
    if forget_dataset:
        config_text = f", configuration `{forget_config}`" if forget_config else ""
        lines.append(f"[{forget_dataset}](https://huggingface.co/datasets/{forget_dataset}){config_text}.")
    elif forget_data:
        lines.append(forget_data)
    else:
        lines.append("Not recorded.")
    if summary:
        lines += ["", "## Evaluation", ""]
        split = summary.get("split")
        if benchmark == "muse":
            lines.append(f"MUSE evaluation on `{summary.get('dataset') or MUSE_DATASET_ID}` (hf_unlearn's evaluator).")
        else:
            where = f" on the `{split}` forget split" if split else ""
            lines.append(f"TOFU evaluation{where} (hf_unlearn's evaluator).")
        lines += ["", "| Metric | Value |", "|---|---|"]
        lines += [f"| {result.metric_name} | {result.metric_value:.4g} |" for result in evaluation]
    lines += ["", "## Usage", "", _usage_snippet(repo_id, base_model)]
    if kind == "peft" and not hub_base_model:
        lines += ["", "The adapter was trained on a base model that is not on the Hub: pass it as `base_model`."]
    tofu = benchmark == "tofu" or forget_dataset == TOFU_DATASET_ID
    papers = papers_for(
        state, kind, evaluated_on_tofu=tofu, grun_config=grun_config, evaluated_on_muse=benchmark == "muse"
    )
    if papers:
        lines += ["", "## Citations", ""] + [paper.markdown() for paper in papers]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)


def write_model_card(card: ModelCard | str, folder: str | Path) -> Path:
    """Write `README.md` into `folder` atomically: a temporary file in the same folder, then a rename."""
    return write_text_atomic(Path(folder) / "README.md", str(card))
