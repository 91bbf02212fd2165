"""`hf-unlearn push`: publish a saved unlearned model to the Hub with a model card."""

from __future__ import annotations

import argparse
import sys

NAME = "push"
HELP = "Publish a saved unlearned model (adapter, GRUN modules or full weights) to the Hub with a model card."
DESCRIPTION = """\
Publish a folder written by UnlearningTrainer.save_model (a peft adapter, GRUN modules or full weights, in
safetensors, with unlearning.json) to a Hub model repo, in one commit, with a generated model card: base model,
unlearning method and hyperparameters, forget data, evaluation results (model-index) and the papers to cite.
The folder itself is never modified. Pickle files (*.bin, *.pt, ...) and checkpoints are not uploaded.

The token comes from --token, the HF_TOKEN environment variable or `hf auth login` (prefer the last two: a
token on the command line is visible to other users of the machine).

examples:
  hf-unlearn push npo-out me/llama-tofu-npo --forget-data locuslab/TOFU:forget10
  hf-unlearn push npo-out me/llama-tofu-npo --eval-results npo-out/eval/summary.json --private
  hf-unlearn push npo-out me/llama-tofu-npo --print-card     # show the card, push nothing
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="the saved model folder")
    parser.add_argument("repo_id", help="the Hub model repo, e.g. me/llama-tofu-npo (created if missing)")
    parser.add_argument("--token", default=None, help="a Hub token with write access (default: HF_TOKEN or login)")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo private")
    parser.add_argument("--revision", default=None, help="the branch to push to (default: main)")
    parser.add_argument("--commit-message", default=None, help="the commit summary")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument(
        "--base-model", default=None, help="the base model's Hub id (default: the adapter or GRUN config's)"
    )
    parser.add_argument(
        "--forget-data", default=None, help="the forget data: a Hub dataset id[:config] or a short description"
    )
    parser.add_argument(
        "--eval-results",
        default=None,
        metavar="FILE",
        help="the TOFU evaluator's summary.json (default: one found in the folder or a subfolder)",
    )
    parser.add_argument("--model-name", default=None, help="the name in the card (default: the repo name)")
    parser.add_argument("--license", default=None, help="a license id for the card's metadata, e.g. apache-2.0")
    parser.add_argument("--tag", dest="tags", action="append", default=None, help="an extra tag (repeatable)")
    parser.add_argument("--print-card", action="store_true", help="print the model card and push nothing")


def run(args: argparse.Namespace) -> int:
    from ..hub import HubError, build_model_card, push_unlearned

    card_args = dict(
        base_model=args.base_model,
        forget_data=args.forget_data,
        eval_results=args.eval_results,
        model_name=args.model_name,
        license=args.license,
        tags=args.tags,
    )
    if args.print_card:
        print(build_model_card(args.folder, repo_id=args.repo_id, **card_args))
        return 0
    try:
        commit = push_unlearned(
            args.folder,
            args.repo_id,
            token=args.token,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            create_pr=args.create_pr,
            **card_args,
        )
    except HubError as err:
        print(f"hf-unlearn push: error: {err}", file=sys.stderr)
        return 1
    print(f"Pushed {args.folder} to {commit.repo_url.repo_id}: {commit.pr_url or commit.commit_url}")
    return 0
