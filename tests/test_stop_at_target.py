"""Stop at a forgetting target: cheap evaluations along a run, a checkpoint where each target is first met, the
trajectory, and the stop once every target is met (UnlearningConfig.stop_at_targets, StopAtTargetCallback)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import make_trainer
from transformers import AutoModelForCausalLM

from hf_unlearn import UnlearningConfig
from hf_unlearn.evaluation import (
    TARGET_METRICS,
    StopAtTargetCallback,
    Target,
    TOFUEvaluator,
    parse_target,
    parse_targets,
    target_logs,
)

pytestmark = pytest.mark.usefixtures("one_thread")

EVAL_KWARGS = dict(forget_split="forget01", data_dir="bundled", max_questions=4, max_new_tokens=6, batch_size=8)
# A hand-made retain model's forget log (TOFU's truth_ratio = 1 / stat), so that forget quality is computed.
RETAIN_FORGET_LOG = {"truth_ratio": {"0": 0.9, "1": 0.7, "2": 1.2, "3": 0.5}}
# Targets no run meets (probabilities are >= 0; forget quality is a p-value; the forget truth ratio and ROUGE-L
# recall are <= 1): the reference run evaluates every metric at every step and trains to the end.
IMPOSSIBLE = [
    "forget_probability<=-1",
    "forget_truth_ratio>=2",
    "forget_quality>=2",
    "forget_rougeL_recall>=2",
]
MAX_STEPS = 6
SETTINGS = dict(forget_loss="ga", retain_loss="nll", max_steps=MAX_STEPS, learning_rate=5e-3, target_eval_steps=1)


def retain_logs_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "eval_log_forget.json").write_text(json.dumps(RETAIN_FORGET_LOG))
    return path


def train(model_dir, tokenizer, forget, retain, out, targets, **overrides):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    kwargs = {**EVAL_KWARGS, "retain_logs": str(retain_logs_dir(out.parent / "retain"))}
    trainer = make_trainer(
        model,
        tokenizer,
        forget,
        retain,
        out,
        stop_at_targets=targets,
        target_eval_kwargs=kwargs,
        **{**SETTINGS, **overrides},
    )
    trainer.train()
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, StopAtTargetCallback))
    return trainer, callback


def read_trajectory(out):
    return [json.loads(line) for line in (out / "trajectory.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(target_model_dir, tokenizer, small_forget, small_retain, tmp_path_factory):
    """A run that meets no target: every metric at every step, and the log's warning."""
    out = tmp_path_factory.mktemp("reference") / "run"
    logger = logging.getLogger("hf_unlearn.evaluation.callback")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        trainer, callback = train(target_model_dir, tokenizer, small_forget, small_retain, out, IMPOSSIBLE)
    finally:
        logger.removeHandler(handler)
    return dict(out=out, trainer=trainer, callback=callback, records=records)


def first_drop(values: list[float], after: int) -> int:
    """The first step > `after` whose value is below every earlier one (steps count from 1)."""
    for step in range(max(after, 1) + 1, len(values) + 1):
        if values[step - 1] < min(values[: step - 1]):
            return step
    raise AssertionError(f"the forget probability never drops after step {after}: {values}")


def threshold_met_first_at(values: list[float], step: int) -> float:
    """A forget-probability threshold that the trajectory meets first at `step` (see `first_drop`)."""
    return (min(values[: step - 1]) + values[step - 1]) / 2


# ---------------------------------------------------------------------------------------------------------------------
# targets and options
# ---------------------------------------------------------------------------------------------------------------------


def test_targets_parse_and_bad_targets_name_the_allowed_metrics(tmp_path):
    assert parse_target("forget_probability<=0.1") == Target("forget_probability", 0.1, "below")
    assert parse_target(" forget_quality >= 5e-2 ") == Target("forget_quality", 0.05, "above")
    assert parse_targets("forget_probability<=0.1,forget_quality>=0.05") == parse_targets(
        ["forget_probability<=0.1", "forget_quality>=0.05"]
    )
    target = parse_target("forget_probability<=0.1")
    assert target.name == "target-forget_probability-0.1" and str(target) == "forget_probability<=0.1"
    assert target.met({"forget_probability": 0.1}) and not target.met({"forget_probability": 0.2})
    assert not target.met({"forget_probability": None}) and not target.met({})
    assert parse_target("forget_quality>=0.05").met({"forget_quality": 0.5})
    for bad in ("forget_prob<=0.1", "forget_probability<0.1", "0.1"):
        with pytest.raises(ValueError) as err:
            parse_targets(bad)
        assert all(metric in str(err.value) for metric in TARGET_METRICS), str(err.value)
    with pytest.raises(ValueError, match="no number"):
        parse_targets("forget_probability<=abc")
    with pytest.raises(ValueError, match="twice"):
        parse_targets("forget_probability<=0.1,forget_probability<=0.1")
    with pytest.raises(ValueError, match="direction"):
        Target("forget_probability", 0.1, "under")

    # the config option: comma-separated strings, as the command line gives them; errors at construction
    config = UnlearningConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        stop_at_targets=["forget_probability<=0.1,forget_quality>=0.05"],
        target_eval_kwargs='{"forget_split": "forget01"}',
    )
    assert config.stop_at_targets == ["forget_probability<=0.1", "forget_quality>=0.05"]
    assert config.target_eval_kwargs == {"forget_split": "forget01"}
    with pytest.raises(ValueError, match="allowed metrics are .*forget_truth_ratio"):
        UnlearningConfig(output_dir=str(tmp_path), use_cpu=True, stop_at_targets=["forget_prob<=0.1"])
    with pytest.raises(ValueError, match="target_eval_steps"):
        UnlearningConfig(output_dir=str(tmp_path), use_cpu=True, target_eval_steps=0)
    with pytest.raises(ValueError, match="retain model's TOFU logs"):
        StopAtTargetCallback("forget_quality>=0.05", every_n_steps=1)
    with pytest.raises(ValueError, match="at least one target"):
        StopAtTargetCallback([], every_n_steps=1)


def test_command_line_flag_and_recipe_defaults(tmp_path):
    from hf_unlearn.commands.train import check_option_names, make_parser, target_eval_defaults

    argv = [
        "--output_dir",
        str(tmp_path),
        "--use_cpu",
        "true",
        "--stop_at_targets",
        "forget_probability<=0.1,forget_quality>=0.05",
        "--target_eval_steps",
        "5",
        "--dataset_name",
        "bundled",
        "--forget_split",
        "forget01",
        "--retain_logs",
        str(tmp_path / "retain"),
    ]
    parser = make_parser()
    check_option_names(parser, argv)
    script, training_args, _ = parser.parse_args_and_config(args=argv)
    assert training_args.stop_at_targets == ["forget_probability<=0.1", "forget_quality>=0.05"]
    assert training_args.target_eval_steps == 5
    target_eval_defaults(script, training_args)
    assert training_args.target_eval_kwargs == {
        "forget_split": "forget01",
        "data_dir": "bundled",
        "retain_logs": str(tmp_path / "retain"),
        "max_new_tokens": 200,
    }


def test_only_what_the_targets_need_is_scored(target_model, tokenizer):
    evaluator = TOFUEvaluator(target_model, tokenizer, progress=False, **EVAL_KWARGS, splits=["retain", "forget"])
    full = evaluator.compute_logs()
    generated = []
    evaluator.generate = lambda prompts, desc="": generated.append(len(prompts)) or ["an answer"] * len(prompts)
    scored = []
    score = evaluator.score
    evaluator.score = lambda pairs, desc="": scored.append(len(pairs)) or score(pairs, desc)

    logs = target_logs(evaluator, ["forget_probability"])
    assert set(logs) == {"forget"} and set(logs["forget"]) == {"avg_gt_loss"}
    assert scored == [4] and generated == []  # 4 answers; no paraphrase, no perturbed answer, no generation
    for index, value in full["forget"]["avg_gt_loss"].items():
        assert logs["forget"]["avg_gt_loss"][index] == pytest.approx(value, rel=1e-5)

    logs = target_logs(evaluator, ["forget_truth_ratio", "retain_probability"], shard=(1, 2))
    assert set(logs) == {"retain", "forget"} and set(logs["retain"]) == {"avg_gt_loss"}
    assert set(logs["forget"]) == {"avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss"}
    assert list(logs["forget"]["avg_gt_loss"]) == ["1", "3"] and generated == []
    for index in ("1", "3"):
        assert logs["forget"]["average_perturb_loss"][index] == pytest.approx(
            full["forget"]["average_perturb_loss"][index], rel=1e-5
        )

    logs = target_logs(evaluator, ["forget_rougeL_recall"])
    assert generated == [4] and set(logs["forget"]) == {"avg_gt_loss", "rougeL_recall"}


# ---------------------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------------------


def test_no_target_met_trains_to_the_end_and_says_so(reference, tokenizer):
    trainer, callback, out = reference["trainer"], reference["callback"], reference["out"]
    assert trainer.state.global_step == MAX_STEPS and callback.met == {}
    trajectory = read_trajectory(out)
    assert [p["step"] for p in trajectory] == list(range(1, MAX_STEPS + 1))  # one line per evaluation
    assert all(p["met"] == [] for p in trajectory)
    assert not list(out.glob("target-*"))
    warned = [message for message in reference["records"] if "without meeting" in message]
    assert len(warned) == 1 and "forget_probability<=-1" in warned[0], reference["records"]
    probabilities = [p["forget_probability"] for p in trajectory]
    assert probabilities[-1] < probabilities[0], "gradient ascent lowers the forget probability"
    logged = [e for e in trainer.state.log_history if "target/forget_probability" in e]
    assert [e["step"] for e in logged] == list(range(1, MAX_STEPS + 1))

    # The last point is the TOFU evaluation of the final weights: same numbers, metric by metric.
    fresh = TOFUEvaluator(trainer.model, tokenizer, progress=False, **EVAL_KWARGS).evaluate(
        retain_logs=out.parent / "retain"
    )
    for metric in ("forget_probability", "forget_truth_ratio", "forget_quality", "forget_rougeL_recall"):
        assert trajectory[-1][metric] == pytest.approx(fresh[metric], rel=1e-5), metric


def test_an_easy_target_stops_early_with_the_model_of_that_step(
    reference, target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    values = [p["forget_probability"] for p in read_trajectory(reference["out"])]
    step = first_drop(values, after=1)
    assert step < MAX_STEPS
    target = Target("forget_probability", threshold_met_first_at(values, step), "below")
    out = tmp_path / "run"
    trainer, callback = train(target_model_dir, tokenizer, small_forget, small_retain, out, [str(target)])

    assert trainer.state.global_step == step and callback.met == {target.name: step}
    trajectory = read_trajectory(out)
    assert [p["step"] for p in trajectory] == list(range(1, step + 1))
    assert trajectory[-1]["met"] == [str(target)] and all(p["met"] == [] for p in trajectory[:-1])
    folder = out / target.name
    assert folder.name == f"target-forget_probability-{target.threshold:g}"
    assert {"model.safetensors", "unlearning.json", "README.md", "target.json", "trainer_state.json"} <= {
        p.name for p in folder.iterdir()
    }
    info = json.loads((folder / "target.json").read_text())
    assert info["step"] == step and info["target"] == str(target)
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == step
    assert json.loads((folder / "unlearning.json").read_text())["forget_loss"] == "ga"

    # The checkpoint is the model at that step (the run stopped there) and meets the target evaluated afresh.
    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    for (name, a), b in zip(trainer.model.state_dict().items(), saved.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    fresh = TOFUEvaluator(saved, tokenizer, progress=False, **EVAL_KWARGS).evaluate()
    assert fresh["forget_probability"] == pytest.approx(trajectory[-1]["forget_probability"], rel=1e-5)
    assert fresh["forget_probability"] == pytest.approx(values[step - 1], rel=1e-5)
    assert target.met(fresh)


def test_two_targets_two_checkpoints_and_the_stop_after_the_second(
    reference, target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    values = [p["forget_probability"] for p in read_trajectory(reference["out"])]
    first = first_drop(values, after=1)
    second = first_drop(values, after=first)
    targets = [Target("forget_probability", threshold_met_first_at(values, step), "below") for step in (first, second)]
    out = tmp_path / "run"
    # given as one comma-separated string, as on the command line
    trainer, callback = train(
        target_model_dir, tokenizer, small_forget, small_retain, out, [",".join(map(str, targets))]
    )
    assert callback.met == {targets[0].name: first, targets[1].name: second}
    assert trainer.state.global_step == second
    assert len(read_trajectory(out)) == second
    for target, step in zip(targets, (first, second)):
        folder = out / target.name
        assert json.loads((folder / "target.json").read_text())["step"] == step
        saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        fresh = TOFUEvaluator(saved, tokenizer, progress=False, **EVAL_KWARGS).evaluate()
        assert fresh["forget_probability"] == pytest.approx(values[step - 1], rel=1e-5)
        assert target.met(fresh)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_take_the_same_decision(reference, target_model_dir, tokenizer, tmp_path):
    from launch import REPO, run_accelerate

    # A target the single-process run meets at its first drop of the forget probability: the 2-process run (other
    # batches) is expected to meet it along its 6 steps too.
    values = [p["forget_probability"] for p in read_trajectory(reference["out"])]
    target = Target("forget_probability", threshold_met_first_at(values, first_drop(values, after=1)), "below")
    script = REPO / "tests" / "scripts" / "ddp_stop_at_target.py"
    run_accelerate(script, target_model_dir, tmp_path, str(target))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    # each rank scored its own share of the 5 forget questions at every evaluation
    for rank, report in enumerate(reports):
        assert report["evaluated"] and all(e == [str(i) for i in range(rank, 5, 2)] for e in report["evaluated"])
    # the same merged numbers, hence the same decisions, on both ranks; the run stopped where the target was met
    assert reports[0]["trajectory"] == reports[1]["trajectory"]
    assert reports[0]["met"] == reports[1]["met"] == {target.name: reports[0]["global_step"]}
    assert reports[0]["global_step"] == reports[1]["global_step"] < reports[0]["max_steps"]
    out = tmp_path / "train"
    assert read_trajectory(out) == reports[0]["trajectory"]  # written once, by rank 0
    # the checkpoint meets the target evaluated afresh in one process, with the numbers of the sharded evaluation
    saved = AutoModelForCausalLM.from_pretrained(out / target.name, dtype=torch.float32)
    fresh = TOFUEvaluator(saved, tokenizer, progress=False, **reports[0]["eval_kwargs"]).evaluate()
    assert fresh["forget_probability"] == pytest.approx(reports[0]["trajectory"][-1]["forget_probability"], rel=1e-5)
    assert target.met(fresh)


def test_given_eval_steps_and_evaluation_at_start(target_model_dir, tokenizer, small_forget, small_retain, tmp_path):
    """`eval_steps` evaluates exactly there (and stops after the last), `evaluate_at_start` adds step 0."""
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    callback = StopAtTargetCallback(IMPOSSIBLE[:1], every_n_steps=100, evaluator_kwargs=EVAL_KWARGS,
                                    eval_steps=[2, 3], evaluate_at_start=True)  # fmt: skip
    trainer = make_trainer(model, tokenizer, small_forget, small_retain, tmp_path / "run", callbacks=[callback],
                           **SETTINGS)  # fmt: skip
    trainer.train()
    assert [p["step"] for p in callback.trajectory] == [0, 2, 3]
    assert trainer.state.global_step == 3  # nothing to evaluate after step 3
    assert callback.seconds > 0


def test_resumed_run_remembers_the_targets_met(tmp_path):
    """A run resumed at step 4 reads back the trajectory up to there and the targets met, not what came after."""
    callback = StopAtTargetCallback("forget_probability<=0.5", every_n_steps=2, evaluator_kwargs=EVAL_KWARGS)
    lines = [
        {"step": 2, "forget_probability": 0.7, "met": []},
        {"step": 4, "forget_probability": 0.4, "met": ["forget_probability<=0.5"]},
        {"step": 6, "forget_probability": 0.3, "met": []},
    ]
    path = tmp_path / "trajectory.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    callback._restore(path, 4)
    assert [p["step"] for p in callback.trajectory] == [2, 4]
    assert callback.met == {"target-forget_probability-0.5": 4}
    fresh = StopAtTargetCallback("forget_probability<=0.5", every_n_steps=2, evaluator_kwargs=EVAL_KWARGS)
    fresh._restore(path, 3)
    assert fresh.met == {}
