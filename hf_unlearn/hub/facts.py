"""The facts a model card states about an unlearned model, gathered from what lies beside it.

`unlearning.json` (written by `UnlearningTrainer.save_model`; its schema: `hf_unlearn.unlearning_state`), the format's
marker file (`adapter_config.json` for peft, `grun_config.json` for GRUN: see `hf_unlearn.methods`) and an
evaluation's `summary.json` become one [`CardFacts`], which `hf_unlearn.hub.card` renders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData
from transformers.utils import logging

from ..citations import Paper
from ..data.source import DataSource
from ..evaluation.record import RECORD_KEY, is_benchmark_result
from ..io import FINGERPRINT_KEY, read_json_file, weights_fingerprint
from ..methods import UnlearningMethod, get_method, method_of_folder
from .eval_summary import (
    TOFU_DATASET_ID,
    eval_results_from_summary,
    find_eval_summary,
    load_eval_summary,
    summary_benchmark,
)
from .folder import load_unlearning_state
from .papers import GRU_PAPER, MUSE_PAPER, SMOOTHING_PAPER, TOFU_PAPER, loss_papers

logger = logging.get_logger(__name__)

__all__ = ["BASE_TAGS", "CardFacts", "gather_card_facts", "is_hub_model_id", "method_rows", "papers_for"]

#: Tags of every card.
BASE_TAGS = ("hf-unlearn", "unlearning", "machine-unlearning")

# A Hub repo id: "name" or "namespace/name" (letters, digits, "-", "_", "."), not a path.
_REPO_ID_PATTERN = re.compile(r"^(?:[\w][\w.-]*/)?[\w][\w.-]*$")

# Runs saved before `gru_projected` existed projected the forget term alone.
_GRU_PROJECTION = {
    "objective": "projects the whole objective's gradient against the retain NLL's moving-average gradient",
    "forget": "projects the forget term's gradient against the retain loss's moving-average gradient",
}

# Smoothness-enhanced unlearning (Fan et al., ICML 2025) of the forget term.
_SMOOTHING = {
    "sam": "sharpness-aware (SAM) forget gradient, taken at the worst weights of a rho-ball",
    "rs": "randomized smoothing of the forget gradient over weight noise",
}

# unlearning.json keys that have their own rows (or none); any other key gets a row of its own.
_DESCRIBED_KEYS = {
    "forget_loss", "forget_loss_kwargs", "retain_loss", "retain_loss_kwargs", "gamma", "alpha", "method",
    "learning_rate", "seed", "peft", "rectification", "gru_ema", "gru_retain_weight", "gru_projected", "grun",
    "smoothing", "smoothing_kwargs",
    "base_model", "use_chat_template", "forget_data", "retain_data", "training",
}  # fmt: skip


def is_hub_model_id(name: str | None) -> bool:
    """Whether `name` can only be a Hub model id (`"org/name"` or `"name"`), not an existing local path."""
    if not name or os.path.exists(name) or ".." in name:
        return False
    return bool(_REPO_ID_PATTERN.match(name))


# ----------------------------------------------------------------------------------------------------------------
# the method
# ----------------------------------------------------------------------------------------------------------------


def _grun_requests(state: Mapping[str, Any] | None, grun_config: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The GRUN requests (a `GRUNConfig` dict each, oldest first), from `grun_config.json` or `unlearning.json`."""
    requests = (grun_config or {}).get("requests") or (state or {}).get("grun") or []
    return [dict(request) for request in requests if isinstance(request, Mapping)]


def _cited_losses(state: Mapping[str, Any], requests: list[dict[str, Any]]) -> list[Any]:
    """The losses the model was unlearned with: each request's forget loss, else the trainer's two losses."""
    losses = [request.get("forget_loss") for request in requests]
    return losses or [state.get("forget_loss"), state.get("retain_loss")]


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


def _gru_cell(state: Mapping[str, Any]) -> str:
    return (
        f"GRU ({_GRU_PROJECTION[state.get('gru_projected', 'forget')]}; "
        f"ema={_format_value(state.get('gru_ema'))}, "
        f"retain weight={_format_value(state.get('gru_retain_weight'))})"
    )


def _training_rows(training: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Steps, batch and schedule rows from `unlearning.json`'s `training`."""
    rows = []
    length = (
        f"max_steps {training['max_steps']}"
        if training.get("max_steps")
        else f"{_format_value(training.get('num_train_epochs'))} epoch(s)"
    )
    rows.append(("Training", f"{training.get('steps')} optimizer steps ({length})"))
    per_device, accumulation = training.get("per_device_train_batch_size"), training.get("gradient_accumulation_steps")
    processes = training.get("world_size") or 1
    if per_device is not None and accumulation is not None:
        rows.append(
            (
                "Batch size",
                f"{per_device} per device x {accumulation} accumulation x {processes} process(es) = "
                f"{per_device * accumulation * processes} forget examples per step",
            )
        )
    schedule = [f"{training.get('lr_scheduler_type')} learning-rate schedule"]
    if training.get("warmup_steps"):
        schedule.append(f"warmup {_format_value(training['warmup_steps'])}")
    if training.get("optim"):
        schedule.append(f"optimizer {training['optim']}")
    rows.append(("Schedule", ", ".join(schedule)))
    return rows


def method_rows(state: Mapping[str, Any] | None, grun_requests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The card's method table, `(setting, value)` rows: GRUN's requests or the trainer's losses and weights, the
    learning rate and seed, the training schedule and batch, the retain data, the prompt format, GRU, then every
    other recorded setting."""
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
    if isinstance(state.get("training"), Mapping):
        rows.extend(_training_rows(state["training"]))
    if isinstance(state.get("retain_data"), Mapping):
        rows.append(("Retain data", DataSource.from_dict(state["retain_data"]).describe()))
    if state.get("use_chat_template") is not None:
        prompt = "the tokenizer's chat template" if state["use_chat_template"] else '"Question: ...\\nAnswer:"'
        rows.append(("Prompt format", prompt))
    if state.get("rectification") == "gru":
        rows.append(("Gradient rectification", _gru_cell(state)))
    if state.get("smoothing"):
        what = _SMOOTHING.get(state["smoothing"], str(state["smoothing"]))
        rows.append(("Smoothing", f"{what} ({_format_value(state.get('smoothing_kwargs') or {})})"))
    for key in sorted(set(state) - _DESCRIBED_KEYS):
        rows.append((key, _format_value(state[key])))
    return rows


def papers_for(
    state: Mapping[str, Any] | None,
    kind: str,
    evaluated_on_tofu: bool = False,
    grun_config: Mapping[str, Any] | None = None,
    evaluated_on_muse: bool = False,
) -> list[Paper]:
    """The papers to cite for a method: its losses' (`UnlearningLoss.papers`, user losses included), GRU
    rectification, smoothing (SAM, RS), the model format's (GRUN), and TOFU / MUSE when evaluated on them."""
    state = state or {}
    fmt = get_method(kind)
    requests = _grun_requests(state, grun_config) if fmt.per_request else []
    papers: list[Paper] = []
    for loss in _cited_losses(state, requests):
        papers.extend(loss_papers(loss))
    if state.get("rectification") == "gru":
        papers.append(GRU_PAPER)
    if state.get("smoothing"):
        papers.append(SMOOTHING_PAPER)
    papers.extend(fmt.papers)
    if evaluated_on_tofu:
        papers.append(TOFU_PAPER)
    if evaluated_on_muse:
        papers.append(MUSE_PAPER)
    return list(dict.fromkeys(papers))


# ----------------------------------------------------------------------------------------------------------------
# the facts
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class CardFacts:
    """What a model card states about an unlearned model (see [`gather_card_facts`])."""

    #: The name in the card and `model-index`, and the repo the usage snippet loads.
    model_name: str
    repo_id: str
    model_format: UnlearningMethod
    #: The base model, as given or recorded: a Hub id or a local path (only a Hub id goes into the metadata).
    base_model: str | None = None
    #: `unlearning.json`: the unlearning settings, None when not recorded.
    state: dict[str, Any] | None = None
    grun_requests: list[dict[str, Any]] = field(default_factory=list)
    #: The method table's `(setting, value)` rows: losses and hyperparameters, GRUN requests, GRU.
    method_rows: list[tuple[str, str]] = field(default_factory=list)
    #: The forget data: a Hub dataset (and configuration) when it is one (the metadata lists it), and a phrase
    #: saying what it is (the bundled subset and local files are not the benchmark).
    forget_data: str | None = None
    forget_dataset: str | None = None
    forget_config: str | None = None
    #: The evaluation summary, its benchmark ("tofu", "muse"), its results (the card's table) and which of them go
    #: into `model-index`: only those of a complete evaluation on the Hub's benchmark data.
    summary: dict[str, Any] | None = None
    benchmark: str | None = None
    eval_results: list[EvalResult] = field(default_factory=list)
    eval_rows: list[EvalResult] = field(default_factory=list)
    #: Why the evaluation is not a benchmark result (partial, other data, unrecorded); empty when it is one.
    eval_caveats: list[str] = field(default_factory=list)
    #: The robustness scores (`robustness.json` of `RobustnessEvaluator`) and their `model-index` entries.
    robustness_scores: dict[str, float] = field(default_factory=dict)
    robustness_results: list[EvalResult] = field(default_factory=list)
    #: From the same file, for the unlearned model: `worst_case` (its strongest attack: attack, probability,
    #: original, increase) and `open_unlearning` (R, Q, robustness and the source they come from), when recorded.
    robustness_summary: dict[str, Any] = field(default_factory=dict)
    papers: list[Paper] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    license: str | None = None

    @property
    def hub_base_model(self) -> str | None:
        """The base model when it is a Hub id (linked and in the metadata), else None."""
        return self.base_model if is_hub_model_id(self.base_model) else None

    @property
    def load_call(self) -> str:
        """The `load_unlearned(...)` call of the usage snippet: a whole model needs nothing else; an adapter or GRUN
        modules whose base model is not on the Hub get a `base_model=` placeholder."""
        if self.model_format.needs_base_model and not is_hub_model_id(self.base_model):
            return f'load_unlearned("{self.repo_id}", base_model="<the base model: a Hub id or a local path>")'
        return f'load_unlearned("{self.repo_id}")'

    @property
    def usage(self) -> str:
        """The usage snippet's lines after loading: a prompt encoded in the format the model was unlearned with (as
        `unlearning.json` records it), a greedy generation and its decoding."""
        flag = (self.state or {}).get("use_chat_template")
        if flag is None:
            phrase, argument = "the tokenizer's chat template when it has one", ""
        else:
            phrase = "the tokenizer's chat template" if flag else '"Question: ...\\nAnswer:"'
            argument = f", use_chat_template={flag}"
        question = '[{"role": "user", "content": "Who wrote the book?"}]'
        return "\n".join(
            [
                f"# the prompt format it was unlearned with: {phrase}",
                f"prompt = PromptEncoder(tokenizer{argument}).encode_prompt({question})",
                "output = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=32, do_sample=False)",
                "print(tokenizer.decode(output[0, len(prompt):], skip_special_tokens=True))",
            ]
        )

    def card_data(self) -> ModelCardData:
        """The card's metadata."""
        return ModelCardData(
            base_model=self.hub_base_model,
            datasets=[self.forget_dataset] if self.forget_dataset else None,
            library_name=self.model_format.library_name,
            license=self.license,
            model_name=self.model_name,
            pipeline_tag="text-generation",
            tags=self.tags,
            eval_results=[*self.eval_results, *self.robustness_results] or None,
        )


def _forget_dataset(
    forget_data: str | None, state: Mapping[str, Any] | None
) -> tuple[str | None, str | None, str | None]:
    """`(hub_dataset, config, text)` of the forget data: as given (`"org/name[:config]"` or free text), else as
    `unlearning.json` records where the trained-on rows came from. Only a Hub dataset is named as one: the subset
    bundled with hf_unlearn and local files say what they are."""
    if forget_data:
        dataset, _, config = forget_data.partition(":")
        if "/" in dataset and is_hub_model_id(dataset):
            return dataset, config or None, None
        return None, None, forget_data
    recorded = (state or {}).get("forget_data")
    if isinstance(recorded, Mapping):
        source = DataSource.from_dict(recorded)
        if source.is_hub_dataset:
            return source.dataset, source.config, None
        return None, None, f"Trained on {source.describe()}."
    return None, None, None


def _evaluation_caveats(summary: Mapping[str, Any]) -> list[str]:
    """Why an evaluation summary is not a benchmark result (empty when it is one, see
    `hf_unlearn.evaluation.record`)."""
    record = summary.get(RECORD_KEY)
    if not isinstance(record, Mapping):
        return ["how it was made (data, settings) is not recorded"]
    if is_benchmark_result(record):
        return []
    caveats = [f"partial: {reason}" for reason in record.get("partial") or []]
    for split, data in (record.get("data") or {}).items():
        if isinstance(data, Mapping) and data.get("kind") != "hub":
            caveats.append(f"{split} questions: {DataSource.from_dict(data).describe()}")
    return caveats or ["not a complete evaluation on the benchmark's data"]


def _tags(
    state: Mapping[str, Any] | None,
    requests: list[dict[str, Any]],
    model_format: UnlearningMethod,
    extra: Iterable[str] | None,
) -> list[str]:
    tags = list(BASE_TAGS)
    if requests:
        tags.extend(str(request["forget_loss"]) for request in requests if request.get("forget_loss"))
    elif state and state.get("forget_loss"):
        tags.append(str(state["forget_loss"]))
    if state and state.get("rectification") == "gru":
        tags.append("gru")
    if model_format.tag:
        tags.append(model_format.tag)
    tags.extend(extra or [])
    return list(dict.fromkeys(tags))


def _belongs_to_weights(summary: Mapping[str, Any], folder: Path, path: Any) -> bool:
    """Whether an evaluation found beside the weights evaluated them: its recorded fingerprint must match. A summary
    without one (older, or from an in-memory evaluation) is kept with a warning."""
    recorded = summary.get(FINGERPRINT_KEY)
    if recorded is None:
        logger.warning(
            f"{path} records no fingerprint of the weights it evaluated: the card shows its results unverified."
        )
        return True
    if recorded != weights_fingerprint(folder):
        logger.warning(
            f"{path} evaluated other weights than those in {folder} (its fingerprint differs): the card leaves its "
            "results out. Evaluate the model again (`hf-unlearn eval`)."
        )
        return False
    return True


#: Where `hf-unlearn robustness` writes its results in a model folder (or directly in it).
ROBUSTNESS_LOCATIONS = ("robustness/robustness.json", "robustness.json")


def _robustness_scores(folder: Path) -> dict[str, float]:
    """The scores of the robustness results saved with the model, if any (an unreadable file is warned about)."""
    return _robustness_file(folder)[0]


def _robustness_file(folder: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """The scores of the robustness results saved with the model and the unlearned model's strongest attack and
    open-unlearning figure (see [`CardFacts.robustness_summary`]); empty when there are none (an unreadable file
    or one about other weights is warned about)."""
    for location in ROBUSTNESS_LOCATIONS:
        path = Path(folder) / location
        if path.is_file():
            try:
                results = read_json_file(path, what="robustness results")
                scores = results.get("scores", {})
                scores = {str(k): float(v) for k, v in scores.items() if v is not None}
                summary = _robustness_summary(results)
            except (ValueError, AttributeError, TypeError, KeyError) as err:
                logger.warning(f"{path} could not be read ({err}): the card leaves robustness out.")
                return {}, {}
            recorded = results.get(FINGERPRINT_KEY)
            if recorded is not None and recorded != weights_fingerprint(folder):
                logger.warning(f"{path} attacked other weights than those in {folder}: the card leaves it out.")
                return {}, {}
            return scores, summary
    return {}, {}


def _robustness_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    worst = (results.get("worst_case") or {}).get("unlearned")
    if worst:
        summary["worst_case"] = {
            "attack": str(worst["attack"]),
            "probability": float(worst["probability"]),
            "original": float(worst["original"]),
        }
    figure = results.get("open_unlearning") or {}
    unlearned = (figure.get("models") or {}).get("unlearned")
    if unlearned:
        summary["open_unlearning"] = {"source": str(figure.get("source", "")), **unlearned}
    return summary


def robustness_metric_name(key: str) -> str:
    """ "quantization_4bit" -> "Robustness to quantization (4-bit)"; "preset_<name>" -> "Robustness to <name>
    (preset)"; "open_unlearning_robustness" -> "open-unlearning robustness (harmonic mean of R and Q)"."""
    if key.startswith("preset_"):
        return f"Robustness to {key.removeprefix('preset_')} (preset)"
    if key.startswith("open_unlearning_"):
        part = key.removeprefix("open_unlearning_")
        detail = {"relearning": "R, relearning", "quantization": "Q, quantization"}
        return f"open-unlearning robustness ({detail.get(part, 'harmonic mean of R and Q')})"
    if key.startswith("quantization_"):
        return f"Robustness to quantization ({key.removeprefix('quantization_').replace('bit', '-bit')})"
    return f"Robustness to {key.replace('_', ' ')}"


def _robustness_results(scores: Mapping[str, float], dataset: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Unlearning robustness",
            dataset_type=dataset,
            dataset_name="Forget set under attack",
            metric_type=f"robustness_{key}",
            metric_name=robustness_metric_name(key),
            metric_value=float(f"{value:.6g}"),
        )
        for key, value in scores.items()
    ]


def gather_card_facts(
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
) -> CardFacts:
    """The facts of an unlearned model's card, from its folder and what is given; the arguments are those of
    [`~hf_unlearn.hub.build_model_card`]."""
    folder = Path(folder) if folder is not None else None
    if kind is not None:
        model_format = get_method(kind)
    else:
        model_format = method_of_folder(folder) if folder is not None else get_method("full")
    if state is None and folder is not None:
        state = load_unlearning_state(folder)
    state = dict(state) if state is not None else None
    config = model_format.read_config(folder) if folder is not None and model_format.per_request else None
    requests = _grun_requests(state, config) if model_format.per_request else []
    if base_model is None and folder is not None:
        base_model = model_format.read_base_model(folder)
    found_beside_weights = eval_results is None and folder is not None
    if found_beside_weights:
        eval_results = find_eval_summary(folder)
    summary = None
    if eval_results is not None:
        summary = dict(eval_results) if isinstance(eval_results, Mapping) else load_eval_summary(eval_results)
    if found_beside_weights and summary is not None and not _belongs_to_weights(summary, folder, eval_results):
        summary = None
    given_as_file = not found_beside_weights and eval_results is not None and not isinstance(eval_results, Mapping)
    if given_as_file and folder is not None and not _belongs_to_weights(summary, folder, eval_results):
        raise ValueError(
            f"{eval_results} evaluated other weights than those in {folder} (the fingerprint it records differs): "
            "its results would describe another model. Evaluate this model (`hf-unlearn eval --model "
            f"{folder}`) and pass that summary, or leave --eval-results out."
        )
    benchmark = summary_benchmark(summary) if summary else None
    forget_dataset, forget_config, forget_text = _forget_dataset(forget_data, state)
    eval_rows = eval_results_from_summary(summary) if summary else []
    caveats = _evaluation_caveats(summary) if summary else []

    robustness, robustness_summary = _robustness_file(folder) if folder is not None else ({}, {})
    name = model_name or (repo_id.split("/")[-1] if repo_id else folder.name if folder else "unlearned-model")
    evaluated_on_tofu = benchmark == "tofu" or forget_dataset == TOFU_DATASET_ID
    return CardFacts(
        model_name=name,
        repo_id=repo_id or name,
        model_format=model_format,
        base_model=base_model,
        state=state,
        grun_requests=requests,
        method_rows=method_rows(state, requests),
        forget_data=forget_text,
        forget_dataset=forget_dataset,
        forget_config=forget_config,
        summary=summary,
        benchmark=benchmark,
        eval_results=[] if caveats else eval_rows,
        eval_rows=eval_rows,
        eval_caveats=caveats,
        robustness_scores=robustness,
        robustness_summary=robustness_summary,
        robustness_results=_robustness_results(robustness, forget_dataset or TOFU_DATASET_ID),
        papers=papers_for(
            state,
            model_format.kind,
            evaluated_on_tofu=evaluated_on_tofu,
            grun_config=config,
            evaluated_on_muse=benchmark == "muse",
        ),
        tags=_tags(state, requests, model_format, tags),
        license=license,
    )
