"""hf_unlearn.compare: the config, the rate and verdict rules, a comparison end to end on a tiny model (2 methods x
2 rates x 2 seeds), the refinement to the step, resuming after a kill, the report from results.json, the dry run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from hf_unlearn.cli import main as cli_main
from hf_unlearn.compare import (
    CompareConfig,
    MatchedValue,
    choose_learning_rate,
    paired_verdict,
)
from hf_unlearn.compare import runner as compare_runner
from hf_unlearn.compare import worker as compare_worker
from hf_unlearn.compare.report import format_report
from hf_unlearn.evaluation import TOFUEvaluator

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"source": "tofu", "data_dir": "bundled", "forget_split": "forget01", "max_questions": 8, "max_new_tokens": 6}


def base_config(target_dir, thresholds, **overrides) -> dict:
    config = {
        "target_model": str(target_dir),
        "data": dict(DATA),
        "methods": {
            "ga": {"forget_loss": "ga", "retain_loss": "none", "learning_rates": [2e-3, 5e-3]},
            "gd": {"forget_loss": "ga", "retain_loss": "nll", "learning_rates": [2e-3, 5e-3]},
        },
        "targets": {
            "high": f"forget_probability<={thresholds[0]:.4f}",
            "low": f"forget_probability<={thresholds[1]:.4f}",
        },
        "match_tolerance": 1.0,
        "seeds": [0, 1],
        "max_steps": 24,
        "eval_every": 4,
        "utility": "retain_utility",
        "training": {"per_device_train_batch_size": 4},
        "claims": ["gd > ga"],
        "workers": 1,
        "threads_per_worker": 1,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def thresholds(target_model_dir, tokenizer):
    """Two targets below the tiny target's forget probability on the evaluated questions."""
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    kwargs = {k: v for k, v in DATA.items() if k not in ("source",)}
    summary = TOFUEvaluator(model, tokenizer, splits=["forget"], progress=False, **kwargs).evaluate()
    start = summary["forget_probability"]
    return 0.8 * start, 0.5 * start


@pytest.fixture(scope="module")
def comparison(target_model_dir, thresholds, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    config = CompareConfig.from_dict(base_config(target_model_dir, thresholds))
    results = compare_runner.run_comparison(config, out, progress=False)
    return config, results, out


# ---------------------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------------------


def test_config_round_trips_and_reads_yaml(target_model_dir, thresholds, tmp_path):
    raw = base_config(target_model_dir, thresholds)
    config = CompareConfig.from_dict(raw)
    assert CompareConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert config.targets["low"].target.threshold == pytest.approx(thresholds[1], abs=1e-4)
    assert config.targets["high"].tolerance == 1.0
    assert config.claims[0].better == "gd" and config.claims[0].than == "ga"
    (tmp_path / "models").mkdir()
    raw["target_model"] = "./models"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert CompareConfig.from_yaml(tmp_path / "c.yaml").target_model == str((tmp_path / "models").resolve())


def test_a_claim_without_targets_is_judged_where_both_methods_run(target_model_dir):
    raw = base_config(target_model_dir, (0.5, 0.2))
    raw["methods"]["ga"]["targets"] = ["low"]  # gd runs to both
    config = CompareConfig.from_dict(raw)
    assert config.claim_targets(config.claims[0]) == ["low"]
    raw["methods"]["ga"]["targets"] = None
    assert CompareConfig.from_dict(raw).claim_targets(config.claims[0]) == ["high", "low"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"learning_rate": [1e-3]}, "Did you mean 'learning_rates'"),
        ({"methods": {"ga": {"forget_loss": "ga", "learning_rates": []}}}, "non-empty list of positive"),
        ({"claims": ["gd > npo"]}, "no method 'npo'"),
        ({"claims": ["gd beats ga"]}, "write 'A > B'"),
        ({"targets": {"x": "forget_prob<=0.1"}}, "Unknown target metric"),
        ({"max_epochs": 3}, "exactly one of max_steps and max_epochs"),
        ({"refine": "bisect"}, "refine must be one of"),
        ({"targets": {"fq": "forget_quality>=0.01"}}, "give retain_model or retain_logs"),
        ({"methods": {"ga": {"forget_loss": "ga", "learning_rates": [1e-3], "config": {"seed": 3}}}}, "may not set"),
        ({"claims": [{"better": "gd", "than": "ga", "metric": "attack:relearning"}]}, "the attacks run \\[\\]"),
        (
            {
                "attacks": {"target": "low", "relearning": {}},
                "claims": [{"better": "gd", "than": "ga", "metric": "attack:relearning", "targets": ["low"]}],
            },
            "attack them all",
        ),
        (
            {
                "attacks": {"target": "low", "seeds": [0, 1], "relearning": {}},
                "claims": [{"better": "gd", "than": "ga", "metric": "attack:relearning"}],
            },
            "give the claim targets: \\[low\\]",
        ),
        ({"claims": [{"better": "gd", "than": "ga", "margin": -1}]}, "margin must be a number >= 0"),
        (
            {
                "methods": {
                    "ga": {"forget_loss": "ga", "learning_rates": [1e-3], "targets": ["high"]},
                    "gd": {"forget_loss": "ga", "retain_loss": "nll", "learning_rates": [1e-3]},
                },
                "claims": [{"better": "gd", "than": "ga", "targets": ["low"]}],
            },
            "at 'low': method 'ga' does not run to it",
        ),
        (
            {
                "methods": {
                    "ga": {"forget_loss": "ga", "learning_rates": [1e-3], "targets": ["high"]},
                    "gd": {"forget_loss": "ga", "retain_loss": "nll", "learning_rates": [1e-3], "targets": ["low"]},
                },
            },
            "run to no common target",
        ),
    ],
)
def test_config_errors_name_the_problem(change, message, target_model_dir):
    raw = base_config(target_model_dir, (0.5, 0.2))
    if "learning_rate" in change:
        raw["methods"]["ga"]["learning_rate"] = change.pop("learning_rate")
    raw.update(change)
    with pytest.raises(ValueError, match=message):
        CompareConfig.from_dict(raw)


# ---------------------------------------------------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------------------------------------------------


def test_rate_rule_highest_utility_ties_to_the_smaller_rate():
    assert choose_learning_rate({1e-4: 0.3, 3e-4: 0.5, 1e-3: None}) == 3e-4
    assert choose_learning_rate({1e-4: 0.5, 3e-4: 0.5}) == 1e-4
    assert choose_learning_rate({1e-4: None, 3e-4: None}) is None


def _values(utilities, forget=0.1):
    return {s: None if u is None else MatchedValue(u, forget) for s, u in enumerate(utilities)}


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0.50, 0.52, 0.49], [0.40, 0.41, 0.45], "holds"),
        ([0.40, 0.41, 0.45], [0.50, 0.52, 0.49], "contradicted"),
        ([0.50, 0.40, 0.49], [0.40, 0.41, 0.45], "no clear difference"),  # not the same sign on every seed
        ([0.405, 0.405, 0.405], [0.40, 0.40, 0.40], "no clear difference"),  # mean below min_effect
        ([0.5, None, 0.5], [0.4, 0.4, 0.4], "not testable (seeds reached: 2/3 of 3)"),
    ],
)
def test_verdict_rule(a, b, expected):
    verdict = paired_verdict("A > B", "t", _values(a), _values(b), tolerance=0.01)
    assert verdict.verdict == expected
    if verdict.differences:
        assert verdict.mean == pytest.approx(sum(x - y for x, y in zip(a, b)) / len(a))


def test_non_inferiority_verdict():
    """ "A loses at most 0.02 against B": every paired difference above -0.02 holds, every one below contradicts."""
    b = _values([0.50, 0.50, 0.50])
    assert paired_verdict("c", "t", _values([0.49, 0.485, 0.51]), b, tolerance=1, margin=0.02).verdict == "holds"
    assert paired_verdict("c", "t", _values([0.47, 0.45, 0.40]), b, tolerance=1, margin=0.02).verdict == "contradicted"
    assert paired_verdict("c", "t", _values([0.47, 0.49, 0.50]), b, tolerance=1, margin=0.02).verdict == (
        "no clear difference"
    )


def test_verdict_not_testable_when_matched_forgetting_differs_beyond_tolerance():
    a = _values([0.5, 0.5], forget=0.095)
    b = _values([0.4, 0.4], forget=0.048)
    verdict = paired_verdict("A > B", "t", a, b, tolerance=0.02)
    assert verdict.verdict.startswith("not testable (matched forget metrics differ by up to 0.047")
    assert paired_verdict("A > B", "t", a, b, tolerance=0.05).verdict == "holds"


# ---------------------------------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------------------------------


def test_comparison_runs_the_protocol(comparison):
    config, results, out = comparison
    runs = results["runs"]
    first = [r for r in runs if r["seed"] == 0]
    assert sorted((r["method"], r["learning_rate"]) for r in first) == [
        ("ga", 2e-3), ("ga", 5e-3), ("gd", 2e-3), ("gd", 5e-3)]  # fmt: skip
    # the rate rule, recomputed from the first seed's records
    for method in config.methods:
        for target in config.targets:
            utilities = {
                r["learning_rate"]: (r["matched"][target] or {}).get("utility") for r in first if r["method"] == method
            }
            reached = {rate: u for rate, u in utilities.items() if u is not None}
            expected = None if not reached else min(reached, key=lambda rate: (-reached[rate], rate))
            assert results["chosen"][method][target] == expected
    # the other seed ran exactly the chosen rates
    second = {(r["method"], r["learning_rate"]) for r in runs if r["seed"] == 1}
    chosen = {(m, rate) for m, by in results["chosen"].items() for rate in by.values() if rate is not None}
    assert second == chosen and chosen
    # the verdicts, recomputed from the runs at the chosen rates
    for verdict in results["verdicts"]:
        target = verdict["target"]
        rate_a, rate_b = results["chosen"]["gd"][target], results["chosen"]["ga"][target]
        if rate_a is None or rate_b is None:
            continue
        diffs = []
        for seed in config.seeds:
            a = next(r for r in runs if r["method"] == "gd" and r["learning_rate"] == rate_a and r["seed"] == seed)
            b = next(r for r in runs if r["method"] == "ga" and r["learning_rate"] == rate_b and r["seed"] == seed)
            diffs.append(a["matched"][target]["utility"] - b["matched"][target]["utility"])
        assert verdict["differences"] == pytest.approx(diffs)
    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    assert (out / "utility_at_targets.png").stat().st_size > 0 and (out / "trajectories.png").stat().st_size > 0


def test_matched_point_is_the_first_step_meeting_the_target(comparison):
    """Refinement replays the run and evaluates every step between the two cheap evaluations that bracket the target:
    the matched step is the first step whose forget probability meets it, and the model saved there, loaded afresh
    and fully evaluated, meets it too."""
    config, results, _ = comparison
    refined = 0
    for run in results["runs"]:
        for name, entry in run["matched"].items():
            if entry is None:
                continue
            target = config.targets[name].target
            steps = {int(p["step"]): p for p in run["trajectory"]}
            assert target.met(steps[entry["step"]])
            # the matched step is the earliest evaluated step that meets the target
            assert not any(target.met(p) for s, p in steps.items() if s < entry["step"])
            if entry["refined"]:
                refined += 1
                assert all(s in steps for s in range(entry["refined"]["evaluated_from"], entry["step"] + 1))
            # the full evaluation of the checkpoint loaded from disk gives the trajectory's number
            assert entry["summary"]["forget_probability"] == pytest.approx(
                entry["point"]["forget_probability"], rel=1e-5
            )
            assert entry["forget_metric"] <= target.threshold
    assert refined > 0, "no run needed refinement: the test does not exercise it"


def test_checkpoint_weights_dropped_after_evaluation(comparison):
    _, _, out = comparison
    assert not list((out / "runs").rglob("*.safetensors"))
    assert list((out / "runs").rglob("eval/summary.json"))


def test_report_regenerates_from_results_json(comparison):
    _, results, out = comparison
    saved = json.loads((out / "results.json").read_text())
    assert format_report(saved) == (out / "report.md").read_text()
    assert "## Verdicts" in (out / "report.md").read_text()


def test_resume_reuses_finished_runs(comparison, monkeypatch, tmp_path):
    """A killed comparison (results.json not written, one run unfinished) reruns only the unfinished run."""
    config, results, out = comparison
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "results.json").unlink()
    victim = results["runs"][1]
    folder = compare_runner.run_folder(copy, victim["method"], victim["learning_rate"], victim["seed"])
    (folder / "record.json").unlink()
    calls = []
    real = compare_worker.run_job

    def counting(job):
        calls.append((job.method, job.learning_rate, job.seed))
        return real(job)

    monkeypatch.setattr(compare_worker, "run_job", counting)
    again = compare_runner.run_comparison(config, copy, progress=False, report=False)
    assert calls == [(victim["method"], victim["learning_rate"], victim["seed"])]
    rerun = next(r for r in again["runs"] if r["method"] == victim["method"] and r["seed"] == victim["seed"]
                 and r["learning_rate"] == victim["learning_rate"])  # fmt: skip
    assert [p["forget_probability"] for p in rerun["trajectory"]] == pytest.approx(
        [p["forget_probability"] for p in victim["trajectory"]], rel=1e-5
    )
    assert again["chosen"] == results["chosen"]


def test_changed_setting_reruns(comparison, target_model_dir, thresholds):
    config, _, _ = comparison
    changed = CompareConfig.from_dict({**config.to_dict(), "eval_every": 3})
    same = CompareConfig.from_dict({**config.to_dict(), "workers": 2, "claims": []})
    fingerprint = compare_runner.run_fingerprint
    assert fingerprint(changed, "ga", 2e-3, 0, None) != fingerprint(config, "ga", 2e-3, 0, None)
    assert fingerprint(same, "ga", 2e-3, 0, None) == fingerprint(config, "ga", 2e-3, 0, None)


def test_target_already_met_is_refused(target_model_dir, tmp_path):
    raw = base_config(target_model_dir, (1.0, 0.99))
    with pytest.raises(ValueError, match="already meets"):
        compare_runner.run_comparison(CompareConfig.from_dict(raw), tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_trains_nothing(target_model_dir, thresholds, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(target_model_dir, thresholds)))
    assert cli_main(["compare", "--config", str(path), "--dry-run", "--output-dir", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "target model: local folder" in text and "40 forget questions" in text
    # 2 rates on the first seed, at most 2 chosen rates on the other; 24 steps, an evaluation every 4 (and at 0)
    assert "| ga | 2 | 2 | 24 | 7 |" in text
    assert "At most 8 runs, 192 optimizer steps and 56 cheap evaluations" in text
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": {"x": {"forget_loss": "gaa", "learning_rates": [1e-3]}}}, "gaa"),
        ({"target_model": "/nonexistent/model"}, "does not exist"),
        ({"data": {"source": "files", "forget": "/nope.jsonl", "retain": "/nope.jsonl"}}, "does not exist"),
    ],
)
def test_dry_run_resolves_names(change, message, target_model_dir, tmp_path, capsys):
    raw = {**base_config(target_model_dir, (0.5, 0.2)), **change, "claims": []}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["compare", "--config", str(path), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_report_only_rebuilds_the_report(comparison, tmp_path, capsys):
    config, _, out = comparison
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "report.md").unlink()
    # the claims are judged again from the runs (a stored verdict made by an older rule is replaced)
    stored = json.loads((copy / "results.json").read_text())
    stored["verdicts"] = [{**v, "cell": "stale"} for v in stored["verdicts"]]
    (copy / "results.json").write_text(json.dumps(stored))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert cli_main(["compare", "--config", str(path), "--output-dir", str(copy), "--report-only"]) == 0
    assert (copy / "report.md").read_text() == (out / "report.md").read_text()
    rejudged = json.loads((copy / "results.json").read_text())["verdicts"]
    assert rejudged == json.loads((out / "results.json").read_text())["verdicts"]
    assert "# Methods compared at matched forgetting" in capsys.readouterr().out


def test_shipped_configs_parse_and_the_gpu_one_plans_offline(capsys):
    """examples/compare/: the TOFU-mini configs parse (their models are built by tofu_mini.py --prepare); the
    Llama-3.2-1B one resolves every name and prints its plan here, without a GPU or the Hub."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "examples" / "compare"
    full = CompareConfig.from_yaml(folder / "tofu_mini.yaml")
    assert len(full.methods) == 22 and full.methods["idk"].targets == ["rouge"]
    assert [t.name for t in full.targets_of("idk")] == ["rouge"] and len(full.targets_of("npo")) == 2
    CompareConfig.from_yaml(folder / "tofu_mini_quick.yaml")
    assert cli_main(["compare", "--config", str(folder / "tofu_forget10_llama32_1b.yaml"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "Hub model open-unlearning/tofu_Llama-3.2-1B-Instruct_full" in text
    assert "TOFU forget10 from the Hub (locuslab/TOFU) (400 forget questions)" in text
    # 400 questions / (4 x 8) a step = 13 steps an epoch, 10 epochs, rounded up to whole intervals of 10
    assert "| npo + nll | 3 | 6 | 130 | 14 |" in text


def test_a_method_runs_only_to_its_own_targets(target_model_dir, thresholds, tmp_path):
    raw = base_config(
        target_model_dir, thresholds, seeds=[0], claims=[{"better": "gd", "than": "ga", "targets": ["low"]}]
    )
    raw["methods"]["ga"]["targets"] = ["low"]
    raw["methods"]["ga"]["learning_rates"] = [5e-3]
    raw["methods"]["gd"]["learning_rates"] = [5e-3]
    config = CompareConfig.from_dict(raw)
    results = compare_runner.run_comparison(config, tmp_path, progress=False, report=False)
    ga = next(r for r in results["runs"] if r["method"] == "ga")
    assert set(ga["matched"]) == {"low"}
    assert results["chosen"]["ga"]["high"] is None
    assert "not run to this target" in format_report(results)
    with pytest.raises(ValueError, match="are not among targets"):
        CompareConfig.from_dict({**raw, "methods": {"ga": {**raw["methods"]["ga"], "targets": ["nope"]}}})


@pytest.mark.slow
def test_worker_processes_give_the_in_process_records(comparison, target_model_dir, thresholds, tmp_path):
    """Two worker processes (the CPU pool) run the same first-seed runs as the in-process comparison."""
    config, results, _ = comparison
    pooled = CompareConfig.from_dict({**config.to_dict(), "seeds": [0], "workers": 2, "claims": []})
    again = compare_runner.run_comparison(pooled, tmp_path, progress=False, report=False)
    for run in again["runs"]:
        same = next(r for r in results["runs"] if (r["method"], r["learning_rate"], r["seed"]) ==
                    (run["method"], run["learning_rate"], run["seed"]))  # fmt: skip
        assert [p["step"] for p in run["trajectory"]] == [p["step"] for p in same["trajectory"]]
        assert [p["forget_probability"] for p in run["trajectory"]] == pytest.approx(
            [p["forget_probability"] for p in same["trajectory"]], rel=1e-4
        )
    assert (tmp_path / "runs" / "ga" / "lr0.002_seed0" / "worker.log").is_file()


def test_claims_on_attacks_and_non_inferiority_end_to_end(target_model_dir, thresholds, tmp_path, capsys):
    """Attack presets on the matched models of every seed, a claim on the forget probability after an attack
    (lower is better) and a non-inferiority claim on utility, judged from the records."""
    raw = base_config(target_model_dir, thresholds, max_steps=12)
    raw["methods"] = {name: {**spec, "learning_rates": [5e-3]} for name, spec in raw["methods"].items()}
    raw["attacks"] = {"target": "low", "seeds": [0, 1], "presets": ["zhang2024-quantization"],
                      "quantization": {"bits": 4, "scheme": "nf4"}}  # fmt: skip
    raw["claims"] = [
        {"better": "gd", "than": "ga", "metric": "attack:zhang2024-quantization", "targets": ["low"]},
        {"better": "gd", "than": "ga", "margin": 0.02},
    ]
    config = CompareConfig.from_dict(raw)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["compare", "--config", str(path), "--dry-run"]) == 0
    assert "attack preset zhang2024-quantization" in capsys.readouterr().out
    results = compare_runner.run_comparison(config, tmp_path / "out", progress=False)
    runs = {(r["method"], r["seed"]): r for r in results["runs"]}
    attack, margin = [v for v in results["verdicts"] if v["target"] == "low"][:2]
    assert attack["claim"] == "ga + nll keeps less forget probability after zhang2024-quantization than ga"
    after = {k: r["matched"]["low"]["attacks"]["zhang2024-quantization"]["after"] for k, r in runs.items()}
    assert {"before", "after", "settings"} <= set(
        runs[("ga", 0)]["matched"]["low"]["attacks"]["zhang2024-quantization"]
    )
    assert attack["differences"] == pytest.approx([after[("ga", s)] - after[("gd", s)] for s in (0, 1)])
    assert margin["claim"] == "ga + nll loses at most 0.02 utility against ga"
    d = [runs[("gd", s)]["matched"]["low"]["utility"] - runs[("ga", s)]["matched"]["low"]["utility"] for s in (0, 1)]
    assert margin["differences"] == pytest.approx(d)
    expected = "holds" if min(d) >= -0.02 else "contradicted" if max(d) < -0.02 else "no clear difference"
    assert margin["verdict"] == expected
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| method | seed | quantization | zhang2024-quantization |" in report
