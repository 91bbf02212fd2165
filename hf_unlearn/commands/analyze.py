"""`hf-unlearn analyze`: the G-effect of an unlearning objective at a saved model.

    hf-unlearn analyze --model DIR --objective npo --forget-split forget01 --retain-split retain99 \\
        --data-dir bundled --num-samples 16 --output DIR/geffect_npo.json --plot DIR/geffect_npo.png

Prints e_f = <grad R_f, grad L> and e_r = <grad R_r, grad L> per parameter group (embeddings, each decoder layer,
head, other) and in total: a negative forget value means a step on the objective raises the forget risk
(removal works), a negative retain value means it raises the retain risk (retention harmed). Wang et al., ICLR
2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond".

The model is a saved causal LM, peft adapter or GRUN module set (the parameters its method trains span the space).
Losses that need a reference model (npo, tnpo, kl, ...) use the model before unlearning: --ref-model when given; for a
peft adapter or GRUN modules what the method declares, the same model with its adapters/edits switched off; for full
weights saved by hf_unlearn the base model its unlearning.json records (a model without unlearning.json is taken as
the model before unlearning: a frozen copy of itself). An unlearned model that records none needs --ref-model. The
reference used is printed and written into --output.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "analyze"
HELP = "G-effect of an unlearning objective at a saved model (per layer, forget and retain)."
DESCRIPTION = __doc__

DTYPES = ("float32", "float64", "bfloat16", "float16")
TOKEN_AVERAGES = ("batch", "answer")  # hf_unlearn.losses.base.TOKEN_AVERAGES, without importing torch here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="A saved model (or peft adapter) directory, or a Hub id.")
    parser.add_argument(
        "--objective", required=True, help="A registered forget loss: ga, npo, wga, tnpo, ... (see the list on error)."
    )
    parser.add_argument("--objective-kwargs", default=None, help='Hyperparameters as JSON, e.g. {"beta": 0.1}.')
    parser.add_argument("--gamma", type=float, default=1.0, help="Weight of the forget objective.")
    parser.add_argument("--retain-loss", default=None, help="Add a retain loss to the objective (e.g. nll, kl).")
    parser.add_argument("--retain-loss-kwargs", default=None, help="Its hyperparameters as JSON.")
    parser.add_argument("--alpha", type=float, default=1.0, help="Weight of the retain loss.")
    parser.add_argument(
        "--ref-model",
        default=None,
        help="Reference model for npo, tnpo, ...: the model before unlearning (see above).",
    )
    parser.add_argument("--forget-split", default="forget10", help="TOFU configuration of the forget data.")
    parser.add_argument("--retain-split", default="retain90", help="TOFU configuration of the retain data.")
    parser.add_argument(
        "--data-dir", default=None, help="TOFU JSON folder, 'bundled' (shipped subset), or omitted for the Hub."
    )
    parser.add_argument("--num-samples", type=int, default=16, help="Examples drawn from each split.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the draw.")
    parser.add_argument("--batch-size", type=int, default=None, help="Micro-batch size (default: all at once).")
    parser.add_argument("--max-length", type=int, default=None, help="Truncate examples to this many tokens.")
    parser.add_argument("--per-instance", action="store_true", help="Also compute the value of each example.")
    parser.add_argument(
        "--token-average",
        choices=TOKEN_AVERAGES,
        default="batch",
        help="Average over the answer tokens pooled (batch, the reference codes') or per answer first.",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="Parameter dtype of the model.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    parser.add_argument(
        "--output",
        default=None,
        help="Write the result as JSON here. In the model's folder, name it geffect*.json (and the --plot "
        "geffect*.png): overwriting the run (overwrite_output_dir) then moves them aside with the old weights.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --output file.")
    parser.add_argument("--plot", default=None, help="Write a per-group bar chart (PNG) here.")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from ..analysis import build_geffect_batch, compute_g_effect, plot_geffect_groups, resolve_objective
    from ..data import load_tofu
    from ..hub import load_unlearned
    from ..io import check_model_path, parse_json_object
    from ..methods import method_of_model

    objective_kwargs = parse_json_object("--objective-kwargs", args.objective_kwargs)
    objective = resolve_objective(args.objective, objective_kwargs)  # fail on a bad name before loading anything
    retain_kwargs = parse_json_object("--retain-loss-kwargs", args.retain_loss_kwargs)
    needs_reference = objective.needs_ref_model
    if args.retain_loss is not None:
        needs_reference |= resolve_objective(args.retain_loss, retain_kwargs, "retain").needs_ref_model
    if args.output and Path(args.output).exists() and not args.overwrite:
        raise ValueError(f"--output {args.output} exists. Pass --overwrite to replace it, or another --output.")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}.")
    for option, path in (("--model", args.model), ("--ref-model", args.ref_model)):
        check_model_path(path, option)
    hf_logging.set_verbosity_error()
    reference = choose_reference(args, needs_reference)  # refuses before anything is loaded
    print(f"reference: {reference['description']}")

    forget = load_tofu(args.forget_split, data_dir=args.data_dir)
    retain = load_tofu(args.retain_split, data_dir=args.data_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    model, tokenizer = load_unlearned(args.model, dtype=dtype)
    model = method_of_model(model).make_trainable(model.to(device))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ref_source = reference.get("model")
    ref_model = load_unlearned(ref_source, dtype=dtype)[0].to(device) if ref_source else None

    batch = build_geffect_batch(
        tokenizer,
        forget,
        retain,
        num_samples=args.num_samples,
        seed=args.seed,
        refusals=objective.needs_refusals,
        max_length=args.max_length,
    )
    result = compute_g_effect(
        model,
        args.objective,
        batch,
        objective_kwargs=objective_kwargs,
        gamma=args.gamma,
        retain_objective=args.retain_loss,
        retain_objective_kwargs=retain_kwargs or None,
        alpha=args.alpha,
        ref_model=ref_model,
        per_instance=args.per_instance,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        token_average=args.token_average,
    )
    print(result.format_table())
    print(f"forget risk {result.forget_risk:.4f}, retain risk {result.retain_risk:.4f} (mean-NLL of the answers)")
    if args.output:
        from ..analysis import write_json_atomic

        data = result.to_dict()
        data.update(
            model=str(args.model),
            forget_split=args.forget_split,
            retain_split=args.retain_split,
            data_dir=args.data_dir,
            seed=args.seed,
            reference={key: value for key, value in reference.items() if key != "description"},
        )
        write_json_atomic(args.output, data)
        print(f"Wrote {args.output}")
    if args.plot:
        plot_geffect_groups(result, args.plot)
        print(f"Wrote {args.plot}")
    return 0


def choose_reference(args: argparse.Namespace, needs_reference: bool) -> dict[str, Any]:
    """The reference model of the analysis: `kind` (`"model"`, `"adapters_off"`, `"frozen_copy"` or `"none"`),
    `model` and `source` for a model loaded as the reference, and a `description` to print. An unlearned model (it
    has `unlearning.json`) whose model before unlearning is not recorded, or not found, is refused: the reference
    would otherwise be the unlearned model itself, and the G-effect that of another objective."""
    from ..constants import UNLEARNING_STATE_FILE
    from ..hub import resolve_model_folder
    from ..io import looks_like_local_path
    from ..methods import REFERENCE_ADAPTERS_OFF, method_of_folder
    from ..unlearning_state import UnlearningState

    if not needs_reference:
        return {"kind": "none", "description": f"none (--objective {args.objective} reads no reference model)"}
    if args.ref_model:
        return {"kind": "model", "model": args.ref_model, "source": "--ref-model", "description": args.ref_model}
    folder = resolve_model_folder(args.model)
    if method_of_folder(folder).reference == REFERENCE_ADAPTERS_OFF:
        return {"kind": "adapters_off", "description": "the same model with its adapters/edits switched off"}
    state = UnlearningState.read(folder)
    if state is None:
        return {
            "kind": "frozen_copy",
            "description": f"a frozen copy of {args.model} itself (it has no {UNLEARNING_STATE_FILE}: it is taken as "
            "the model before unlearning)",
        }
    base = state.base_model
    if not base or (looks_like_local_path(base) and not Path(base).expanduser().is_dir()):
        recorded = (
            f"records the model before unlearning as {base}, which is not a folder here"
            if base
            else ("records no model before unlearning (base_model)")
        )
        raise ValueError(
            f"--objective {args.objective} reads the model before unlearning, and {args.model} is an unlearned model "
            f"whose {UNLEARNING_STATE_FILE} {recorded}. Pass --ref-model MODEL (the model it was unlearned from); the "
            "unlearned model itself is not its reference."
        )
    return {
        "kind": "model",
        "model": base,
        "source": UNLEARNING_STATE_FILE,
        "description": f"{base} (the model before unlearning, from {Path(folder) / UNLEARNING_STATE_FILE})",
    }
