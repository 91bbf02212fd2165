"""Nothing silently wrong: missing answers, truncation, wrong types and impossible settings fail early and clearly."""

from __future__ import annotations

import json
import logging
import re

import pytest
from datasets import Dataset
from helpers import make_trainer

from hf_unlearn import UnlearningConfig
from hf_unlearn.data import PromptEncoder, prepare_dataset

GOOD = {"question": "Who wrote it?", "answer": "Jane did."}


@pytest.mark.parametrize(
    "bad_row, problem",
    [
        ({"question": "Who?", "answer": None}, "column 'answer' is missing (None)"),
        ({"question": "Who?"}, "column 'answer' is missing (None)"),  # a JSON Lines row without the key
        ({"question": None, "answer": "Jane."}, "column 'question' is missing (None)"),
        ({"question": "Who?", "answer": ""}, "column 'answer' is empty"),
        ({"question": "Who?", "answer": "   "}, "column 'answer' is empty"),
    ],
)
def test_missing_or_empty_answers_are_refused_with_row_and_column(tokenizer, bad_row, problem):
    data = Dataset.from_list([GOOD, GOOD, bad_row])
    with pytest.raises(ValueError, match=rf"Row 2 of the forget dataset: {re.escape(problem)}.*invalid_rows='drop'"):
        prepare_dataset(data, PromptEncoder(tokenizer), name="forget dataset")


@pytest.mark.parametrize(
    "column, problem",
    [
        ([float("nan")], r"missing \(NaN\)"),  # an empty CSV cell read with pandas
        ([b"Jane did."], "a bytes"),
        ([["Jane", "did"]], "a list"),
        ([3.5], "a float"),
    ],
)
def test_non_text_answers_are_refused(tokenizer, column, problem):
    data = Dataset.from_dict({"question": ["Who?"], "answer": column})
    with pytest.raises(ValueError, match=rf"Row 0 of the retain dataset: column 'answer' is {problem}"):
        prepare_dataset(data, PromptEncoder(tokenizer), name="retain dataset")


def test_conversational_rows_are_checked_too(tokenizer):
    data = Dataset.from_dict(
        {"messages": [[{"role": "user", "content": "Who?"}, {"role": "assistant", "content": None}]]}
    )
    with pytest.raises(ValueError, match=r"Row 0 of the forget dataset: column 'messages.content' is missing"):
        prepare_dataset(data, PromptEncoder(tokenizer), name="forget dataset")


def test_invalid_rows_can_be_dropped_with_a_counted_warning(tokenizer, caplog):
    data = Dataset.from_list([GOOD, {"question": "Who?", "answer": None}, GOOD, {"question": "Who?", "answer": ""}])
    with caplog.at_level(logging.WARNING):
        encoded = prepare_dataset(data, PromptEncoder(tokenizer), name="forget dataset", invalid_rows="drop")
    assert len(encoded) == 2
    assert "Dropped 2 of the 4 rows of the forget dataset" in caplog.text
    only_bad = Dataset.from_list([{"question": "Who?", "answer": None}])
    with pytest.raises(ValueError, match="Every row of the forget dataset"):
        prepare_dataset(only_bad, PromptEncoder(tokenizer), name="forget dataset", invalid_rows="drop")


def test_the_trainer_refuses_a_retain_row_without_answer_and_can_drop_it(
    target_model, tokenizer, small_forget, tmp_path
):
    retain = Dataset.from_list([GOOD, {"question": "Who?", "answer": None}])
    with pytest.raises(ValueError, match="Row 1 of the retain dataset: column 'answer' is missing"):
        make_trainer(target_model, tokenizer, small_forget, retain, tmp_path)
    trainer = make_trainer(target_model, tokenizer, small_forget, retain, tmp_path, invalid_rows="drop")
    assert len(trainer.unlearning_collator.retain_dataset) == 1


def test_truncation_is_counted_in_one_warning(tokenizer, caplog):
    short, long = {"question": "Who?", "answer": "Jane."}, {"question": "Who?", "answer": "Jane did, " * 20}
    data = Dataset.from_list([short, long, long])
    encoder = PromptEncoder(tokenizer)
    prompt_len = len(encoder.encode_prompt([{"role": "user", "content": "Who?"}]))
    with caplog.at_level(logging.WARNING):
        encoded = prepare_dataset(data, encoder, name="forget dataset", max_length=prompt_len + 8)
    full = len(encoder.encode([{"role": "user", "content": "Who?"}], long["answer"])[1])
    assert [len(a) for a in encoded["answer_ids"]][1:] == [8, 8]
    assert f"2 of the 3 answers of the forget dataset are longer than max_length={prompt_len + 8}" in caplog.text
    assert f"{2 * (full - 8)} answer tokens were cut" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_dataset(data, encoder, name="forget dataset")
    assert "were cut" not in caplog.text


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"gamma": float("nan")}, "`gamma` must be a finite number"),
        ({"alpha": float("inf")}, "`alpha` must be a finite number"),
        ({"learning_rate": [1, 2]}, "`learning_rate` must be a number, got list"),
        ({"gamma": "1"}, "`gamma` must be a number, got str"),
        ({"gamma": 0.0, "alpha": 0.0}, "gamma = alpha = 0"),
        ({"invalid_rows": "skip"}, "invalid_rows must be 'error' or 'drop'"),
    ],
)
def test_bad_settings_fail_at_configuration(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        UnlearningConfig(output_dir=str(tmp_path), bf16=False, report_to="none", **overrides)


@pytest.mark.parametrize(
    "loss, kwargs, message",
    [
        ("npo", {"beta": "0.1"}, "hyperparameter 'beta' must be a float, got str '0.1'"),
        ("rmu", {"layer": 1.5}, "hyperparameter 'layer' must be a int, got float"),
        ("wga", {"beta": True}, "hyperparameter 'beta' must be a float, got bool"),
        ("ga", {"beta": 0.1}, r"unknown hyperparameter\(s\) \['beta'\]; it accepts: none"),
        ("kl", {"positions": 3}, "hyperparameter 'positions' must be a str"),
    ],
)
def test_loss_hyperparameters_of_the_wrong_type_are_refused(
    target_model, tokenizer, small_forget, small_retain, tmp_path, loss, kwargs, message
):
    kind = "retain" if loss == "kl" else "forget"
    settings = {f"{kind}_loss": loss, f"{kind}_loss_kwargs": kwargs}
    with pytest.raises(ValueError, match=message):
        make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, **settings)


# ---------------------------------------------------------------------------------------------- resuming
def _train(model_dir, tokenizer, forget, retain, out, resume=None, **overrides):
    """GA on the model saved in `model_dir`, saving a checkpoint every step (resuming from `resume` if given), then
    the model; the trainer."""
    from transformers import AutoModelForCausalLM

    settings = dict(forget_loss="ga", max_steps=2, save_strategy="steps", save_steps=1, per_device_train_batch_size=2)
    settings["lr_scheduler_type"] = "constant"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainer = make_trainer(model, tokenizer, forget, retain, out, **{**settings, **overrides})
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model()
    return trainer


@pytest.mark.parametrize(
    "change, refused",
    [
        ({"forget_loss": "npo"}, "forget_loss: 'ga' -> 'npo'"),
        ({"rectification": "gru"}, "rectification: None -> 'gru'"),
    ],
)
def test_resuming_with_another_method_is_refused(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path, change, refused
):
    _train(target_model_dir, tokenizer, small_forget, small_retain, tmp_path / "first", max_steps=1)
    checkpoint = tmp_path / "first" / "checkpoint-1"
    with pytest.raises(ValueError, match=rf"trained with another unlearning method \({re.escape(refused)}\)"):
        _train(
            target_model_dir, tokenizer, small_forget, small_retain, tmp_path / "again", resume=checkpoint, **change
        )


def test_resuming_with_changed_settings_warns_and_records_what_ran(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path, caplog
):
    import json

    _train(target_model_dir, tokenizer, small_forget, small_retain, tmp_path / "first", max_steps=1)
    checkpoint = tmp_path / "first" / "checkpoint-1"
    with caplog.at_level(logging.WARNING):
        trainer = _train(
            target_model_dir,
            tokenizer,
            small_forget,
            small_retain,
            tmp_path / "again",
            resume=checkpoint,
            learning_rate=0.5,
            gamma=2.0,
        )
    assert "Resuming" in caplog.text and "gamma 1.0 -> 2.0" in caplog.text
    state = json.loads((tmp_path / "again" / "unlearning.json").read_text())
    assert state["resumed_from"] == "checkpoint-1" and state["gamma"] == 2.0
    assert state["changed_on_resume"]["learning_rate"] == {"checkpoint": 1e-3, "resumed": 0.5}
    # the restored scheduler kept the checkpoint's rate, and that is what unlearning.json records
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-3) and state["learning_rate"] == 1e-3


# ---------------------------------------------------------------------------------------------- errors naming the file
@pytest.mark.parametrize("damaged", ["trainer_state.json", "unlearning.json", "model.safetensors"])
def test_resuming_a_damaged_checkpoint_names_the_file(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path, damaged
):
    _train(target_model_dir, tokenizer, small_forget, small_retain, tmp_path / "first", max_steps=1)
    checkpoint = tmp_path / "first" / "checkpoint-1"
    path = checkpoint / damaged
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated, as by a full disk
    with pytest.raises(ValueError, match=re.escape(str(path))):
        _train(target_model_dir, tokenizer, small_forget, small_retain, tmp_path / "again", resume=checkpoint)


def _cli_error(capsys, *argv):
    from hf_unlearn.cli import main

    status = main(list(argv))
    err = capsys.readouterr().err
    assert status != 0 and "Traceback" not in err
    return err


def test_command_line_errors_name_the_file(tmp_path, capsys):
    truncated = tmp_path / "forget.jsonl"
    truncated.write_text('{"question": "a", "answer": "b"}\n{"question": "c", "ans')
    latin1 = tmp_path / "retain.jsonl"
    latin1.write_bytes('{"question": "caf\xe9", "answer": "b"}\n'.encode("latin-1"))
    for data, problem in (
        (truncated, "could not be read as JSON"),
        (latin1, "is not UTF-8 text (byte 0xe9 on line 1)"),
    ):
        files = ["--forget_data_file", str(data), "--retain_data_file", str(data)]
        err = _cli_error(capsys, "train", *files, "--model_name_or_path", "x", "--output_dir", str(tmp_path / "o"))
        assert f"{data} {problem}" in err
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("forget_loss: [npo\n")
    assert f"{recipe} is not valid YAML" in _cli_error(capsys, "train", "--config", str(recipe))
    noise = tmp_path / "logs.json"
    noise.write_bytes(bytes(range(256)))
    assert f"{noise} is not valid JSON" in _cli_error(capsys, "tofu-summary", "--logs", str(noise))
    missing = tmp_path / "no_such_model"
    assert f"{missing} is not a model folder (it does not exist)" in _cli_error(
        capsys, "eval", "--model", str(missing)
    )


# ---------------------------------------------------------------------------------------------- reused output folders
def test_an_output_dir_holding_an_earlier_run_is_refused_or_moved_aside(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path, caplog
):
    out = tmp_path / "run"
    _train(target_model_dir, tokenizer, small_forget, small_retain, out, max_steps=1)
    (out / "eval").mkdir()
    (out / "eval" / "summary.json").write_text('{"model_utility": 0.5}')
    (out / "grun_config.json").write_text("[]")  # as a former GRUN run leaves it
    with pytest.raises(ValueError, match=r"holds an earlier run .*overwrite_output_dir=True.*resume_from_checkpoint"):
        _train(target_model_dir, tokenizer, small_forget, small_retain, out, max_steps=1, forget_loss="npo")
    with caplog.at_level(logging.WARNING):
        _train(target_model_dir, tokenizer, small_forget, small_retain, out, max_steps=1, overwrite_output_dir=True)
    (aside,) = tmp_path.glob("run.replaced-*")
    assert {"checkpoint-1", "eval", "grun_config.json", "unlearning.json", "model.safetensors"} <= {
        p.name for p in aside.iterdir()
    }
    assert not (out / "eval").exists() and not (out / "grun_config.json").exists()
    assert (out / "model.safetensors").is_file() and (out / "checkpoint-1").is_dir()  # the new run's
    assert "moved the earlier run's" in caplog.text
    from hf_unlearn.methods import method_of_folder

    assert method_of_folder(out).kind == "full", "no stale GRUN file decides what the folder holds"
    # resuming needs no overwrite
    _train(target_model_dir, tokenizer, small_forget, small_retain, out, resume=out / "checkpoint-1")


def test_overwriting_a_run_moves_its_robustness_and_analyze_results_aside(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    from hf_unlearn.constants import ROBUSTNESS_DIR
    from hf_unlearn.evaluation.robustness import ROBUSTNESS_FILE

    out = tmp_path / "run"
    _train(target_model_dir, tokenizer, small_forget, small_retain, out, max_steps=1, save_strategy="no")
    # what `hf-unlearn robustness --model run` writes by default, and `analyze --output/--plot` as documented
    (out / ROBUSTNESS_DIR).mkdir()
    (out / ROBUSTNESS_DIR / ROBUSTNESS_FILE).write_text("{}")
    earlier = {ROBUSTNESS_DIR, "geffect_npo.json", "geffect_npo.png"}
    for name in ("geffect_npo.json", "geffect_npo.png"):
        (out / name).write_text("{}")
    _train(
        target_model_dir,
        tokenizer,
        small_forget,
        small_retain,
        out,
        max_steps=1,
        save_strategy="no",
        overwrite_output_dir=True,
    )
    (aside,) = tmp_path.glob("run.replaced-*")
    assert earlier <= {p.name for p in aside.iterdir()}
    assert not earlier & {p.name for p in out.iterdir()}, "none of them labels the new model"


def test_cards_and_push_use_only_evaluations_of_the_saved_weights(tmp_path, caplog):
    import json

    from hf_unlearn.demo.tiny import tiny_llama
    from hf_unlearn.hub import build_model_card, files_to_push
    from hf_unlearn.io import FINGERPRINT_KEY, weights_fingerprint

    folder = tmp_path / "model"
    tiny_llama(64, num_layers=1, hidden_size=32, seed=0).save_pretrained(folder)
    (folder / "unlearning.json").write_text(json.dumps({"forget_loss": "ga", "retain_loss": "nll"}))
    (folder / "eval").mkdir()
    summary = {"model_utility": 0.4321, "forget_quality": 0.5, FINGERPRINT_KEY: weights_fingerprint(folder)}
    (folder / "eval" / "summary.json").write_text(json.dumps(summary))
    assert "0.4321" in str(build_model_card(folder, base_model="org/base"))
    assert "eval/summary.json" in files_to_push(folder)
    tiny_llama(64, num_layers=1, hidden_size=32, seed=1).save_pretrained(folder)  # new weights, old evaluation
    with caplog.at_level(logging.WARNING):
        card = str(build_model_card(folder, base_model="org/base"))
        published = files_to_push(folder)
    assert "0.4321" not in card and "model-index" not in card
    assert "evaluated other weights" in caplog.text
    assert "eval/summary.json" not in published and "model.safetensors" in published


def test_commands_do_not_overwrite_results_without_consent(tmp_path, capsys):
    from hf_unlearn.demo.quickstart import run_quickstart

    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart" / "results.json").write_text("[]")
    with pytest.raises(ValueError, match="earlier quickstart's results. Pass --overwrite"):
        run_quickstart(tmp_path / "quickstart")
    model = tmp_path / "model"
    (model / "eval").mkdir(parents=True)
    (model / "eval" / "summary.json").write_text("{}")
    assert "holds earlier evaluation results. Pass --overwrite" in _cli_error(capsys, "eval", "--model", str(model))
    output = tmp_path / "geffect.json"
    output.write_text("{}")
    err = _cli_error(capsys, "analyze", "--model", str(model), "--objective", "ga", "--output", str(output))
    assert f"--output {output} exists. Pass --overwrite" in err


# ---------------------------------------------------------------------------------------------- the training log
def test_the_training_log_is_kept_without_checkpoints(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    from hf_unlearn.constants import TRAINING_LOG_FILE

    out = tmp_path / "run"
    trainer = _train(
        target_model_dir,
        tokenizer,
        small_forget,
        small_retain,
        out,
        max_steps=3,
        save_strategy="no",
        rectification="gru",
        logging_steps=1,
    )
    assert not (out / "trainer_state.json").exists() and not list(out.glob("checkpoint-*"))
    lines = [json.loads(line) for line in (out / TRAINING_LOG_FILE).read_text().splitlines()]
    assert lines == json.loads(json.dumps(trainer.state.log_history)), "trl's log_history, one entry a line"
    assert [e["step"] for e in lines if "loss/forget" in e] == [1, 2, 3]
    assert all("gru/cosine" in e and "loss/retain" in e for e in lines if "loss/forget" in e)
    assert "train_runtime" in lines[-1]


def test_a_resumed_run_continues_its_training_log(target_model_dir, tokenizer, small_forget, small_retain, tmp_path):
    from hf_unlearn.constants import TRAINING_LOG_FILE

    out = tmp_path / "run"
    _train(target_model_dir, tokenizer, small_forget, small_retain, out, logging_steps=1)
    _train(target_model_dir, tokenizer, small_forget, small_retain, out, resume=out / "checkpoint-1", logging_steps=1)
    lines = [json.loads(line) for line in (out / TRAINING_LOG_FILE).read_text().splitlines()]
    assert [e["step"] for e in lines if "loss/forget" in e] == [1, 2], "step 2 once: the resumed run's"
