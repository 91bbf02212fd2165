"""The requests of a sequence: which forget rows each one trains on and which questions it is evaluated on
([`plan_requests`], no data loaded), their rows ([`load_requests`]), and the dry run's text ([`format_plan`]).

Every forget question evaluated in a sequence has a KEY, the same in every log of the sequence: its row index in the
forget split's evaluation set (TOFU: `forget05_perturbed`, whose rows are those of `forget05`; files: the row index
in the concatenation of the request files). The retain model's logs are read by the same keys. MUSE: a request is
a sustainability fold, its keys `<config>/<split>/<i>` name the fold's evaluated texts (its first `max_questions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compare.worker import forget_size, steps_budget
from .config import SequentialConfig, muse_fold_split

__all__ = ["Request", "format_plan", "load_requests", "plan_requests"]


@dataclass
class Request:
    """One deletion request: its number (1-based), the forget rows it trains on and the keys of the questions it
    is evaluated on (its first `max_questions`). `forget` and `evaluation` hold the rows once loaded. MUSE: `split`
    is the fold's `<config>/<split>` (`raw/forget`, `sust/forget_2`, ...); `rows` and `keys` are None until the
    fold is loaded when it is on the Hub."""

    number: int
    rows: list[int] | None
    keys: list[str] | None
    file: str | None = None
    eval_file: str | None = None
    split: str | None = None
    forget: Any = None
    evaluation: Any = None

    @property
    def size(self) -> int | None:
        return None if self.rows is None else len(self.rows)


def _file_rows(path: str) -> int:
    from ..commands.train import load_data_file

    suffix = Path(path).suffix.lower()
    if suffix in (".json", ".jsonl") and Path(path).is_file():
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    return len(load_data_file(path))


def _muse_fold_rows(config: SequentialConfig, fold: int) -> int | None:
    """The number of texts of a MUSE fold in a local folder (None on the Hub: a plan loads nothing)."""
    if config.data.data_dir is None:
        return None
    from ..evaluation.muse import load_muse

    return len(load_muse(*muse_fold_split(fold, config.data.muse_splits()[0]), config.data.data_dir))


def plan_muse_requests(config: SequentialConfig, sizes: dict[int, int] | None = None) -> list[Request]:
    """A MUSE sequence's requests: one per sustainability fold (`sizes`: fold -> texts, when loaded)."""
    cap = config.data.max_questions
    spec = config.requests
    folds = spec.muse_folds[: spec.limit] if spec.limit else spec.muse_folds
    requests = []
    for number, fold in enumerate(folds, start=1):
        split = "/".join(muse_fold_split(fold, config.data.muse_splits()[0]))
        n = sizes[fold] if sizes is not None else _muse_fold_rows(config, fold)
        keys = None if n is None else [f"{split}/{i}" for i in range(n if cap is None else min(cap, n))]
        requests.append(Request(number, None if n is None else list(range(n)), keys, split=split))
    if len(requests) < 2:
        raise ValueError(f"The requests ({spec.describe()}) make {len(requests)} request; a sequence needs 2 or more.")
    return requests


def plan_requests(config: SequentialConfig) -> list[Request]:
    """The requests (rows and evaluation keys), from the data's sizes only."""
    cap = config.data.max_questions
    spec = config.requests
    if spec.muse_folds is not None:
        return plan_muse_requests(config)
    if spec.files is not None:
        requests, offset = [], 0
        for number, path in enumerate(spec.files[: spec.limit] if spec.limit else spec.files, start=1):
            if not Path(path).is_file():
                raise FileNotFoundError(f"requests.files: {path} does not exist.")
            eval_file = spec.eval_files[number - 1] if spec.eval_files else path
            n_eval = _file_rows(eval_file)
            n_train = _file_rows(path) if eval_file != path else n_eval
            shown = n_eval if cap is None else min(cap, n_eval)
            keys = [str(offset + i) for i in range(shown)]
            requests.append(Request(number, list(range(n_train)), keys, file=path, eval_file=eval_file))
            offset += n_eval
        return requests
    total = forget_size(config.compare_config())
    if total is None:
        total = _file_rows(config.data.forget)
    requests = []
    for number, rows in enumerate(spec.chunks(total), start=1):
        shown = rows if cap is None else rows[:cap]
        requests.append(Request(number, rows, [str(i) for i in shown]))
    if len(requests) < 2:
        raise ValueError(f"The requests ({spec.describe()}) cut the {total} forget rows into {len(requests)} request.")
    return requests


def load_requests(config: SequentialConfig) -> tuple[list[Request], Any]:
    """The requests with their training and evaluation rows, and the retain training rows."""
    from ..commands.train import load_data_file
    from ..compare.worker import training_data

    if config.requests.muse_folds is not None:
        return load_muse_requests(config)
    requests = plan_requests(config)
    data = config.data
    forget, retain = training_data(config.compare_config())
    if config.requests.files is not None:
        for request in requests:
            request.forget = load_data_file(request.file)
            evaluation = load_data_file(request.eval_file) if request.eval_file != request.file else request.forget
            request.evaluation = evaluation.select(range(len(request.keys)))
        return requests, retain
    if data.source == "files":
        evaluation = load_data_file(data.forget_eval) if data.forget_eval else forget
    else:
        from ..data.tofu import load_tofu

        evaluation = load_tofu(f"{data.forget_split}_perturbed", data.data_dir)
    if len(evaluation) != len(forget):
        raise ValueError(
            f"The forget evaluation rows ({len(evaluation)}) do not match the forget training rows ({len(forget)}) "
            "one for one; a sequence cuts both into the same requests."
        )
    for request in requests:
        request.forget = forget.select(request.rows)
        request.evaluation = evaluation.select([int(k) for k in request.keys])
    return requests, retain


def load_muse_requests(config: SequentialConfig) -> tuple[list[Request], Any]:
    """A MUSE sequence's folds with their texts (trained on whole; the first `max_questions` are evaluated) and
    MUSE's raw retain text (trained on as a MUSE comparison does)."""
    from ..compare.worker import muse_text

    cc = config.compare_config()
    first = config.data.muse_splits()[0]
    spec = config.requests
    folds = spec.muse_folds[: spec.limit] if spec.limit else spec.muse_folds
    texts = {}
    for fold in folds:
        muse_config, split = muse_fold_split(fold, first)
        texts[fold] = muse_text(cc, split, muse_config)
    requests = plan_muse_requests(config, {fold: len(rows) for fold, rows in texts.items()})
    for request, fold in zip(requests, folds):
        request.forget = texts[fold]
        request.evaluation = texts[fold].select(range(len(request.keys)))
    return requests, muse_text(cc, config.data.muse_splits()[1])


def _describe(request: Request) -> str:
    if request.split is None:
        return f"#{request.number} {request.size} rows / {len(request.keys)} evaluated"
    if request.keys is None:
        return f"#{request.number} {request.split}"
    return f"#{request.number} {request.split} {request.size} texts / {len(request.keys)} evaluated"


def request_steps(config: SequentialConfig, method: str, request: Request) -> int | None:
    """A request's step cap: the budget (`max_steps`, or `max_epochs` passes over its rows) times `steps_factor`."""
    budget = steps_budget(config.compare_config(), request.size)
    return None if budget is None else budget * config.methods[method].steps_factor


def format_plan(config: SequentialConfig) -> str:
    """The dry run's text: every name resolved, the requests, and each method's steps and evaluations."""
    from ..compare.plan import resolve

    lines = ["Resolved:"] + [f"  {line}" for line in resolve(config.compare_config())]
    requests = plan_requests(config)
    sizes = [r.size for r in requests]
    muse = config.requests.muse_folds is not None
    lines += [
        "",
        f"Requests: {len(requests)} ({config.requests.describe()}): "
        + ", ".join(_describe(r) for r in requests)
        + (" (texts counted when the run loads them from the Hub)" if None in sizes else ""),
        (
            "Targets of each request (on MUSE's standard forget set: KnowMem / VerbMem of raw/forget): "
            if muse
            else "Targets of each request (on its own questions): "
        )
        + ", ".join(config.targets.values())
        + ("" if config.stop_at_targets else " (recorded along the way; every request trains its budget)"),
        f"Seeds: {config.seeds} (each method runs its whole sequence once per seed).",
        f"Reference of NPO-like losses from request 2 on: the {config.reference} model (GRUN: the base model).",
        "",
        "| method | kind | carried over as | learning rate | step cap per request | cheap evaluations (max) |",
        "|---|---|---|---:|---|---:|",
    ]
    carried = {"full": "its weights", "peft": "a LoRA per request, merged", "grun": "a gated module per request"}
    total_steps = total_evals = 0
    for name, spec in config.methods.items():
        caps = [request_steps(config, name, r) for r in requests]
        interval = config.eval_every * spec.steps_factor
        evals = sum(c // interval + 1 for c in caps if c is not None)
        total_steps += sum(c for c in caps if c is not None)
        total_evals += evals
        cap_text = str(caps[0]) if len(set(caps)) == 1 else ", ".join(str(c) for c in caps)
        evals_text = str(evals)
        if None in caps:  # max_epochs over folds not counted (the Hub)
            cap_text, evals_text = f"{config.max_epochs:g} epochs x {spec.steps_factor}", f"every {interval} steps"
        lines.append(
            f"| {spec.display_label()} | {spec.kind} | {carried.get(spec.kind, 'its model')} | "
            f"{spec.learning_rates[0]:g} | {cap_text} | {evals_text} |"
        )
    n_seeds = len(config.seeds)
    full = len(config.methods) * len(requests) * n_seeds + 1 + bool(config.retain_model)
    if None in sizes:  # epochs over folds on the Hub: the steps are known once the folds are loaded
        budget = f"{config.max_epochs:g} epochs of each request (its texts not counted yet)"
    else:
        budget = (
            f"{total_steps * n_seeds} optimizer steps and {total_evals * n_seeds} cheap evaluations over "
            f"{len(requests)} requests ({sum(s or 0 for s in sizes)} forget rows)"
        )
    lines += [
        "",
        f"{'At most ' if config.stop_at_targets else ''}{budget} and {n_seeds} seed(s); {full} full evaluations "
        "(the target, the retain model, each method after each request on each seed). "
        + ("Requests stop at their targets." if config.stop_at_targets else "Every request trains its whole budget."),
    ]
    if muse:
        metrics = "KnowMem forget and retain, VerbMem forget" + (", PrivLeak" if config.privleak else "")
        lines.append(
            f"After each request: MUSE's {metrics}, and the mean per-token NLL of every fold's evaluated texts; "
            f"utility {config.utility}. Cumulative forget quality is TOFU's: not computed on MUSE."
        )
    if config.claims:
        from .verdicts import check_claims

        check_claims(config.claims, len(requests))
        lines += ["", "Claims (judged over the seeds; testable where both methods met every target up to request k):"]
        lines += [f"  {claim.describe(config.labels)}" for claim in config.claims]
    return "\n".join(lines)
