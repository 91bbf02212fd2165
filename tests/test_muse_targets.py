"""Forgetting targets on MUSE metrics: StopAtTargetCallback evaluating with MUSEEvaluator (met, saved, stopped, the
saved model meeting the target afresh), the errors of mixed or misplaced settings, and a MUSE comparison end to end."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_trainer
from transformers import AutoModelForCausalLM

from hf_unlearn import load_tofu
from hf_unlearn.compare import CompareConfig
from hf_unlearn.compare import runner as compare_runner
from hf_unlearn.compare.plan import format_plan
from hf_unlearn.evaluation import MUSEEvaluator, StopAtTargetCallback
from hf_unlearn.evaluation.targets import TARGET_BENCHMARKS, benchmark_of

pytestmark = pytest.mark.usefixtures("one_thread")

N = 6  # items per MUSE evaluation split
MUSE_KWARGS = dict(max_items=4, knowmem_max_new_tokens=8, verbmem_max_new_tokens=12, batch_size=8)


def qa_rows(config, start=0, n=N):
    rows = load_tofu(config, data_dir="bundled").select(range(start, start + n))
    return [{"question": q, "answer": a} for q, a in zip(rows["question"], rows["answer"])]


def as_text(row):
    return f"Question: {row['question']}\nAnswer: {row['answer']}"


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory):
    """A tiny folder in MUSE's layout, built from the bundled TOFU subset the tiny target model memorised: the raw
    forget / retain texts to train on, KnowMem, VerbMem and PrivLeak splits."""
    root = tmp_path_factory.mktemp("muse")
    forget, retain = qa_rows("forget01", n=16), qa_rows("retain99", n=32)
    splits = {
        "raw/forget": [{"text": as_text(r)} for r in forget],
        "raw/retain1": [{"text": as_text(r)} for r in retain],
        "knowmem/forget_qa": forget[2:N],
        "knowmem/forget_qa_icl": forget[:2],
        "knowmem/retain_qa": retain[2:N],
        "knowmem/retain_qa_icl": retain[:2],
        "verbmem/forget": [{"prompt": f"Question: {r['question']}\nAnswer:", "gt": " " + r["answer"]} for r in forget],
        "privleak/forget": [{"text": as_text(r)} for r in forget[:12]],
        "privleak/holdout": [{"text": as_text(r)} for r in qa_rows("holdout01", n=12)],
    }
    for key, rows in splits.items():
        config, split = key.split("/")
        (root / config).mkdir(exist_ok=True)
        (root / config / f"{split}.json").write_text(json.dumps(rows))
    return root


def muse_eval(model, tokenizer, muse_dir, metrics=("verbmem",)):
    return MUSEEvaluator(
        model, tokenizer, metrics=list(metrics), data_dir=muse_dir, progress=False, **MUSE_KWARGS
    ).evaluate()


@pytest.fixture(scope="module")
def start(target_model_dir, tokenizer, muse_dir):
    """The tiny target model's MUSE numbers before unlearning."""
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    return muse_eval(model, tokenizer, muse_dir, ("knowmem", "verbmem"))


def test_muse_targets_are_marked_and_cannot_mix():
    assert {TARGET_BENCHMARKS[m] for m in ("knowmem_forget_rougeL_f1", "verbmem_forget_rougeL_f1")} == {"muse"}
    assert TARGET_BENCHMARKS["forget_probability"] == "tofu"
    assert benchmark_of(["verbmem_forget_rougeL_f1<=0.1", "knowmem_forget_rougeL_f1<=0.2"]) == "muse"
    with pytest.raises(ValueError, match="mix TOFU metrics"):
        StopAtTargetCallback(["forget_probability<=0.1", "verbmem_forget_rougeL_f1<=0.1"], every_n_steps=1)
    with pytest.raises(ValueError, match="muse_kwargs"):
        StopAtTargetCallback("verbmem_forget_rougeL_f1<=0.1", every_n_steps=1, evaluator_kwargs={"data_dir": "x"})
    with pytest.raises(ValueError, match="muse_kwargs is for MUSE targets"):
        StopAtTargetCallback("forget_probability<=0.1", every_n_steps=1, muse_kwargs={"data_dir": "x"})
    with pytest.raises(ValueError, match="may not set 'metrics'"):
        StopAtTargetCallback("verbmem_forget_rougeL_f1<=0.1", every_n_steps=1, muse_kwargs={"metrics": ["privleak"]})
    # only the MUSE metrics the targets need are evaluated
    callback = StopAtTargetCallback("verbmem_forget_rougeL_f1<=0.1", every_n_steps=1, muse_kwargs={"max_items": 2})
    assert callback.benchmark == "muse" and callback.muse_kwargs["metrics"] == ["verbmem"]
    both = StopAtTargetCallback(["knowmem_retain_rougeL_f1>=0.1", "verbmem_forget_rougeL_f1<=0.1"], every_n_steps=1)
    assert both.muse_kwargs["metrics"] == ["knowmem", "verbmem"]


def test_unlearning_config_with_mixed_targets_is_refused(target_model, tokenizer, small_forget, tmp_path):
    with pytest.raises(ValueError, match="mix TOFU metrics"):
        make_trainer(
            target_model,
            tokenizer,
            small_forget,
            None,
            tmp_path,
            forget_loss="ga",
            retain_loss="none",
            stop_at_targets=["forget_probability<=0.1", "knowmem_forget_rougeL_f1<=0.1"],
        )


def test_muse_target_met_saved_and_stops(target_model_dir, tokenizer, small_forget, small_retain, muse_dir, start,
                                         tmp_path):  # fmt: skip
    threshold = round(0.5 * start["verbmem_forget_rougeL_f1"], 4)
    assert threshold > 0
    target = f"verbmem_forget_rougeL_f1<={threshold}"
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    out = tmp_path / "run"
    trainer = make_trainer(
        model,
        tokenizer,
        small_forget,
        small_retain,
        out,
        forget_loss="ga",
        retain_loss="nll",
        max_steps=8,
        learning_rate=5e-3,
        stop_at_targets=[target],
        target_eval_steps=1,
        target_eval_kwargs={"data_dir": str(muse_dir), **MUSE_KWARGS},
    )
    trainer.train()
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, StopAtTargetCallback))
    assert callback.benchmark == "muse"
    assert callback.evaluator.metrics == ["verbmem"]  # KnowMem is not generated for a VerbMem target
    step = callback.met[f"target-verbmem_forget_rougeL_f1-{threshold:g}"]
    trajectory = [json.loads(line) for line in (out / "trajectory.jsonl").read_text().splitlines()]
    assert [p["step"] for p in trajectory] == list(range(1, step + 1))  # stopped at the step it was met
    assert trainer.state.global_step == step
    assert trajectory[-1]["met"] == [target] and all(p["met"] == [] for p in trajectory[:-1])
    folder = out / f"target-verbmem_forget_rougeL_f1-{threshold:g}"
    info = json.loads((folder / "target.json").read_text())
    assert info["step"] == step and info["metric"] == "verbmem_forget_rougeL_f1"

    # The saved model, evaluated afresh with MUSEEvaluator, gives the trajectory's number and meets the target.
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    again = muse_eval(saved, tokenizer, muse_dir)["verbmem_forget_rougeL_f1"]
    assert again == pytest.approx(trajectory[-1]["verbmem_forget_rougeL_f1"], abs=1e-6)
    assert again <= threshold


# ---------------------------------------------------------------------------------------------------------------------
# compare on MUSE data
# ---------------------------------------------------------------------------------------------------------------------


def muse_compare(target_dir, muse_dir, threshold, **overrides) -> dict:
    config = {
        "target_model": str(target_dir),
        "data": {"source": "muse", "data_dir": str(muse_dir), "max_questions": 4, "max_new_tokens": 12},
        "methods": {"ga": {"forget_loss": "ga", "retain_loss": "nll", "learning_rates": [5e-3]}},
        "targets": {"v": f"verbmem_forget_rougeL_f1<={threshold:.4f}"},
        "match_tolerance": 1.0,
        "seeds": [0],
        "max_steps": 8,
        "eval_every": 2,
        "utility": "knowmem_retain_rougeL_f1",
        "training": {"per_device_train_batch_size": 4},
        "workers": 1,
        "threads_per_worker": 1,
    }
    config.update(overrides)
    return config


@pytest.mark.parametrize(
    "change, message",
    [
        ({"utility": "model_utility"}, "not computed on muse data"),
        ({"targets": {"p": "forget_probability<=0.1"}}, "are not MUSE metrics"),
        ({"retain_logs": "/tmp/x"}, "retain_logs are TOFU logs"),
    ],
)
def test_muse_compare_config_errors(change, message, target_model_dir, muse_dir):
    with pytest.raises(ValueError, match=message):
        CompareConfig.from_dict(muse_compare(target_model_dir, muse_dir, 0.1, **change))


def test_tofu_compare_refuses_muse_targets_and_utility(target_model_dir):
    base = {
        "target_model": str(target_model_dir),
        "methods": {"ga": {"forget_loss": "ga", "learning_rates": [1e-3]}},
        "max_steps": 4,
    }
    with pytest.raises(ValueError, match="are not TOFU metrics"):
        CompareConfig.from_dict({**base, "targets": {"v": "verbmem_forget_rougeL_f1<=0.1"}})
    with pytest.raises(ValueError, match="not computed on tofu data"):
        CompareConfig.from_dict(
            {**base, "targets": {"p": "forget_probability<=0.1"}, "utility": "knowmem_retain_rougeL_f1"}
        )


def test_muse_compare_dry_run_resolves_the_folder(target_model_dir, muse_dir, tmp_path):
    plan = format_plan(CompareConfig.from_dict(muse_compare(target_model_dir, muse_dir, 0.1)))
    assert f"MUSE from {muse_dir}" in plan and "(16 forget texts)" in plan
    (tmp_path / "raw").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks the MUSE split"):
        format_plan(CompareConfig.from_dict(muse_compare(target_model_dir, tmp_path, 0.1)))


def test_muse_compare_end_to_end(target_model_dir, tokenizer, muse_dir, start, tmp_path):
    threshold = 0.5 * start["verbmem_forget_rougeL_f1"]
    config = CompareConfig.from_dict(muse_compare(target_model_dir, muse_dir, threshold))
    results = compare_runner.run_comparison(config, tmp_path, progress=False)
    target = results["references"]["target"]
    assert target["verbmem_forget_rougeL_f1"] == pytest.approx(start["verbmem_forget_rougeL_f1"])
    assert "privleak_auc" in target  # the full evaluation is MUSEEvaluator's, PrivLeak included where the data has it
    (run,) = results["runs"]
    matched = run["matched"]["v"]
    assert matched is not None, run["trajectory"]
    assert matched["forget_metric"] <= threshold
    assert matched["utility"] == matched["summary"]["knowmem_retain_rougeL_f1"]
    assert set(matched["summary"]["num_items"]) == {
        "knowmem_forget",
        "knowmem_retain",
        "verbmem_forget",
        "privleak_forget",
        "privleak_holdout",
    }
    assert results["chosen"]["ga"]["v"] == 5e-3
    report = (tmp_path / "report.md").read_text()
    assert "VerbMem forget" in report and "KnowMem retain" in report
