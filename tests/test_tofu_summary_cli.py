"""`hf-unlearn tofu-summary`: the TOFU summary from logs alone, through `hf_unlearn.cli.main`."""

from __future__ import annotations

import json
import math

import pytest

from hf_unlearn.cli import main
from hf_unlearn.evaluation import TOFU_UTILITY_KEYS, TOFUEvaluator

LN2, LN4 = math.log(2.0), math.log(4.0)

# Per-question logs in TOFU's layout; the comments give what TOFU's formulas make of them.
LOGS = {
    "eval_log.json": {  # retain: probability 1/2, ROUGE 1/2, stats 2, 2 -> truth ratio mean(1 - 1/2) = 1/2
        "avg_gt_loss": {"0": LN2, "1": LN2},
        "avg_paraphrased_loss": {"0": 0.0, "1": 0.0},
        "average_perturb_loss": {"0": [LN2], "1": [LN2, LN2]},
        "rougeL_recall": {"0": 1.0, "1": 0.0},
    },
    "eval_real_author_wo_options.json": {  # probability 1 / (1 + 1/2) = 2/3, stat 2 -> 1/2, ROUGE 1/2
        "avg_gt_loss": {"0": 0.0},
        "average_perturb_loss": {"0": [LN2]},
        "rougeL_recall": {"0": 0.5},
    },
    "eval_real_world_wo_options.json": {  # the same numbers: 2/3, 1/2, 1/2
        "avg_gt_loss": {"0": 0.0},
        "average_perturb_loss": {"0": [LN2]},
        "generated_text": {"0": ["Question: Where is Paris?", "France", "in France"]},  # ROUGE-L recall 1/2
    },
    "eval_log_forget.json": {  # probability (1 + 1/2) / 2, stats 4, 1 -> mean(1/4, 1) = 5/8
        "avg_gt_loss": {"0": 0.0, "1": LN2},
        "avg_paraphrased_loss": {"0": 0.0, "1": 0.0},
        "average_perturb_loss": {"0": [LN4], "1": [0.0]},
        "rougeL_recall": {"0": 1.0, "1": 1.0},
    },
}
COMPONENTS = dict(zip(TOFU_UTILITY_KEYS, [1 / 2, 1 / 2, 1 / 2, 2 / 3, 1 / 2, 1 / 2, 2 / 3, 1 / 2, 1 / 2]))
UTILITY = 9 / sum(1 / v for v in COMPONENTS.values())  # = 9 / 17
# The retain model's forget stats (8, 16; logged as TOFU's truth_ratio = 1 / stat) all exceed ours (4, 1): the KS
# statistic is 1 and the exact two-sided p-value for 2 vs 2 samples is 2 / C(4, 2) = 1/3.
RETAIN_FORGET_LOG = {"truth_ratio": {"0": 1 / 8, "1": 1 / 16}}


def write_logs(directory, logs):
    directory.mkdir(parents=True, exist_ok=True)
    for name, log in logs.items():
        (directory / name).write_text(json.dumps(log))
    return directory


def run_cli(capsys, *args):
    status = main(["tofu-summary", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_summary_of_hand_made_logs(tmp_path, capsys):
    model = write_logs(tmp_path / "model", LOGS)
    retain = write_logs(tmp_path / "retain", {"eval_log_forget.json": RETAIN_FORGET_LOG})

    status, out, err = run_cli(capsys, "--logs", model, "--retain-logs", retain)
    assert status == 0, err
    summary = json.loads(out)
    for key, expected in COMPONENTS.items():
        assert summary[key] == pytest.approx(expected, rel=1e-12), key
    assert summary["model_utility"] == pytest.approx(UTILITY, rel=1e-12)
    assert summary["forget_quality"] == pytest.approx(1 / 3, rel=1e-9)
    assert summary["forget_truth_ratio"] == pytest.approx(5 / 8)
    assert summary["forget_probability"] == pytest.approx(3 / 4)
    assert summary["num_questions"] == {"retain": 2, "real_authors": 1, "world_facts": 1, "forget": 2}

    status, out, _ = run_cli(capsys, "--logs", model)
    alone = json.loads(out)
    assert status == 0 and alone["forget_quality"] is None
    assert alone["model_utility"] == pytest.approx(UTILITY, rel=1e-12)

    # Without a non-forget split there is no model utility: null, not an error.
    forget_only = write_logs(tmp_path / "forget_only", {"eval_log_forget.json": LOGS["eval_log_forget.json"]})
    status, out, _ = run_cli(capsys, "--logs", forget_only, "--retain-logs", retain, "--indent", "0")
    assert status == 0 and len(out.strip().splitlines()) == 1
    assert json.loads(out)["model_utility"] is None
    assert json.loads(out)["forget_quality"] == pytest.approx(1 / 3, rel=1e-9)


def test_summary_of_evaluator_logs_matches_the_evaluator(target_model, tokenizer, tmp_path, capsys):
    evaluator = TOFUEvaluator(
        target_model,
        tokenizer,
        forget_split="forget01",
        data_dir="bundled",
        max_questions=4,
        max_new_tokens=6,
        progress=False,
    )
    expected = evaluator.evaluate(output_dir=tmp_path / "eval")
    status, out, err = run_cli(capsys, "--logs", tmp_path / "eval", "--retain-logs", tmp_path / "eval")
    assert status == 0, err
    summary = json.loads(out)
    for key in (*TOFU_UTILITY_KEYS, "model_utility", "forget_truth_ratio", "forget_rougeL_recall"):
        assert summary[key] == pytest.approx(expected[key], rel=1e-12), key
    assert summary["split"] == "forget01"
    assert summary["forget_quality"] == pytest.approx(1.0)  # the model against itself


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_dir", "does not exist"),
        ("empty_dir", "No TOFU evaluation logs"),
        ("bad_json", "is not valid JSON"),
        ("not_an_object", "must be a JSON object"),
        ("missing_field", "can give no truth ratio"),
        ("retain_without_forget", "hold no forget-split log"),
        ("missing_retain_dir", "does not exist"),
    ],
)
def test_errors_exit_with_status_2_and_a_message(case, message, tmp_path, capsys):
    model = write_logs(tmp_path / "model", LOGS)
    retain = None
    if case == "missing_dir":
        model = tmp_path / "nowhere"
    elif case == "empty_dir":
        model = tmp_path / "empty"
        model.mkdir()
    elif case == "bad_json":
        (model / "eval_log.json").write_text('{"avg_gt_loss": {"0": 0.1,')
    elif case == "not_an_object":
        (model / "eval_log.json").write_text("[1, 2, 3]")
    elif case == "missing_field":
        (model / "eval_log.json").write_text(json.dumps({"rougeL_recall": {"0": 1.0}}))
    elif case == "retain_without_forget":
        retain = write_logs(tmp_path / "retain", {"eval_log.json": LOGS["eval_log.json"]})
    elif case == "missing_retain_dir":
        retain = tmp_path / "no_retain"
    args = ["--logs", model] + (["--retain-logs", retain] if retain is not None else [])
    status, out, err = run_cli(capsys, *args)
    assert status == 2
    assert out == ""
    assert err.startswith("hf-unlearn tofu-summary: error:")
    assert message in err


def test_wrongly_shaped_values_are_reported_not_raised(tmp_path, capsys):
    logs = dict(LOGS)
    logs["eval_real_world_wo_options.json"] = {**LOGS["eval_real_world_wo_options.json"], "generated_text": {"0": 3}}
    status, _, err = run_cli(capsys, "--logs", write_logs(tmp_path / "model", logs))
    assert status == 2 and "malformed TOFU logs" in err


def test_logs_argument_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tofu-summary"])
    assert exit_info.value.code == 2
    assert "--logs" in capsys.readouterr().err


def test_logs_without_the_forget_split_say_the_forget_metrics_are_missing(tmp_path, capsys):
    logs = {name: log for name, log in LOGS.items() if name != "eval_log_forget.json"}
    status, out, err = run_cli(capsys, "--logs", write_logs(tmp_path / "logs", logs))
    assert status != 0 and out == ""
    assert "no forget-split log (eval_log_forget.json)" in err and "forget metrics" in err
    assert "Traceback" not in err
