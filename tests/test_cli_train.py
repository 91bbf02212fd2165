"""`hf-unlearn train`: YAML recipes with flag overrides, user losses, accelerate launch, the shipped recipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from launch import REPO, run_accelerate

from hf_unlearn import list_losses
from hf_unlearn.cli import main
from hf_unlearn.commands.train import make_parser

RECIPES = sorted((REPO / "examples" / "recipes").glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((REPO / "examples" / "accelerate").glob("*.yaml"))


def cpu_recipe(path: Path, model_dir: Path, **overrides) -> Path:
    """A recipe small enough for the CPU: the bundled TOFU subset and the tiny test model."""
    recipe = {
        "model_name_or_path": str(model_dir),
        "dataset_name": "bundled",
        "forget_split": "forget01",
        "forget_loss": "npo",
        "forget_loss_kwargs": {"beta": 0.1},
        "retain_loss": "nll",
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-4,
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        **overrides,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_parse_into_a_valid_run(recipe, tmp_path):
    script, args, model_args = make_parser().parse_args_and_config(
        args=["--config", str(recipe), "--output_dir", str(tmp_path), "--bf16", "false"]
    )
    assert model_args.model_name_or_path, "a recipe names its model"
    assert args.forget_loss in list_losses("forget") and args.retain_loss in list_losses("retain")
    if recipe.stem.startswith("muse_"):  # MUSE's raw corpora
        assert (script.dataset_config, script.forget_split, script.retain_split) == ("raw", "forget", "retain1")
    elif recipe.stem.startswith("wmdp_"):  # a WMDP forget corpus, wikitext to retain
        assert script.dataset_config.endswith("forget-corpus") and script.retain_dataset_name == "wikitext"
        assert re.search(args.trainable_parameters, "model.layers.6.mlp.down_proj.weight")
    else:
        assert script.forget_split == "forget10" and script.retain_split == "retain90"
    assert (args.rectification == "gru") == recipe.stem.endswith("_gru")
    from hf_unlearn.commands.train import grun_config_of

    if recipe.stem.endswith("_grun"):
        pytest.importorskip("pyreft")
    grun = grun_config_of(script, args) if recipe.stem.endswith("_grun") else None
    assert (script.grun is not None) == recipe.stem.endswith("_grun")
    if grun is not None:  # the recipe's mapping is a GRUNConfig, whose defaults fill the rest
        assert grun.layers == [10, 12, 15] and grun.forget_loss == "npo" and grun.forget_weight == 100.0
    assert args.output_dir == str(tmp_path), "the command line overrides the recipe"


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    raw = yaml.safe_load(config.read_text())
    assert loaded.distributed_type.value == raw["distributed_type"]
    assert loaded.num_processes == raw["num_processes"]


def test_train_from_a_recipe_with_overrides(target_model_dir, tmp_path, capsys):
    recipe = cpu_recipe(tmp_path / "recipe.yaml", target_model_dir)
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--output_dir", str(out), "--learning_rate", "1e-3"]) == 0
    state = json.loads((out / "unlearning.json").read_text())
    assert state["forget_loss"] == "npo" and state["forget_loss_kwargs"] == {"beta": 0.1}
    assert state["learning_rate"] == pytest.approx(1e-3), "the command line wins over the recipe"
    assert (out / "model.safetensors").is_file()
    printed = capsys.readouterr().out  # the trainer's log lines, then the result as indented JSON
    assert json.loads(printed[printed.rindex("{\n") :])["output_dir"] == str(out)


def test_train_with_a_user_loss_file(target_model_dir, tmp_path):
    loss_file = tmp_path / "my_losses.py"
    loss_file.write_text(
        "from hf_unlearn import ForgetLoss, register_loss\n\n"
        "@register_loss('halved_ga_cli_test')\n"
        "class HalvedGA(ForgetLoss):\n"
        "    def __call__(self, ctx):\n"
        "        return -0.5 * ctx.mean_nll('forget').mean()\n"
    )
    recipe = cpu_recipe(tmp_path / "recipe.yaml", target_model_dir, forget_loss="halved_ga_cli_test")
    recipe_with_modules = yaml.safe_load(recipe.read_text()) | {"loss_modules": [str(loss_file)]}
    recipe.write_text(yaml.safe_dump({k: v for k, v in recipe_with_modules.items() if k != "forget_loss_kwargs"}))
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "unlearning.json").read_text())["forget_loss"] == "halved_ga_cli_test"


def test_training_failures_end_with_their_message_and_exit_1(target_model_dir, tmp_path, capsys, monkeypatch):
    loss_file = tmp_path / "exploding.py"
    loss_file.write_text(
        "from hf_unlearn import ForgetLoss, register_loss\n\n"
        "@register_loss('nan_at_step_2_cli_test')\n"
        "class NanAtStep2(ForgetLoss):\n"
        "    calls = 0\n"
        "    def __call__(self, ctx):\n"
        "        NanAtStep2.calls += 1\n"
        "        loss = -ctx.mean_nll('forget').mean()\n"
        "        return loss * float('nan') if NanAtStep2.calls > 1 else loss\n"
    )
    recipe = cpu_recipe(tmp_path / "nan.yaml", target_model_dir, forget_loss="nan_at_step_2_cli_test")
    recipe.write_text(recipe.read_text() + f"loss_modules: [{loss_file}]\nforget_loss_kwargs: {{}}\n")
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path / "nan")]) == 1
    err = capsys.readouterr().err
    assert "hf-unlearn train: error: Training stopped before optimizer step 2" in err and "Traceback" not in err

    # No Hub here: creating the repo for push_to_hub fails with a HubError, before any training.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    recipe = cpu_recipe(tmp_path / "push.yaml", target_model_dir, push_to_hub=True, hub_model_id="me/ga")
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path / "push")]) == 1
    err = capsys.readouterr().err
    assert "hf-unlearn train: error: Could not create the Hub repo me/ga" in err and "Traceback" not in err


def test_train_on_raw_text_splits_of_another_dataset(target_model_dir, tmp_path, tofu, capsys):
    """MUSE's layout (`load_dataset(name, "raw", split=...)`, a `text` column), as a local dataset folder."""
    data = tmp_path / "muse_like"
    (data / "raw").mkdir(parents=True)
    for split, source in (("forget", tofu["forget01"]), ("retain1", tofu["retain99"])):
        rows = [json.dumps({"text": answer}) for answer in source["answer"][:16]]
        (data / "raw" / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    (data / "README.md").write_text(
        "---\nconfigs:\n- config_name: raw\n  data_files:\n  - split: forget\n    path: raw/forget.jsonl\n"
        "  - split: retain1\n    path: raw/retain1.jsonl\n---\n"
    )

    def raw_recipe(name: str, **overrides) -> Path:
        settings = dict(dataset_name=str(data), dataset_config="raw", forget_split="forget")
        return cpu_recipe(tmp_path / name, target_model_dir, **(settings | overrides))

    recipe = raw_recipe("recipe.yaml", retain_split="retain1", max_length=24)  # chunks the longer answers
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()

    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path / "x"), "--evaluate", "true"]) == 2
    assert "MUSEEvaluator" in capsys.readouterr().err
    # Retain data from another data set (WMDP's recipe: wikitext), here TOFU's bundled layout.
    other = raw_recipe("other.yaml", retain_dataset_name="bundled", retain_split="retain99")
    assert main(["train", "--config", str(other), "--output_dir", str(tmp_path / "z")]) == 0
    no_retain = raw_recipe("no_retain.yaml")
    assert main(["train", "--config", str(no_retain), "--output_dir", str(tmp_path / "y")]) == 2
    assert "set retain_split" in capsys.readouterr().err


def test_train_grun_from_a_recipe_and_evaluate(target_model_dir, tmp_path):
    pytest.importorskip("pyreft")
    recipe = cpu_recipe(
        tmp_path / "recipe.yaml",
        target_model_dir,
        grun={"layers": [0, 1], "rank": 2},
        learning_rate=5e-2,
        evaluate=True,
        eval_max_questions=4,
        eval_max_new_tokens=8,
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--output_dir", str(out)]) == 0
    grun_config = json.loads((out / "grun_config.json").read_text())
    (request,) = grun_config["requests"]
    assert request["layers"] == [0, 1] and request["rank"] == 2 and request["forget_loss"] == "npo"
    assert not (out / "model.safetensors").exists(), "GRUN saves its modules, not the frozen model"
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["num_questions"]["forget"] == 4


def test_unknown_options_are_named(target_model_dir, tmp_path, capsys):
    recipe = cpu_recipe(tmp_path / "recipe.yaml", target_model_dir)
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path), "--learnin_rate", "1"]) == 2
    assert "--learnin_rate" in capsys.readouterr().err
    bad = cpu_recipe(tmp_path / "bad.yaml", target_model_dir, forget_los="ga")
    assert main(["train", "--config", str(bad), "--output_dir", str(tmp_path)]) == 2
    assert "forget_los" in capsys.readouterr().err


def test_a_missing_loss_file_is_a_clear_error(target_model_dir, tmp_path, capsys):
    recipe = cpu_recipe(tmp_path / "recipe.yaml", target_model_dir, loss_modules=["nowhere/losses.py"])
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path)]) == 2
    assert "nowhere/losses.py does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.distributed
def test_accelerate_launches_the_cli_on_two_cpu_processes(target_model_dir, tmp_path):
    recipe = cpu_recipe(tmp_path / "recipe.yaml", target_model_dir, max_steps=2, logging_steps=1)
    out = tmp_path / "run"
    result = run_accelerate("hf_unlearn.cli", "train", "--config", recipe, "--output_dir", out, module=True)
    assert (out / "model.safetensors").is_file()
    # Only the main process prints the result, and the trainer logged both losses.
    assert result.stdout.count('"output_dir"') == 1
    assert "loss/forget" in result.stdout + result.stderr


def test_the_grun_option_is_a_grun_config(tmp_path):
    pytest.importorskip("pyreft")
    from hf_unlearn.commands.train import grun_config_of, make_parser

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\nforget_loss: ga\n")
    argv = ["--config", str(recipe), "--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false"]
    script, args, _ = make_parser().parse_args_and_config(args=[*argv, "--grun", '{"layers": [0, 1], "gate": "mlp"}'])
    config = grun_config_of(script, args)
    assert config.layers == [0, 1] and config.gate == "mlp" and config.forget_loss == "ga"
    assert config.retain_weight == 2.0, "GRUNConfig's default for GA, not a copy of it in the CLI"
    script, args, _ = make_parser().parse_args_and_config(args=[*argv, "--grun_layers", "1", "--grun_rank", "8"])
    assert grun_config_of(script, args).rank == 8
    script, args, _ = make_parser().parse_args_and_config(args=[*argv, "--grun", '{"forget_loss": "npo"}'])
    with pytest.raises(ValueError, match="with the run's own `forget_loss`"):
        grun_config_of(script, args)
    script, args, _ = make_parser().parse_args_and_config(args=argv)
    assert grun_config_of(script, args) is None


@pytest.mark.parametrize("off", ["none", "null", "None"])
def test_rectification_none_on_the_command_line_switches_off_the_recipes_gru(tmp_path, off):
    recipe = REPO / "examples" / "recipes" / "tofu_npo_gru.yaml"
    argv = ["--config", str(recipe), "--output_dir", str(tmp_path), "--bf16", "false"]
    assert make_parser().parse_args_and_config(args=argv)[1].rectification == "gru"
    _, args, _ = make_parser().parse_args_and_config(args=[*argv, "--rectification", off])
    assert args.rectification is None


def test_a_model_path_that_does_not_exist_is_one_line_at_once(target_model_dir, tmp_path, capsys, monkeypatch):
    import hf_unlearn.commands.train as train_command

    def no_data(script):
        raise AssertionError("the missing model must be reported before any data is loaded")

    monkeypatch.setattr(train_command, "load_forget_and_retain", no_data)
    recipe = cpu_recipe(tmp_path / "recipe.yaml", target_model_dir)
    for missing in ("./runs/nowhere", str(tmp_path / "nowhere"), "runs/tofu/nowhere", "~/hf_unlearn_nowhere"):
        argv = ["train", "--config", str(recipe), "--output_dir", str(tmp_path / "out")]
        assert main([*argv, "--model_name_or_path", missing]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"model_name_or_path {missing} does not exist" in err


def test_what_counts_as_a_local_model_path():
    from hf_unlearn.io import looks_like_local_path

    for path in ("./model", "../model", "/abs/model", "~/model", "runs/tofu/npo", "model/"):
        assert looks_like_local_path(path), path
    for hub_id in ("gpt2", "open-unlearning/tofu_Llama-3.2-1B-Instruct_full", "org/name.v2"):
        assert not looks_like_local_path(hub_id), hub_id


def test_unknown_recipe_keys_and_flags_suggest_the_closest_option(target_model_dir, tmp_path, capsys):
    recipe = cpu_recipe(tmp_path / "bad.yaml", target_model_dir, forget_los="ga", leraning_rate=1e-4)
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'forget_los' (did you mean 'forget_loss'?)" in err
    assert "unknown option 'leraning_rate' (did you mean 'learning_rate'?)" in err
    assert "fail_with_unknown_args" not in err and "'--config'" not in err and err.count("\n") == 1
    recipe = cpu_recipe(tmp_path / "recipe.yaml", target_model_dir, zzzz_qqqq=1)
    assert main(["train", "--config", str(recipe), "--output_dir", str(tmp_path), "--learnin_rate", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown option '--learnin_rate' (did you mean '--learning_rate'?)" in err
    assert "unknown option 'zzzz_qqqq'" in err and "did you mean 'zzzz" not in err


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_load_without_deprecation_warnings(recipe, tmp_path):
    import warnings

    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("error", category=category, module=r"(transformers|trl)(\.|$)")
        _, args, _ = make_parser().parse_args_and_config(
            args=["--config", str(recipe), "--output_dir", str(tmp_path), "--bf16", "false"]
        )
    assert args.gradient_checkpointing == yaml.safe_load(recipe.read_text()).get("gradient_checkpointing", True)


def forget_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_evaluate_scores_the_forget_data_file_that_was_trained_on(target_model_dir, tmp_path, tofu):
    """Not the Hub's forget10 (offline: a traceback after training), nor the bundled forget01: the file's rows."""
    rows = [dict(row) for row in tofu["forget01_perturbed"].select(range(3))]
    data = forget_file(tmp_path / "my_forget.jsonl", rows)
    recipe = cpu_recipe(
        tmp_path / "recipe.yaml",
        target_model_dir,
        forget_data_file=str(data),
        retain_split="retain99",
        evaluate=True,
        eval_max_questions=5,
        eval_max_new_tokens=4,
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--output_dir", str(out)]) == 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["num_questions"] == {"retain": 5, "real_authors": 5, "world_facts": 5, "forget": 3}
    assert summary["split"] == "my_forget.jsonl" and summary["model_utility"] is not None
    forget_log = json.loads((out / "eval" / "eval_log_forget.json").read_text())
    assert rows[0]["question"] in forget_log["generated_text"]["0"][0], "the file's first question"


def test_evaluate_says_what_a_forget_data_file_lacks_before_training(target_model_dir, tmp_path, tofu, capsys):
    rows = [{"question": row["question"], "answer": row["answer"]} for row in tofu["forget01"].select(range(3))]
    data = forget_file(tmp_path / "plain.jsonl", rows)
    recipe = cpu_recipe(
        tmp_path / "recipe.yaml", target_model_dir, forget_data_file=str(data), retain_split="retain99", evaluate=True
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{data} has no 'paraphrased_answer', 'perturbed_answer'" in err and "truth ratio" in err
    assert not out.exists(), "refused before training"


def test_muse_targets_evaluate_the_runs_muse_data(tmp_path):
    """stop_at_targets on MUSE metrics: the MUSE evaluator gets the run's data set (a folder: data_dir, else a Hub
    id: dataset) and eval_max_questions as max_items, and none of the TOFU evaluator's arguments."""
    from types import SimpleNamespace

    from hf_unlearn.commands.train import UnlearnScriptArguments, target_eval_defaults

    def defaults(dataset_name, **given):
        script = UnlearnScriptArguments(dataset_name=dataset_name, dataset_config="raw", forget_split="forget",
                                        eval_max_questions=3)  # fmt: skip
        args = SimpleNamespace(stop_at_targets=["verbmem_forget_rougeL_f1<=0.2"], target_eval_kwargs=given or None)
        target_eval_defaults(script, args)
        return args.target_eval_kwargs

    assert defaults(str(tmp_path)) == {"data_dir": str(tmp_path), "max_items": 3}
    assert defaults("muse-bench/MUSE-News") == {"dataset": "muse-bench/MUSE-News", "max_items": 3}
    assert defaults(str(tmp_path), data_dir="elsewhere", max_items=9) == {"data_dir": "elsewhere", "max_items": 9}
