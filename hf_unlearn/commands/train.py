"""`hf-unlearn train`: unlearn with a YAML recipe and command-line overrides, in trl's style.

    hf-unlearn train --config examples/recipes/tofu_npo_gru.yaml --learning_rate 2e-5 --output_dir out
    accelerate launch --config_file examples/accelerate/multi_gpu.yaml -m hf_unlearn.cli train --config RECIPE

Every option of `UnlearningConfig` (hence of trl's `SFTConfig` and `TrainingArguments`), of trl's `ModelConfig`
(`model_name_or_path`, `dtype`, `use_peft`, `lora_r`, ...) and of `UnlearnScriptArguments` below may appear in the
recipe or on the command line; the command line wins. Unknown keys and flags are errors that name them and the
closest option.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = "train"
HELP = "Unlearn a model with a YAML recipe (--config) and flag overrides; run with --help for every option."
DESCRIPTION = __doc__


@dataclass
class UnlearnScriptArguments:
    """Where the data comes from, user loss files, and what to do after training."""

    dataset_name: str = field(
        default="locuslab/TOFU",
        metadata={
            "help": "TOFU-layout data: 'locuslab/TOFU' (the Hub), 'bundled' (the offline subset shipped with "
            "hf_unlearn) or a local directory holding <config>.json files in the Hub's layout."
        },
    )
    dataset_config: str | None = field(
        default=None,
        metadata={
            "help": "Read another data set with datasets.load_dataset(dataset_name, dataset_config, split=...): "
            "forget_split and retain_split are then its splits, e.g. muse-bench/MUSE-News, config 'raw', splits "
            "'forget' and 'retain1' (raw text: a 'text' column). Without it, dataset_name holds TOFU's layout."
        },
    )
    forget_split: str = field(default="forget10", metadata={"help": "Configuration to forget, e.g. forget10."})
    retain_split: str | None = field(
        default=None, metadata={"help": "Configuration to retain (default: the complement, e.g. retain90)."}
    )
    retain_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Retain data from another data set than the forget data (with retain_dataset_config and "
            "retain_split), e.g. wikitext for WMDP's RMU. Default: dataset_name."
        },
    )
    retain_dataset_config: str | None = field(
        default=None, metadata={"help": "The configuration of retain_dataset_name (e.g. wikitext-2-raw-v1)."}
    )
    forget_data_file: str | None = field(
        default=None, metadata={"help": "A local JSON/JSONL/CSV/Parquet file to forget instead of a TOFU split."}
    )
    retain_data_file: str | None = field(
        default=None, metadata={"help": "A local JSON/JSONL/CSV/Parquet file to retain instead of a TOFU split."}
    )
    loss_modules: list[str] = field(
        default_factory=list,
        metadata={"help": "Python files or module names imported before training, to register your own losses."},
    )
    grun: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Train GRUN instead of the model: a GRUNConfig as a mapping (recipe) or JSON string, e.g. "
            '\'{"layers": [10, 12, 15], "rank": 4}\'. The forget loss and its kwargs come from forget_loss / '
            "forget_loss_kwargs. The grun_* options below set single fields."
        },
    )
    grun_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Train GRUN instead of the model: the decoder layers to edit (e.g. 10 12 15). The forget loss "
            "(ga, npo, idk or rmu) and its kwargs come from forget_loss / forget_loss_kwargs."
        },
    )
    # GRUN's other settings; None leaves GRUNConfig's default (its defaults live there only).
    grun_rank: int | None = field(default=None, metadata={"help": "GRUN: rank of each edit (default 4)."})
    grun_gate: str | None = field(default=None, metadata={"help": "GRUN: 'linear' (default) or 'mlp' gate."})
    grun_gate_weight: float | None = field(
        default=None, metadata={"help": "GRUN: weight of the gate BCE (default: the paper's 10)."}
    )
    grun_retain_weight: float | None = field(
        default=None, metadata={"help": "GRUN: weight of the retain term (default: the paper's, 2 for GA, 1 else)."}
    )
    grun_forget_weight: float | None = field(
        default=None, metadata={"help": "GRUN: weight of the forget term (default: the reference's, 100 for NPO)."}
    )
    evaluate: bool = field(
        default=False,
        metadata={
            "help": "Run the TOFU evaluation on the unlearned model: the forget rows trained on (a forget_data_file "
            "needs TOFU's paraphrased_answer and perturbed_answer columns, checked before training), else "
            "<forget_split>_perturbed, and the model-utility splits of dataset_name."
        },
    )
    eval_max_questions: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many questions per split (quick checks)."}
    )
    eval_max_new_tokens: int = field(default=200, metadata={"help": "Generation length for ROUGE (TOFU: 200)."})
    retain_logs: str | None = field(
        default=None, metadata={"help": "A retain model's TOFU logs directory, for forget quality."}
    )


def dataclass_types() -> tuple[type, ...]:
    from trl import ModelConfig

    from ..config import UnlearningConfig

    return (UnlearnScriptArguments, UnlearningConfig, ModelConfig)


def make_parser(prog: str = "hf-unlearn train"):
    from trl import TrlParser

    return TrlParser(dataclass_types(), prog=prog, description=DESCRIPTION)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The options are parsed by trl's parser in `main` (recipe + overrides); here they are only passed through.
    parser.add_argument("options", nargs=argparse.REMAINDER, help="--config RECIPE.yaml and/or --option value pairs")


def import_loss_modules(specs: list[str]) -> None:
    """Import user files (`path/to/losses.py`) or modules (`my_pkg.losses`) so their `@register_loss` runs."""
    for spec in specs:
        path = Path(spec)
        if spec.endswith(".py"):
            if not path.is_file():
                raise FileNotFoundError(f"loss_modules: {spec} does not exist.")
            module_spec = importlib.util.spec_from_file_location(f"hf_unlearn_user_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module
            module_spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(spec)
            except ImportError as err:
                raise ValueError(
                    f"loss_modules: cannot import {spec!r} ({err}). Give a .py path or a module name."
                ) from err


def load_data_file(path: str):
    """A local data file as a `datasets.Dataset` (format from the extension)."""
    from datasets import load_dataset

    builders = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    suffix = Path(path).suffix.lower()
    if suffix not in builders:
        raise ValueError(f"{path}: unsupported data file type {suffix!r}; use one of {sorted(builders)}.")
    if not Path(path).is_file():
        raise FileNotFoundError(f"Data file {path} does not exist.")
    if suffix != ".parquet":
        _check_utf8(path)
    from ..data.source import DataSource, with_source

    try:
        data = load_dataset(builders[suffix], data_files=path, split="train")
        return with_source(data, DataSource("local", path=str(Path(path).resolve())))
    except Exception as err:  # noqa: BLE001  (datasets wraps the parser's error in DatasetGenerationError)
        cause = err.__cause__ or err
        raise ValueError(
            f"{path} could not be read as {builders[suffix].upper()} ({type(cause).__name__}: {cause}). Check that it "
            "is complete, UTF-8 encoded and one record per line (JSON Lines) or a valid table."
        ) from err


def _check_utf8(path: str, chunk_size: int = 1 << 20) -> None:
    """Text data files must be UTF-8: the JSON/CSV readers would fail only when a row is first read, deep inside."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                line += chunk[: err.start].count(b"\n")
                raise ValueError(
                    f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} on line {line}). Convert it to "
                    "UTF-8, e.g. `iconv -f latin1 -t utf-8`."
                ) from err
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text: it ends inside a character. Convert it to UTF-8.") from err


def load_forget_and_retain(script: UnlearnScriptArguments):
    from ..data.tofu import TOFU_RETAIN_OF, load_tofu

    def load(name: str, config: str | None, split: str):
        if config is None:  # TOFU's layout
            return load_tofu(split, data_dir=name)
        from datasets import load_dataset

        from ..data.source import DataSource, with_source

        where = f"{config}/{split}" if config else split
        if Path(name).exists():
            source = DataSource("local", path=str(Path(name).resolve()), config=where)
        else:
            source = DataSource("hub", dataset=name, config=where)
        return with_source(load_dataset(name, config, split=split), source)

    if script.forget_data_file:
        forget = load_data_file(script.forget_data_file)
    else:
        forget = load(script.dataset_name, script.dataset_config, script.forget_split)
    if script.retain_data_file:
        return forget, load_data_file(script.retain_data_file)
    retain_name = script.retain_dataset_name or script.dataset_name
    retain_config = script.retain_dataset_config if script.retain_dataset_name else script.dataset_config
    retain_split = script.retain_split
    if retain_split is None and retain_config is None:
        retain_split = TOFU_RETAIN_OF.get(script.forget_split)
    if retain_split is None:
        raise ValueError(
            f"No retain split is known for forget_split={script.forget_split!r}; set retain_split or retain_data_file."
        )
    return forget, load(retain_name, retain_config, retain_split)


def load_model_and_tokenizer(model_args) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required (in the recipe or as --model_name_or_path).")
    dtype = model_args.dtype
    if dtype not in (None, "auto"):
        dtype = getattr(torch, dtype)
    kwargs = {"revision": model_args.model_revision, "dtype": dtype, "trust_remote_code": False}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    return model, tokenizer


def train(script: UnlearnScriptArguments, training_args, model_args) -> dict[str, Any]:
    """Run one unlearning job; returns what it wrote (paths and, with `evaluate`, the TOFU summary)."""
    from trl import get_peft_config

    from ..io import check_model_path

    check_model_path(model_args.model_name_or_path)  # before any data is read or the Hub is asked
    from ..trainer import create_trainer

    if script.evaluate and script.dataset_config is not None:
        raise ValueError(
            "evaluate runs the TOFU evaluation, which needs TOFU's layout; with dataset_config (another data set) "
            "evaluate the saved model yourself, e.g. with hf_unlearn.evaluation.MUSEEvaluator for MUSE."
        )
    import_loss_modules(script.loss_modules)
    if training_args.stop_at_targets:
        target_eval_defaults(script, training_args)
    forget, retain = load_forget_and_retain(script)
    eval_data = evaluation_data(script, training_args, forget) if script.evaluate else None  # fails before training
    model, tokenizer = load_model_and_tokenizer(model_args)
    data = {"forget_dataset": forget, "retain_dataset": retain, "processing_class": tokenizer}
    trainer = create_trainer(
        model,
        training_args,
        grun_config=grun_config_of(script, training_args),
        peft_config=get_peft_config(model_args),
        **data,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    result: dict[str, Any] = {"output_dir": training_args.output_dir}
    if training_args.stop_at_targets:  # the step where each target was first met (None: not met)
        from ..evaluation.callback import StopAtTargetCallback

        for stopper in trainer.callback_handler.callbacks:
            if isinstance(stopper, StopAtTargetCallback):
                result["targets"] = {str(t): stopper.met.get(t.name) for t in stopper.targets}
    if script.evaluate:
        result["evaluation"] = evaluate_trained(trainer, script, eval_data)
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return result


def target_eval_defaults(script: UnlearnScriptArguments, training_args) -> None:
    """`stop_at_targets` evaluates on the run's data: for TOFU targets the forget split, dataset_name, retain_logs,
    eval_max_questions and eval_max_new_tokens fill what `target_eval_kwargs` leaves unset; for MUSE targets
    dataset_name (a folder in MUSE's layout or a Hub id) and eval_max_questions (as `max_items`)."""
    from ..evaluation.targets import benchmark_of

    kwargs = dict(training_args.target_eval_kwargs or {})
    if benchmark_of(training_args.stop_at_targets) == "muse":
        # MUSE targets: the MUSE evaluator reads the run's MUSE data set (a local folder or a Hub id)
        if script.dataset_name is not None and not {"data_dir", "dataset", "datasets"} & set(kwargs):
            local = Path(script.dataset_name).exists()
            kwargs["data_dir" if local else "dataset"] = script.dataset_name
        if script.eval_max_questions is not None:
            kwargs.setdefault("max_items", script.eval_max_questions)
        training_args.target_eval_kwargs = kwargs
        return
    if script.dataset_config is not None and "data_dir" not in kwargs:
        raise ValueError(
            "stop_at_targets evaluates TOFU metrics; with dataset_config (another data set) give the TOFU data to "
            "evaluate in target_eval_kwargs (data_dir, forget_split), or leave stop_at_targets unset."
        )
    defaults = {
        "forget_split": script.forget_split,
        "data_dir": script.dataset_name,
        "retain_logs": script.retain_logs,
        "max_questions": script.eval_max_questions,
        "max_new_tokens": script.eval_max_new_tokens,
    }
    for key, value in defaults.items():
        if value is not None:
            kwargs.setdefault(key, value)
    training_args.target_eval_kwargs = kwargs


def grun_config_of(script: UnlearnScriptArguments, training_args) -> Any | None:
    """The `GRUNConfig` the options ask for (`grun` or `grun_layers` set), or None: the `grun` mapping, with the
    `grun_*` options that are set on top, and the run's forget loss and kwargs; the rest GRUNConfig's defaults."""
    from ..io import parse_json_object

    fields = parse_json_object("grun", script.grun)
    shortcuts = {
        "layers": script.grun_layers,
        "rank": script.grun_rank,
        "gate": script.grun_gate,
        "gate_weight": script.grun_gate_weight,
        "retain_weight": script.grun_retain_weight,
        "forget_weight": script.grun_forget_weight,
    }
    fields.update({key: value for key, value in shortcuts.items() if value is not None})
    if not fields:
        return None
    for key in ("forget_loss", "forget_loss_kwargs"):
        if key in fields:
            raise ValueError(f"Set GRUN's {key} with the run's own `{key}` option, not inside `grun`.")
    if not fields.get("layers"):
        raise ValueError("GRUN needs the decoder layers to edit: `grun: {layers: [...]}` or --grun_layers.")
    from ..grun import GRUNConfig

    fields.update(forget_loss=training_args.forget_loss, forget_loss_kwargs=training_args.forget_loss_kwargs)
    return GRUNConfig.from_dict(fields)


#: The columns TOFU's truth ratio (hence forget quality) reads on the forget split, beside the question and answer.
TRUTH_RATIO_COLUMNS = ("paraphrased_answer", "perturbed_answer")


def evaluation_data(script: UnlearnScriptArguments, training_args, forget) -> dict[str, Any]:
    """What `evaluate` scores, split -> rows, loaded before training so that a missing split or column fails at once:
    the forget split is the rows trained on when they come from `forget_data_file` (which must then hold TOFU's
    paraphrased and perturbed answers), else `<forget_split>_perturbed`; the model-utility splits (retain_perturbed,
    real_authors_perturbed, world_facts_perturbed) come from `dataset_name`."""
    from ..data.tofu import load_tofu
    from ..evaluation.logs import TOFU_SPLITS
    from ..evaluation.tofu import tofu_split_config

    data: dict[str, Any] = {}
    if script.forget_data_file:
        data["forget"] = _forget_rows_to_evaluate(script.forget_data_file, forget, training_args)
    for split in TOFU_SPLITS:
        if split in data:
            continue
        config = tofu_split_config(split, script.forget_split)
        try:
            data[split] = load_tofu(config, data_dir=script.dataset_name)
        except Exception as err:  # noqa: BLE001  (the Hub offline, a folder without the file: all said the same way)
            raise ValueError(
                f"evaluate reads TOFU's {config} ({split} split) from dataset_name={script.dataset_name}, which "
                f"failed ({type(err).__name__}: {err}). Offline, set dataset_name to 'bundled' or a TOFU folder, or "
                "evaluate: false.".replace("\n", " ")
            ) from err
    return data


def _forget_rows_to_evaluate(path: str, forget, training_args):
    """The trained-on forget rows in the evaluator's columns, or a ValueError that names what they lack."""
    question, answer = training_args.question_key, training_args.answer_key
    wanted = (question, answer, *TRUTH_RATIO_COLUMNS)
    missing = [column for column in wanted if column not in forget.column_names]
    if missing:
        raise ValueError(
            f"evaluate: the forget data file {path} has no {', '.join(map(repr, missing))} column(s). TOFU's "
            "evaluation scores the forget rows' answers and, for the truth ratio (hence forget quality), a "
            "'paraphrased_answer' and a list of 'perturbed_answer's per row, as in TOFU's forgetXX_perturbed files. "
            "Add them, or set evaluate: false and evaluate the saved model with "
            "hf_unlearn.evaluation.TOFUEvaluator(datasets={'forget': rows}, splits=[...])."
        )
    rows = forget.select_columns(list(wanted))
    for i, row in enumerate(rows):
        empty = [column for column in wanted if row[column] is None or row[column] in ([], "")]
        if empty:
            raise ValueError(f"evaluate: row {i} of the forget data file {path} has no value for {empty}.")
    return rows.rename_columns({old: new for old, new in ((question, "question"), (answer, "answer")) if old != new})


def evaluate_trained(trainer, script: UnlearnScriptArguments, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TOFU evaluation of the trained model on `data` (see [`evaluation_data`]; None: load it now)."""
    from ..evaluation.tofu import TOFUEvaluator
    from ..io import FINGERPRINT_KEY, record_weights_fingerprint

    eval_dir = Path(trainer.args.output_dir) / "eval"
    summary = TOFUEvaluator(
        trainer.accelerator.unwrap_model(trainer.model),
        trainer.processing_class,
        # the summary's forget split: the file's name when the forget rows come from one
        forget_split=Path(script.forget_data_file).name if script.forget_data_file else script.forget_split,
        data_dir=script.dataset_name,
        datasets=data,
        max_questions=script.eval_max_questions,
        max_new_tokens=script.eval_max_new_tokens,
    ).evaluate(output_dir=eval_dir if trainer.args.should_save else None, retain_logs=script.retain_logs)
    if trainer.args.should_save:  # which weights these results belong to (cards and push check it)
        summary[FINGERPRINT_KEY] = record_weights_fingerprint(eval_dir, trainer.args.output_dir)
    return summary


def check_option_names(parser, argv: list[str]) -> None:
    """Refuse recipe keys and `--flags` that name no option, each with the closest option's name (difflib), before
    anything is parsed: trl's parser would report them only after building the configs, in its own terms."""
    import difflib

    import yaml

    unknown: list[tuple[str, list[str]]] = []
    if "--config" in argv[:-1]:
        config = argv[argv.index("--config") + 1]
        try:
            with open(config, encoding="utf-8") as f:
                recipe = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f"{config} is not valid YAML: {err}".replace("\n", " ")) from err
        if not isinstance(recipe, dict):
            raise ValueError(f"{config} must hold a YAML mapping of option: value, got {type(recipe).__name__}.")
        keys = {action.dest for action in parser._actions} | {"env"}  # trl's parser reads `env` itself
        unknown += [(repr(key), difflib.get_close_matches(str(key), keys, n=1)) for key in recipe if key not in keys]
    flags = [flag for flag in parser._option_string_actions if flag.startswith("--")]
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in parser._option_string_actions and flag != "--config":
            unknown.append((repr(flag), difflib.get_close_matches(flag, flags, n=1)))
    if unknown:
        listed = "; ".join(
            f"unknown option {name}" + (f" (did you mean {match[0]!r}?)" if match else "") for name, match in unknown
        )
        raise ValueError(f"{listed}. `hf-unlearn train --help` lists the options (recipe keys are the same names).")


def main(argv: list[str]) -> int:
    import yaml

    parser = make_parser()
    check_option_names(parser, argv)
    try:
        script, training_args, model_args = parser.parse_args_and_config(args=argv)
    except yaml.YAMLError as err:
        config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else "the recipe"
        raise ValueError(f"{config} is not valid YAML: {err}".replace("\n", " ")) from err
    result = train(script, training_args, model_args)
    if training_args.should_save:
        print(json.dumps(result, indent=2, default=str))
    return 0


def run(args: argparse.Namespace) -> int:
    return main(args.options)
