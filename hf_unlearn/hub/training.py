"""Hub pushes while a trainer runs: in the background, from a frozen copy of the files, never raising into training."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi, get_token
from transformers.utils import logging

from .errors import hub_errors
from .push import files_to_push, push_unlearned

__all__ = ["BackgroundPusher", "stage_files"]

logger = logging.get_logger(__name__)

#: Prefix of the staging folders: hidden, so that `files_to_push` never publishes one.
STAGING_PREFIX = ".hub-push-"


def stage_files(source: str | Path, names: Iterable[str], destination: str | Path, link: bool = True) -> Path:
    """Hard-link (`link=True`; copy where links fail) or copy `names`, paths relative to `source`, into
    `destination`.

    A link costs no space and keeps the content if the original is deleted (checkpoint rotation), but not if it is
    rewritten in place, as `save_pretrained` does: a folder the trainer saves into again must be copied.
    """
    source, destination = Path(source), Path(destination)
    for name in names:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            try:
                os.link(source / name, target)
                continue
            except OSError:
                pass
        shutil.copy2(source / name, target)
    return destination


def _all_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


class BackgroundPusher:
    """Runs a trainer's Hub pushes one after another on one background thread.

    Each push stages its files first (see [`stage_files`]: checkpoints are linked, the output folder copied) in a
    hidden folder inside `staging_root` (the output directory: same file system, so links work), which is removed
    once the push ends. A failed push is logged as a
    warning with the [`~hf_unlearn.hub.HubError`] message (never the token) and stays in its future: training goes
    on and everything saved locally is kept.
    """

    def __init__(self, staging_root: str | Path):
        self.staging_root = Path(staging_root)
        self._executor: ThreadPoolExecutor | None = None
        self._newest: Future | None = None

    def _submit(self, description: str, staging: Path, job: Callable[[], Any], supersede: bool = False) -> Future:
        def run() -> Any:
            try:
                return job()
            finally:
                shutil.rmtree(staging, ignore_errors=True)

        def report(future: Future) -> None:
            if future.cancelled():
                shutil.rmtree(staging, ignore_errors=True)
                logger.info(f"{description}: skipped, a newer push replaced it before it started.")
            elif future.exception() is not None:
                logger.warning(f"{description} failed: {future.exception()}")

        if supersede and self._newest is not None:
            self._newest.cancel()  # only succeeds while it waits behind a running push
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-unlearn-hub-push")
        future = self._executor.submit(run)
        future.add_done_callback(report)
        self._newest = future
        return future

    def _staging_folder(self) -> Path:
        self.staging_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.staging_root))

    def push_model(self, folder: str | Path, repo_id: str, **push_kwargs: Any) -> Future:
        """[`push_unlearned`] of what `folder` holds now (copied first: the trainer may save into it again), in the
        background; the future's result is its `CommitInfo`."""
        staging = self._staging_folder()
        try:
            stage_files(folder, files_to_push(folder), staging / "model", link=False)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self._submit(
            f"Pushing {folder} to {repo_id}",
            staging,
            lambda: push_unlearned(staging / "model", repo_id, **push_kwargs),
        )

    def push_checkpoint(
        self,
        checkpoint: str | Path,
        repo_id: str,
        *,
        checkpoint_path_in_repo: str | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str,
        card_kwargs: Mapping[str, Any],
        supersede: bool = True,
    ) -> Future:
        """Publish a checkpoint's model as [`push_unlearned`] does (safetensors, card) at the repo's root; with
        `checkpoint_path_in_repo`, also upload the whole checkpoint folder there (optimizer, scheduler and RNG
        state included, which transformers saves as torch pickles: what `resume_from_checkpoint` needs).

        With `supersede`, a push still waiting behind the running one is dropped for this newer one: at most one
        push runs and one waits, and the newest checkpoint always goes up."""
        checkpoint = Path(checkpoint)
        staging = self._staging_folder()
        try:
            stage_files(checkpoint, files_to_push(checkpoint), staging / "model")
            if checkpoint_path_in_repo is not None:
                stage_files(checkpoint, _all_files(checkpoint), staging / "checkpoint")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

        def job() -> CommitInfo:
            commit = push_unlearned(
                staging / "model",
                repo_id,
                token=token,
                revision=revision,
                commit_message=commit_message,
                **card_kwargs,
            )
            if checkpoint_path_in_repo is not None:
                commit = upload_checkpoint_folder(
                    staging / "checkpoint",
                    commit.repo_url.repo_id,
                    checkpoint_path_in_repo,
                    token=token,
                    revision=revision,
                    commit_message=f"{commit_message}, checkpoint",
                )
            return commit

        return self._submit(f"Pushing {checkpoint.name} to {repo_id}", staging, job, supersede=supersede)


def upload_checkpoint_folder(
    folder: Path,
    repo_id: str,
    path_in_repo: str,
    *,
    token: str | None,
    revision: str | None,
    commit_message: str,
) -> CommitInfo:
    """Upload a whole checkpoint folder under `path_in_repo` (a [`HubError`] on failure, without the token)."""
    token = token or get_token()
    api = HfApi(token=token, library_name="hf_unlearn")
    with hub_errors(f"upload the checkpoint to {repo_id}/{path_in_repo}", api.endpoint, token):
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            path_in_repo=path_in_repo,
            commit_message=commit_message,
            revision=revision,
        )
