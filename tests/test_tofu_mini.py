"""The TOFU-mini benchmark's pieces (examples/benchmarks/tofu_mini.py) in tiny settings."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace

import pytest
from launch import REPO

SHARED_TOFU = REPO.parent / "shared" / "data" / "tofu"


@pytest.fixture(scope="module")
def tofu_mini():
    path = REPO / "examples" / "benchmarks" / "tofu_mini.py"
    spec = importlib.util.spec_from_file_location("tofu_mini", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tofu_mini"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("tofu_mini", None)


def test_author_selection_is_deterministic_and_disjoint(tofu_mini):
    split = tofu_mini.select_authors(40)
    assert split == tofu_mini.select_authors(40)
    assert split.authors == tuple(range(20)) + tuple(range(180, 200))
    assert split.forget == (196, 197, 198, 199)  # the last 10%, as TOFU's forget splits
    assert not set(split.forget) & set(split.retain)
    assert set(split.forget) | set(split.retain) == set(split.authors)
    assert set(split.retain_eval) <= set(split.retain) and len(split.retain_eval) == 10
    quick = tofu_mini.select_authors(20)
    assert quick.forget == (198, 199) and set(quick.authors) <= set(split.authors)
    for bad in (0, 3, 42):
        with pytest.raises(ValueError, match="num_authors"):
            tofu_mini.select_authors(bad)


def test_shipped_data_matches_the_selection(tofu_mini):
    data = tofu_mini.load_data(tofu_mini.select_authors(40))
    assert (len(data.target_train), len(data.retain_train), len(data.forget)) == (800, 720, 80)
    assert (len(data.forget_eval), len(data.retain_eval)) == (80, 200)
    forget_questions = {r["question"] for r in data.forget}
    assert [r["question"] for r in data.forget_eval] == [r["question"] for r in data.forget]
    assert not forget_questions & {r["question"] for r in data.retain_train}
    assert {r["question"] for r in data.retain_eval} <= {r["question"] for r in data.retain_train}
    assert all(len(r["perturbed_answer"]) == 5 for r in data.forget_eval + data.retain_eval)
    size = sum(p.stat().st_size for p in tofu_mini.DATA_DIR.iterdir())
    assert size < 1_000_000


@pytest.mark.skipif(not (SHARED_TOFU / "full.json").is_file(), reason="no TOFU copy beside the repository")
def test_build_data_reproduces_the_shipped_rows(tofu_mini, tmp_path):
    counts = tofu_mini.build_data(SHARED_TOFU, tmp_path)
    assert counts == {"train.jsonl": 800, "forget_perturbed.jsonl": 80, "retain_perturbed.jsonl": 200}
    for name in counts:
        assert (tmp_path / name).read_bytes() == (tofu_mini.DATA_DIR / name).read_bytes()


def _log(gt: float, para: float, pert: float, n: int = 30) -> dict:
    # TOFU's log layout: question index -> value; small jitter so the KS test sees distributions
    jitter = [0.01 * (i % 7) for i in range(n)]
    return {
        "avg_gt_loss": {str(i): gt + j for i, j in enumerate(jitter)},
        "avg_paraphrased_loss": {str(i): para + j for i, j in enumerate(jitter)},
        "average_perturb_loss": {str(i): [pert + j] * 3 for i, j in enumerate(jitter)},
        "rougeL_recall": {str(i): 0.5 for i in range(n)},
    }


def test_metric_separation_tells_models_apart_only_when_they_differ(tofu_mini):
    target = {"forget": _log(0.1, 1.0, 3.0)}
    retain = {"forget": _log(2.5, 2.0, 2.0)}
    rows = {s.metric: s for s in tofu_mini.metric_separation(target, retain)}
    assert rows["forget_probability"].separates and rows["forget_truth_ratio"].separates
    assert not rows["forget_rougeL_recall"].separates  # identical values
    tofu_mini.check_separation(list(rows.values()))  # no error
    same = tofu_mini.metric_separation(retain, retain)
    assert not any(s.separates for s in same)
    with pytest.raises(RuntimeError, match="does not separate"):
        tofu_mini.check_separation(same)
    assert "| forget_truth_ratio |" in tofu_mini.format_separation(same)


def test_methods_cover_the_issue(tofu_mini):
    settings = tofu_mini.Settings.full()
    methods = tofu_mini.methods_for(settings)
    bases = ["ga", "gd", "npo", "npo_kl", "simnpo", "wga", "tnpo", "idk", "dpo", "rmu"]
    assert set(methods) == {*bases, *(f"{b}_gru" for b in bases), "grun_ga", "grun_npo"}
    assert methods["ga"].retain_loss == "none" and methods["gd"].retain_loss == "nll"
    assert methods["npo_kl"].retain_loss == "kl" and methods["dpo"].retain_loss == "nll"
    # GRU(X) rectifies the same objective as X (tmlr-group/GRU: its whole gradient is projected)
    for base in bases:
        assert methods[f"{base}_gru"] == replace(methods[base], rectification="gru")
    assert methods["rmu_gru"].retain_loss == "embed_diff"
    assert tofu_mini.label("npo_gru") == "GRU(NPO)" and tofu_mini.label("grun_ga") == "GRUN(GA)"
    # a model deep enough for GRUN, edited at the paper's relative depths (20, 25, 31 of 32)
    assert settings.num_layers >= 4 and settings.hidden_size >= 256 and settings.num_authors >= 40
    assert methods["grun_npo"].grun_layers == (2, 3) == replace(settings, num_layers=4).grun_layers()
    assert replace(settings, num_layers=32).grun_layers() == (20, 25, 31)
    assert settings.grid(methods["grun_ga"]) == settings.grun_learning_rates
    assert settings.grid(methods["rmu_gru"]) == settings.rmu_learning_rates
    assert settings.grid(methods["npo"]) == settings.learning_rates


def test_model_cache_key_follows_recipe_and_rows(tofu_mini):
    settings = tofu_mini.Settings.full()
    data = tofu_mini.load_data(tofu_mini.select_authors(40))
    key = tofu_mini.model_cache_key(settings, data)
    assert key == tofu_mini.model_cache_key(replace(settings, seeds=(5,), learning_rates=(1.0,)), data)
    assert key != tofu_mini.model_cache_key(replace(settings, finetune_epochs=3), data)
    assert key != tofu_mini.model_cache_key(settings, tofu_mini.load_data(tofu_mini.select_authors(20)))


def test_the_learning_rate_rule_and_the_verdict_rule(tofu_mini):
    from tofu_mini_matched import (
        DEFAULT_TARGETS,
        FORGET_QUALITY_TARGET,
        Matched,
        RunRecord,
        Target,
        choose_learning_rate,
        paired_verdict,
    )

    def run(lr, utility, seed=0):
        matched = {"p10": None if utility is None else Matched(step=5, point={}, summary={"retain_utility": utility})}
        return RunRecord("GA", seed, lr, 5, 1.0, 0.5, [], matched)

    # the rate that reaches the target with the highest utility; a rate that does not reach it never wins
    assert choose_learning_rate([run(1e-5, None), run(1e-4, 0.4), run(1e-3, 0.6)], "p10") == 1e-3
    assert choose_learning_rate([run(1e-4, 0.5), run(1e-3, 0.5)], "p10") == 1e-4  # tie: the smaller rate
    assert choose_learning_rate([run(1e-4, None), run(1e-3, 0.9, seed=1)], "p10") is None  # seed 0 only
    holds = paired_verdict("A > B", "p10", {0: 0.5, 1: 0.6, 2: 0.55}, {0: 0.4, 1: 0.5, 2: 0.5})
    assert holds.verdict == "holds" and holds.mean == pytest.approx(0.25 / 3) and holds.cell().startswith("holds (+")
    assert paired_verdict("", "", {0: 0.4, 1: 0.4}, {0: 0.5, 1: 0.6}).verdict == "contradicted"
    assert paired_verdict("", "", {0: 0.5, 1: 0.4}, {0: 0.4, 1: 0.5}).verdict == "no clear difference"
    assert paired_verdict("", "", {0: 0.505, 1: 0.505}, {0: 0.5, 1: 0.5}).verdict == "no clear difference"  # < 0.01
    untestable = paired_verdict("", "", {0: 0.5, 1: None}, {0: 0.4, 1: 0.3})
    assert untestable.verdict.startswith("not testable") and "1/2 of 2" in untestable.verdict
    # targets are checked when built, and met as documented
    assert [t.name for t in DEFAULT_TARGETS] == ["p10", "p02"]
    p10, fq = DEFAULT_TARGETS[0], FORGET_QUALITY_TARGET
    assert p10.met({"forget_probability": 0.1}) and not fq.met({"forget_quality": 0.009})
    with pytest.raises(ValueError, match="op must be"):
        Target("x", "forget_probability", "<", 0.1)
    with pytest.raises(ValueError, match="unknown metric"):
        Target("x", "utility", "<=", 0.1)


@pytest.mark.slow
def test_command_line_overrides(tofu_mini, capsys):
    parse = tofu_mini.build_parser().parse_args
    full = tofu_mini.settings_from_args(parse([]))
    assert full == tofu_mini.Settings.full()
    line = "--methods grun_npo --seeds 0,2 --grun-learning-rates 4e-3,1e-2 --grun-steps-factor 7 --no-attacks"
    settings = tofu_mini.settings_from_args(parse(line.split()))
    assert settings == replace(
        full, methods=("grun_npo",), seeds=(0, 2), grun_learning_rates=(4e-3, 1e-2), grun_steps_factor=7,
        robustness_target="",
    )  # fmt: skip
    assert tofu_mini.settings_from_args(parse(["--quick"])).num_layers == tofu_mini.Settings.quick().num_layers
    for bad in ("abc", "0,1e-2", ""):
        with pytest.raises(SystemExit):
            parse(["--grun-learning-rates", bad])
        assert "--grun-learning-rates: expected" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--grun-steps-factor must be >= 1"):
        tofu_mini.settings_from_args(parse(["--grun-steps-factor", "0"]))


@pytest.mark.slow
def test_micro_run_writes_the_matched_tables_and_resumes(tofu_mini, tmp_path):
    from tofu_mini_matched import Target

    settings = replace(
        tofu_mini.Settings.quick(),
        num_authors=2,
        hidden_size=32,
        vocab_size=512,
        finetune_epochs=1,
        max_epochs=1,
        eval_every=2,
        max_new_tokens=4,
        seeds=(0, 1),
        learning_rates=(1e-3, 1e-2),
        grun_learning_rates=(5e-2,),
        methods=("ga", "ga_gru", "grun_ga"),
        workers=1,
        require_separation=False,  # one epoch teaches nothing: the check would stop the run
        relearn_steps=1,
    )
    # "always": met before the first step (the target itself); "never": forget quality cannot exceed 1
    targets = [Target("always", "forget_probability", "<=", 1.0), Target("never", "forget_quality", ">=", 2.0)]
    settings = replace(settings, robustness_target="always")
    cache = tmp_path / "cache"
    result = tofu_mini.run_benchmark(settings, tmp_path / "out", progress=False, cache_dir=cache, targets=targets)
    by_job = {(r["key"], r["seed"], r["learning_rate"]): r for r in result.runs}
    # seed 0 ran the whole grid; seed 1 only the chosen rate
    assert {(k, lr) for k, s, lr in by_job if s == 0} == {("ga", 1e-3), ("ga", 1e-2), ("ga_gru", 1e-3),
                                                       ("ga_gru", 1e-2), ("grun_ga", 5e-2)}  # fmt: skip
    assert {k for k, s, _ in by_job if s == 1} == {"ga", "ga_gru", "grun_ga"}
    ga = by_job[("ga", 0, 1e-2)]
    # the trajectory: step 0, then every 2 steps up to the cap (never met -> the whole cap): one pass over the 20
    # forget questions is 3 steps of 8, rounded up to whole evaluation intervals
    assert [p["step"] for p in ga["trajectory"]] == [0, 2, 4]
    assert ga["matched"]["never"] is None and ga["matched"]["always"]["step"] == 0
    # at step 0 the model is the target: its full evaluation is the target's
    target_summary = result.references["target"]
    assert ga["matched"]["always"]["summary"]["forget_probability"] == pytest.approx(
        target_summary["forget_probability"], rel=1e-5
    )
    assert ga["matched"]["always"]["point"]["forget_probability"] == pytest.approx(
        target_summary["forget_probability"], rel=1e-5
    )
    assert ga["matched"]["always"]["point"]["forget_quality"] == pytest.approx(
        target_summary["forget_quality"], rel=1e-5
    )
    # the attacks: on each method's seed-0 model at its chosen rate, repeated to the same matched point
    assert set(result.robustness) == {"ga", "ga_gru", "grun_ga"}
    assert result.robustness["ga"]["step"] == 0 and result.robustness["ga"]["learning_rate"] == 1e-3
    assert {"relearning", "quantization"} <= set(result.robustness["ga"])
    # its scorer skips the truth ratio (no target needs it) and still gives the full evaluation's forget probability
    point = result.robustness["ga"]["point"]
    assert "forget_quality" not in point
    assert point["forget_probability"] == pytest.approx(target_summary["forget_probability"], rel=1e-5)
    assert result.chosen["ga"]["never"] is None and result.chosen["ga"]["always"] == 1e-3  # tie: the smaller rate
    from tofu_mini_report import matched_tables, verdict_table, write_report

    tables = matched_tables(result)
    assert "Results at matched forgetting: forget prob. ≤ 1" in tables
    assert "| GRU(GA) | 0.001 | 2/2 | 0 ± 0 |" in tables and "| GA | - | 0/2 | not reached |" in tables
    verdicts = verdict_table(result)
    assert "| GRU(GA) > GA | no clear difference (+0.000 ± 0.000) | not testable" in verdicts
    # a second run reuses every finished unlearning run and the cached models
    again = tofu_mini.run_benchmark(settings, tmp_path / "out", progress=False, cache_dir=cache, targets=targets)
    assert again.model_training["cached"] and again.runs == result.runs
    report = write_report(again, tmp_path / "RESULTS.md").read_text()
    assert "matched forgetting" in report and "## Verdicts" in report and "### Robustness" in report
    assert (tmp_path / "tofu_mini_tradeoffs.png").stat().st_size > 0
    assert (tmp_path / "tofu_mini_matched_utility.png").stat().st_size > 0
    assert tofu_mini.main(["--report-from", str(tmp_path / "out"), "--results-md", str(tmp_path / "R2.md")]) == 0
    assert (tmp_path / "R2.md").read_text() == report
