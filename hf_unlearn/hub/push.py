"""Publish a saved unlearned model (peft adapter, GRUN modules or full weights) to the Hub with its model card."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, get_token
from transformers.utils import logging

from ..constants import EVAL_SUMMARY_FILE, PICKLE_SUFFIXES, TRAINING_STATE_FILES
from ..io import FINGERPRINT_KEY, read_json_file, weights_fingerprint
from ..methods import UnlearningMethod, method_of_folder
from .card import build_model_card
from .errors import HubAuthenticationError, hub_errors, redact
from .folder import load_unlearning_state

__all__ = ["files_to_push", "push_unlearned"]

logger = logging.get_logger(__name__)

# Training by-products that are not part of the model.
_SKIPPED_PATTERNS = ("checkpoint-*", "runs", "__pycache__", "wandb", ".*", "*.tmp")


def files_to_push(folder: str | Path) -> list[str]:
    """The files of a saved model to publish, as POSIX paths relative to `folder`, sorted.

    Left out: `README.md` (replaced by the generated card), pickle files (`*.bin`, `*.pt`, ...: optimizer states,
    `training_args.bin`, non-safetensors weights), checkpoints, what only resuming needs (`trainer_state.json`,
    GRU's state), logs of experiment trackers, hidden files, and evaluation folders whose summary records other
    weights than the folder's (an earlier run's results).
    """
    folder = Path(folder)
    stale = _stale_evaluations(folder)
    selected = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(fnmatch.fnmatch(part, p) for part in relative.parts for p in _SKIPPED_PATTERNS):
            continue
        if any(parent in stale for parent in relative.parents):
            continue
        if relative.as_posix() in ("README.md", *TRAINING_STATE_FILES) or path.suffix.lower() in PICKLE_SUFFIXES:
            continue
        selected.append(relative.as_posix())
    return selected


def _stale_evaluations(folder: Path) -> set[Path]:
    """Subfolders (relative) whose evaluation summary records a fingerprint other than the folder's weights."""
    current = None
    stale = set()
    for summary in folder.glob(f"*/{EVAL_SUMMARY_FILE}"):
        try:
            recorded = read_json_file(summary, what="an evaluation summary").get(FINGERPRINT_KEY)
        except (ValueError, AttributeError):
            continue
        if recorded is None:
            continue
        current = current if current is not None else weights_fingerprint(folder)
        if recorded != current:
            logger.warning(f"{summary.parent} evaluated other weights than {folder}'s: it is not published.")
            stale.add(summary.parent.relative_to(folder))
    return stale


def _check_weights(folder: Path, model_format: UnlearningMethod, files: list[str]) -> None:
    """Refuse to publish a model whose weights are not in safetensors."""
    if any(name.endswith(".safetensors") for name in files):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    found = f" It has only pickle files ({', '.join(pickles)}), which are never published." if pickles else ""
    raise ValueError(
        f"{folder} holds no safetensors weights to publish.{found} Re-save the model: {model_format.resave}."
    )


def push_unlearned(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    forget_data: str | None = None,
    eval_results: str | Path | Mapping[str, Any] | None = None,
    model_name: str | None = None,
    license: str | None = None,
    tags: Iterable[str] | None = None,
    state: Mapping[str, Any] | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
) -> CommitInfo:
    """Publish a saved unlearned model to the Hub in one commit, with a generated model card as `README.md`.

    ```python
    from hf_unlearn.hub import push_unlearned
    push_unlearned("npo-out", "me/llama-tofu-npo", forget_data="locuslab/TOFU:forget10")
    ```

    The folder is what `UnlearningTrainer.save_model` wrote: a peft adapter, GRUN modules or full weights in
    safetensors, with `unlearning.json`. The card (see [`build_model_card`]) is built in memory: nothing is written
    into the folder, which the push never changes, whether it succeeds or fails.

    Args:
        folder: the saved model.
        repo_id: the model repo (`"name"` pushes to the token's namespace); created if missing.
        token: a Hub token with write access (default: `HF_TOKEN` or the token saved by `hf auth login`).
        private: create the repo private (no effect if it exists).
        revision: the branch to commit to (default `main`; it must exist).
        commit_message: the commit's summary.
        base_model, forget_data, eval_results, model_name, license, tags, state: for the card, see
            [`build_model_card`]. `eval_results` defaults to a TOFU `summary.json` found in the folder.
        create_pr: open a pull request instead of committing to the branch.
        endpoint: the Hub URL (default: `HF_ENDPOINT` or https://huggingface.co).

    Returns:
        The [`~huggingface_hub.CommitInfo`] of the commit (`.commit_url`, `.oid`, `.repo_url.repo_id`).

    Raises:
        FileNotFoundError / ValueError: the folder holds no model, or no safetensors weights.
        HubAuthenticationError: no token, or the Hub refused it.
        HubServerError / HubNetworkError: the Hub answered with an error, or could not be reached.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Model folder {folder} does not exist.")
    model_format = method_of_folder(folder)
    files = files_to_push(folder)
    _check_weights(folder, model_format, files)
    if state is None:
        state = load_unlearning_state(folder)
    if state is None:
        logger.warning(
            f"{folder} has no unlearning.json (written by UnlearningTrainer.save_model): the model card will not "
            "describe the unlearning method."
        )
    card_args = dict(
        state=state,
        kind=model_format.kind,
        base_model=base_model,
        forget_data=forget_data,
        eval_results=eval_results,
        model_name=model_name,
        license=license,
        tags=tags,
    )
    card = build_model_card(folder, repo_id=repo_id, **card_args)  # built before any request: fails early

    token = token or get_token()
    api = HfApi(endpoint=endpoint, token=token, library_name="hf_unlearn")
    if not token:
        raise HubAuthenticationError(
            f"Could not push {folder} to {repo_id}: no Hugging Face token. Log in with `hf auth login`, set the "
            "HF_TOKEN environment variable, or pass a token with write access (`token=...`, `--token`)."
        )
    if commit_message is None:
        method = (state or {}).get("forget_loss")
        commit_message = f"Upload unlearned model{f' ({method})' if method else ''} with hf_unlearn"

    logger.info(f"Pushing {len(files)} files and a model card from {folder} to {repo_id} on {api.endpoint}.")
    with hub_errors(f"push {folder} to {repo_id}", api.endpoint, token):
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if repo_url.repo_id != repo_id:  # "name" resolved to "namespace/name": the usage snippet needs the full id
            card = build_model_card(folder, repo_id=repo_url.repo_id, **card_args)
        card_text = redact(str(card), token)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card_text.encode("utf-8")))
        commit = api.create_commit(
            repo_url.repo_id,
            operations,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )
    logger.info(f"Pushed {repo_url.repo_id}: {commit.commit_url}")
    return commit
