"""The plan of a comparison without training (`hf-unlearn compare --dry-run`): every model, data set and loss name
resolved, the runs, their step caps and evaluations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import CompareConfig
from .worker import forget_size, steps_budget

__all__ = ["format_plan", "resolve"]


def _model(name: str, what: str) -> str:
    """Where a model comes from; a local folder must hold a config (raises otherwise)."""
    path = Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{what} {name} is a folder without config.json: it is not a saved model.")
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        layers = config.get("num_hidden_layers")
        return f"{what}: local folder {path.resolve()} ({config.get('model_type', '?')}, {layers} layers)"
    if name.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"{what} {name} does not exist.")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise ValueError(f"{what} {name!r} is neither a local folder nor a Hub model id: {err}") from err
    return f"{what}: Hub model {name} (downloaded at the first run)"


def resolve(config: CompareConfig) -> list[str]:
    """Check every name the comparison uses, without loading a model or training; returns what each resolves to.
    Raises with what to fix when a model, a file, a loss or a method kind is unknown."""
    from ..losses import list_losses
    from ..losses.registry import get_loss
    from ..methods.registry import get_method

    lines = [_model(config.target_model, "target model")]
    if config.retain_model:
        lines.append(_model(config.retain_model, "retain model"))
    elif config.retain_logs:
        if not Path(config.retain_logs).is_dir():
            raise FileNotFoundError(f"retain_logs {config.retain_logs} is not a folder of TOFU logs.")
        lines.append(f"retain model: its TOFU logs in {config.retain_logs}")
    else:
        lines.append("retain model: none (forget quality is not computed)")
    data = config.data
    if data.source == "muse" and data.data_dir is not None:
        _check_muse_dir(config)
    if data.source == "files":
        for key in ("forget", "retain", "forget_eval", "retain_eval"):
            path = getattr(data, key)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"data.{key}: {path} does not exist.")
    elif data.source == "tofu" and data.data_dir not in (None, "bundled"):
        if not (Path(data.data_dir) / f"{data.forget_split}.json").is_file():
            raise FileNotFoundError(
                f"data.data_dir {data.data_dir} holds no {data.forget_split}.json (TOFU's layout)."
            )
    if config.attacks is not None and config.attacks.presets:
        from ..evaluation.robustness.presets import get_preset

        for name in config.attacks.presets:
            preset = get_preset(name)  # an unknown name raises, listing the presets
            lines.append(f"attack preset {name}: {preset.attack} ({preset.paper})")
    size = forget_size(config)
    items = "forget texts" if data.source == "muse" else "forget questions"
    lines.append(f"data: {data.describe()} ({size if size is not None else 'an unknown number of'} {items})")
    for name, spec in config.methods.items():
        try:
            get_loss(spec.forget_loss, "forget")
            if spec.retain_loss != "none":
                get_loss(spec.retain_loss, "retain")
            get_method(spec.kind)
        except (KeyError, ValueError) as err:
            message = err.args[0] if err.args else str(err)
            raise ValueError(
                f"methods.{name}: {message} (forget losses: {', '.join(list_losses('forget'))})"
            ) from None
        lines.append(f"method {name}: {spec.display_label()} ({spec.kind})")
    return lines


def _check_muse_dir(config: CompareConfig) -> None:
    """A MUSE folder must hold the raw training splits and KnowMem / VerbMem's (PrivLeak's are optional)."""
    folder = Path(config.data.data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.data_dir {folder} is not a folder in MUSE's layout (<config>/<split>.json).")
    forget, retain = config.data.muse_splits()
    needed = [f"raw/{forget}", f"raw/{retain}", "knowmem/forget_qa", "knowmem/forget_qa_icl", "knowmem/retain_qa",
              "knowmem/retain_qa_icl", "verbmem/forget"]  # fmt: skip
    missing = [n for n in needed if not any((folder / f"{n}{ext}").is_file() for ext in (".json", ".jsonl"))]
    if missing:
        raise FileNotFoundError(
            f"data.data_dir {folder} lacks the MUSE split(s) {missing} (each <config>/<split>.json or .jsonl)."
        )


def format_plan(config: CompareConfig) -> str:
    """The dry run's text: what resolves to what, then the runs with their step caps and evaluations."""
    lines = ["Resolved:"] + [f"  {line}" for line in resolve(config)]
    budget = steps_budget(config, forget_size(config))
    first, others = config.seeds[0], config.seeds[1:]
    lines += [
        "",
        "Targets: " + ", ".join(f"{n} = {t.target} (tolerance {t.tolerance:g})" for n, t in config.targets.items()),
    ]
    rows: list[dict[str, Any]] = []
    total_runs = total_steps = total_evals = 0
    for name, spec in config.methods.items():
        grid = len(spec.learning_rates)
        # other seeds run the chosen rates: at most one per target, at most the grid
        other_runs = len(others) * min(grid, len(config.targets))
        cap = None if budget is None else budget * spec.steps_factor
        interval = config.eval_every * spec.steps_factor
        evals = None if cap is None else cap // interval + 1
        runs = grid + other_runs
        rows.append({"method": name, "label": spec.display_label(), "first": grid, "others": other_runs,
                     "cap": cap, "evals": evals})  # fmt: skip
        total_runs += runs
        if cap is not None:
            total_steps += runs * cap
            total_evals += runs * evals
    lines += [
        "",
        f"| method | runs (seed {first}) | runs (other seeds, at most) | step cap | cheap evaluations per run (max) |",
    ]
    lines.append("|---|---:|---:|---:|---:|")
    for r in rows:
        cap = "?" if r["cap"] is None else r["cap"]
        evals = "?" if r["evals"] is None else r["evals"]
        lines.append(f"| {r['label']} | {r['first']} | {r['others']} | {cap} | {evals} |")
    lines += [
        "",
        f"At most {total_runs} runs, {total_steps} optimizer steps and {total_evals} cheap evaluations "
        f"(runs stop at their last target; refinement adds a replay per run up to its last target).",
    ]
    if config.claims:
        labels = config.labels
        lines += ["", "Claims: " + "; ".join(c.describe(labels) for c in config.claims)]
    if config.attacks is not None:
        seeds = config.attacks.seeds or config.seeds[:1]
        lines += ["", f"Attacks at {config.attacks.target} on seeds {seeds}: " + ", ".join(config.attacks.names())]
    return "\n".join(lines)
