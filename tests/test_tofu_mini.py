"""The TOFU-mini benchmark's pieces (examples/benchmarks/tofu_mini.py) in tiny settings."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

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


def test_model_cache_key_follows_recipe_and_rows(tofu_mini):
    settings = tofu_mini.Settings.full()
    data = tofu_mini.load_data(tofu_mini.select_authors(40))
    key = tofu_mini.model_cache_key(settings, data)
    assert key == tofu_mini.model_cache_key(replace(settings, workers=1, rmu_norm_scale=3.0), data)
    assert key != tofu_mini.model_cache_key(replace(settings, finetune_epochs=3), data)
    assert key != tofu_mini.model_cache_key(settings, tofu_mini.load_data(tofu_mini.select_authors(20)))


def test_the_shipped_configs_match_the_models_the_script_builds(tofu_mini):
    """examples/compare/tofu_mini*.yaml read what --prepare writes, and RMU steers the layer the script measures."""
    from hf_unlearn.compare import CompareConfig

    folder = REPO / "examples" / "compare"
    for name, settings in (
        ("tofu_mini.yaml", tofu_mini.Settings.full()),
        ("tofu_mini_quick.yaml", tofu_mini.Settings.quick()),
    ):
        config = CompareConfig.from_yaml(folder / name)
        prepared = Path(config.target_model).parent
        assert Path(config.retain_model).parent == prepared and Path(config.data.forget).parent == prepared / "data"
        for spec in config.methods.values():
            if spec.forget_loss == "rmu":
                assert spec.forget_loss_kwargs["layer"] == settings.rmu_layer
                assert spec.retain_loss_kwargs["layer"] == settings.rmu_layer


@pytest.mark.slow
def test_prepare_then_compare_then_results_md(tofu_mini, tmp_path):
    """A micro TOFU-mini: --prepare writes the models and rows, hf_unlearn.compare runs on them, --results-md writes
    the separation check and the comparison's report."""
    from hf_unlearn.compare import CompareConfig
    from hf_unlearn.compare.runner import run_comparison

    settings = tofu_mini.Settings(num_authors=2, hidden_size=32, num_layers=2, vocab_size=512, finetune_epochs=2,
                                  rmu_layer=0, workers=1)  # fmt: skip
    prepared = tmp_path / "prepared"
    info = tofu_mini.prepare_for_compare(settings, prepared, cache_dir=tmp_path / "cache", progress=False)
    assert info["rmu_steering_coeff"] > 0 and list(info["split"]["forget"]) == [199]
    rows = {n: (prepared / "data" / f"{n}.jsonl").read_text().count("\n") for n in ("forget", "retain", "forget_eval")}
    assert rows == {"forget": 20, "retain": 20, "forget_eval": 20}
    again = tofu_mini.prepare_for_compare(settings, tmp_path / "again", cache_dir=tmp_path / "cache", progress=False)
    assert again["training"]["cached"]
    data = {k: str(prepared / "data" / f"{k}.jsonl") for k in ("forget", "retain", "forget_eval", "retain_eval")}
    config = CompareConfig.from_dict({
        "target_model": str(prepared / "target"), "retain_model": str(prepared / "retain"),
        "data": {"source": "files", **data, "max_new_tokens": 4, "max_questions": 6},
        "methods": {"ga": {"forget_loss": "ga", "retain_loss": "none", "learning_rates": [1e-2]}},
        "targets": {"never": "forget_probability<=1e-12"}, "seeds": [0], "max_steps": 4, "eval_every": 2,
        "utility": "retain_utility",
    })  # fmt: skip
    run_comparison(config, tmp_path / "out", progress=False)
    assert tofu_mini.main(["--results-md", str(tmp_path / "RESULTS.md"), "--compare-output", str(tmp_path / "out"),
                           "--prepared", str(prepared)]) == 0  # fmt: skip
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Do the metrics separate the target from the retain model?" in text and "| forget_truth_ratio |" in text
    assert "### never: forget_probability ≤ 1e-12" in text and "(2 authors x 20 questions" in text
    assert (tmp_path / "tofu_mini_trajectories.png").stat().st_size > 0 and "tofu_mini_trajectories.png" in text
