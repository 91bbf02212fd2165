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
    methods = tofu_mini.methods_for(tofu_mini.Settings.full())
    bases = ["ga", "gd", "npo", "simnpo", "wga", "tnpo", "idk", "rmu"]
    assert set(methods) == {*bases, *(f"{b}_gru" for b in bases), "grun_ga", "grun_npo"}
    assert methods["ga"].retain_loss == "none" and methods["gd"].retain_loss == "nll"
    # "+GRU" rectifies the same objective (tmlr-group/GRU: its whole gradient is projected)
    for base in bases:
        assert methods[f"{base}_gru"] == replace(methods[base], rectification="gru")
    assert methods["rmu_gru"].retain_loss == "embed_diff"
    assert tofu_mini.label("npo_gru") == "NPO+GRU" and tofu_mini.label("grun_ga") == "GRUN(GA)"


@pytest.mark.slow
def test_micro_run_produces_a_table_row(tofu_mini, tmp_path):
    settings = replace(
        tofu_mini.Settings.quick(),
        num_authors=2,
        hidden_size=32,
        vocab_size=512,
        finetune_epochs=1,
        unlearn_epochs=1,
        max_new_tokens=4,
        seeds=(0,),
        methods=("npo_gru",),
        require_separation=False,  # one epoch teaches nothing: the check would stop the run
    )
    result = tofu_mini.run_benchmark(settings, tmp_path, progress=False)
    assert [r.method for r in result.rows] == ["target", "retain model", "NPO+GRU"]
    row = result.rows[-1]
    assert row.seed == 0 and 0 <= row.forget_quality <= 1 and row.seconds > 0
    table = tofu_mini.format_table(result.stats)
    assert "| NPO+GRU | 1 |" in table
    assert (tmp_path / "fq_vs_utility.png").stat().st_size > 0
    assert "GRU vs its base method" in (tmp_path / "results.md").read_text()
    # the report can be rebuilt from the run's output directory alone
    loaded, loaded_settings, _ = tofu_mini.load_result(tmp_path)
    assert loaded.stats == result.stats and loaded_settings == settings
    assert tofu_mini.main(["--report-from", str(tmp_path), "--results-md", str(tmp_path / "RESULTS.md")]) == 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "| NPO+GRU | 1 |" in report and "Do the metrics separate" in report
    assert (tmp_path / "tofu_mini_fq_vs_utility.png").stat().st_size > 0
