"""The Hub side of `UnlearningTrainer`: its model card, `push_to_hub`, and pushes while it trains (the Hub's own
code, which never imports the trainer, is `hf_unlearn.hub`)."""

from __future__ import annotations

import inspect
import os
from typing import Any

from transformers.utils import logging

__all__ = ["HubTrainerMixin"]

logger = logging.get_logger(__name__)


class HubTrainerMixin:
    """Replaces the Hub methods of transformers' `Trainer` with hf_unlearn's (see `hf_unlearn.hub`): the model card
    describes the unlearning (`unlearning_state()` of the host trainer), pushes hold safetensors only, and pushes
    during training run in the background through `push_unlearned`. Mixed into `UnlearningTrainer`, before
    trl's trainer; the host calls `_push_checkpoint` once a checkpoint is complete (see its `_save_checkpoint`).
    """

    def _card_kwargs(self, model_name: str | None, card_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments of `hf_unlearn.hub.build_model_card` from the trainer's state and the Trainer-style kwargs."""
        ignored = [key for key in ("language", "tasks", "dataset_tags", "dataset_args") if card_kwargs.pop(key, None)]
        if ignored:
            logger.info(f"hf_unlearn's model card does not use {ignored}.")
        aliases = {"forget_data": ("dataset_name", "dataset"), "base_model": ("finetuned_from",)}
        for key, others in aliases.items():
            values = [card_kwargs.pop(name, None) for name in (key, *others)]
            card_kwargs[key] = next((value for value in values if value), None)
        if card_kwargs["base_model"] is None:
            config = getattr(self.accelerator.unwrap_model(self.model), "config", None)
            card_kwargs["base_model"] = getattr(config, "_name_or_path", None) or None
        return dict(state=self.unlearning_state().to_dict(), model_name=model_name, **card_kwargs)

    def create_model_card(
        self, model_name: str | None = None, *, output_dir: str | None = None, **card_kwargs: Any
    ) -> None:
        """Write hf_unlearn's model card (method, hyperparameters, papers: `hf_unlearn.hub.build_model_card`) as
        `README.md` in `output_dir` (default: the run's output directory), atomically. Accepts `tags`, `license`,
        `forget_data` (or trl's `dataset_name`), `base_model` (or `finetuned_from`) and `eval_results`."""
        if not self.is_world_process_zero():
            return
        from ..hub.card import build_model_card, write_model_card
        from ..methods import method_of_state

        output_dir = output_dir or self.args.output_dir
        card_args = self._card_kwargs(model_name or os.path.basename(os.path.normpath(output_dir)), card_kwargs)
        kind = method_of_state(card_args["state"]).kind
        card = build_model_card(kind=kind, repo_id=self.args.hub_model_id, **card_args)
        write_model_card(card, output_dir)

    # The Trainer calls this inside `_save_checkpoint`, before the GRU and loss states are written: the push starts
    # at the end of our `_save_checkpoint` instead (`_push_checkpoint`).
    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        self._checkpoint_to_push = checkpoint_folder

    def _background_pusher(self):
        from ..hub.training import BackgroundPusher

        if getattr(self, "_hub_pusher", None) is None:
            self._hub_pusher = BackgroundPusher(self.args.output_dir)
        return self._hub_pusher

    def _track_push(self, future) -> None:
        """Let the Trainer wait for `future` at the end of training (`_finish_current_push`)."""
        from transformers.utils.hub import PushInProgress

        in_progress = getattr(self, "push_in_progress", None)
        if in_progress is None or in_progress.is_done():
            self.push_in_progress = PushInProgress([future])
        else:
            in_progress.jobs.append(future)

    def _push_checkpoint(self, checkpoint: str) -> None:
        """`push_to_hub=True` with a `hub_strategy` other than "end": publish the checkpoint's model (as
        `hf_unlearn.hub.push_unlearned` does: safetensors only, our model card) in the background; "checkpoint" and
        "all_checkpoints" also upload the whole checkpoint folder (to `last-checkpoint/` or `checkpoint-N/`) for
        resuming. Training never waits for a push, except at its end, and a failed push is only logged. While a
        push runs, the newest save waits and replaces any older one waiting (`hub_always_push=True`: all go up)."""
        from transformers.trainer_utils import HubStrategy

        strategy = self.args.hub_strategy
        if not self.is_world_process_zero() or strategy == HubStrategy.END:
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        checkpoint_path_in_repo = {
            HubStrategy.CHECKPOINT: "last-checkpoint",
            HubStrategy.ALL_CHECKPOINTS: os.path.basename(checkpoint),
        }.get(strategy)
        future = self._background_pusher().push_checkpoint(
            checkpoint,
            self.hub_model_id,
            checkpoint_path_in_repo=checkpoint_path_in_repo,
            token=self.args.hub_token,
            revision=self.args.hub_revision,
            commit_message=f"Training in progress, step {self.state.global_step}",
            card_kwargs=self._card_kwargs(None, {}),
            supersede=not self.args.hub_always_push,
        )
        self._track_push(future)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the Hub repo for `push_to_hub=True` (the Trainer does it when it is built), with a clear
        `hf_unlearn.hub.HubError` when there is no token, the Hub refuses it or cannot be reached."""
        from huggingface_hub import constants, get_token

        from ..hub.errors import hub_errors

        secret = (token if token is not None else self.args.hub_token) or get_token()
        repo = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        with hub_errors(f"create the Hub repo {repo}", constants.ENDPOINT, secret):
            # transformers < 5.2x takes no `private` (it reads args.hub_private_repo itself)
            if "private" in inspect.signature(super().init_hf_repo).parameters:
                super().init_hf_repo(token=token, private=private)
            else:
                super().init_hf_repo(token=token)

    def push_to_hub(
        self,
        commit_message: str | None = None,
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **card_kwargs: Any,
    ) -> Any:
        """Save the model and publish the output directory to `args.hub_model_id` (default: the output directory's
        name) with hf_unlearn's model card, in one commit (`hf_unlearn.hub.push_unlearned`: safetensors only, no
        pickles or checkpoints, a clear `HubError` on failure). `card_kwargs` as in [`create_model_card`], plus
        `model_name`. Returns the `CommitInfo` (None on processes other than the main one); with `blocking=False`,
        a `concurrent.futures.Future` of it: the files are copied now and upload in the background
        after any checkpoint push still running; `future.result()` raises the `HubError` of a failed push."""
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        repo_id = getattr(self, "hub_model_id", None) or self.args.hub_model_id
        repo_id = repo_id or os.path.basename(os.path.abspath(self.args.output_dir))
        push_kwargs = dict(
            token=token if token is not None else self.args.hub_token,
            private=private if private is not None else self.args.hub_private_repo,
            revision=revision if revision is not None else self.args.hub_revision,
            commit_message=commit_message,
            **self._card_kwargs(card_kwargs.pop("model_name", None), card_kwargs),
        )
        if not blocking:
            future = self._background_pusher().push_model(self.args.output_dir, repo_id, **push_kwargs)
            self._track_push(future)
            return future
        from ..hub.push import push_unlearned

        self._finish_current_push()  # checkpoint pushes first: the final model must be the newest commit
        commit = push_unlearned(self.args.output_dir, repo_id, **push_kwargs)
        self.hub_model_id = commit.repo_url.repo_id
        return commit
