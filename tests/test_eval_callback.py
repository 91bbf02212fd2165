"""TOFUEvalCallback: TOFU evaluation every N steps during unlearning, single-process and on 2 DDP processes."""

from __future__ import annotations

import json

import pytest
from helpers import make_trainer, tiny_config
from launch import REPO, run_accelerate
from transformers import AutoModelForCausalLM

from hf_unlearn.evaluation import TOFUEvalCallback, TOFUEvaluator, merge_tofu_logs, read_tofu_logs

EVAL_KWARGS = dict(forget_split="forget01", data_dir="bundled", max_questions=4, max_new_tokens=6, batch_size=8)
# A hand-made retain model's forget log (TOFU's truth_ratio = 1 / stat), so that forget quality is computed.
RETAIN_FORGET_LOG = {"truth_ratio": {"0": 0.9, "1": 0.7, "2": 1.2, "3": 0.5}}
NUMBERS = ("model_utility", "forget_quality", "forget_probability", "forget_truth_ratio", "retain_probability")


def assert_same_logs(actual, expected, rel=1e-5):
    assert set(actual) == set(expected)
    for split in expected:
        assert set(actual[split]) == set(expected[split]), split
        for metric, values in expected[split].items():
            assert list(actual[split][metric]) == list(values), (split, metric)  # same questions, same order
            if metric == "generated_text":
                assert actual[split][metric] == values, split
            else:
                for index, value in values.items():
                    assert actual[split][metric][index] == pytest.approx(value, rel=rel, abs=1e-7), (split, metric)


def test_sharded_logs_merge_to_the_full_evaluation(target_model, tokenizer):
    evaluator = TOFUEvaluator(target_model, tokenizer, progress=False, **{**EVAL_KWARGS, "max_questions": 5})
    full = evaluator.compute_logs()
    # 3 shards of 5 questions (2, 2, 1) and 7 shards (two of them empty) give back the same logs.
    for count in (3, 7):
        shards = [evaluator.compute_logs(shard=(index, count)) for index in range(count)]
        assert sum(len(s["forget"]["avg_gt_loss"]) for s in shards) == 5
        assert_same_logs(merge_tofu_logs(shards), full)
    with pytest.raises(ValueError, match="overlap"):
        merge_tofu_logs([full, evaluator.compute_logs(shard=(1, 2))])
    with pytest.raises(ValueError, match="shard"):
        evaluator.compute_logs(shard=(2, 2))


def test_callback_evaluates_every_n_steps_and_logs_through_the_trainer(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    (tmp_path / "retain").mkdir()
    (tmp_path / "retain" / "eval_log_forget.json").write_text(json.dumps(RETAIN_FORGET_LOG))
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        small_retain,
        tmp_path / "train",
        forget_loss="ga",
        retain_loss="nll",
        max_steps=5,
        learning_rate=5e-3,
    )
    callback = TOFUEvalCallback(
        every_n_steps=2,
        evaluator_kwargs=EVAL_KWARGS,
        output_dir=tmp_path / "eval",
        retain_logs=tmp_path / "retain",
        eval_on_train_end=True,
    ).attach(trainer)
    trainer.train()

    # Steps 2 and 4, and the last step (5) because of eval_on_train_end.
    logged = [e for e in trainer.state.log_history if "tofu/model_utility" in e]
    assert [e["step"] for e in logged] == [2, 4, 5]
    assert all(set(e) >= {"tofu/model_utility", "tofu/forget_quality", "tofu/forget_truth_ratio"} for e in logged)
    assert [h["step"] for h in callback.history] == [2, 4, 5]
    lines = (tmp_path / "eval" / "eval_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 5]
    assert {p.name for p in (tmp_path / "eval").iterdir()} >= {"step-2", "step-4", "step-5"}
    # Gradient ascent on the forget set lowers the probability of the forget answers between evaluations.
    assert logged[-1]["tofu/forget_probability"] < logged[0]["tofu/forget_probability"]
    assert trainer.model.training, "the evaluation restores train mode"

    # The last evaluation equals a fresh evaluation of the final weights.
    fresh = TOFUEvaluator(trainer.model, tokenizer, progress=False, **EVAL_KWARGS)
    expected = fresh.evaluate(retain_logs=tmp_path / "retain")
    for key in NUMBERS:
        assert callback.history[-1][key] == pytest.approx(expected[key], rel=1e-6), key
    assert_same_logs(read_tofu_logs(tmp_path / "eval" / "step-5"), fresh.logs)


def test_callback_given_to_the_trainer_reports_through_its_log(target_model, tokenizer, small_forget, tmp_path):
    callback = TOFUEvalCallback(
        every_n_steps=2,
        evaluator_kwargs={**EVAL_KWARGS, "splits": ["forget"]},
        log_keys=["forget_truth_ratio", "model_utility"],
    )
    trainer = make_trainer(
        target_model,
        tokenizer,
        small_forget,
        None,
        tmp_path,
        callbacks=[callback],
        forget_loss="ga",
        retain_loss="none",
        max_steps=2,
    )
    trainer.train()
    logged = [e for e in trainer.state.log_history if any(k.startswith("tofu/") for k in e)]
    # bound by the trainer: reported through trainer.log, with that step's training logs; model_utility is None
    # without the non-forget splits: left out, not logged as None.
    assert len(logged) == 1 and logged[0]["step"] == 2
    assert {key for key in logged[0] if key.startswith("tofu/")} == {"tofu/forget_truth_ratio"}


def test_callback_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps"):
        TOFUEvalCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="either"):
        TOFUEvalCallback(every_n_steps=1, evaluator_kwargs={}, evaluator_factory=lambda m, t: None)
    with pytest.raises(FileNotFoundError):
        TOFUEvalCallback(every_n_steps=1, retain_logs=tmp_path / "missing")
    callback = TOFUEvalCallback(every_n_steps=1)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        callback._build_evaluator(object(), None)


def test_callback_refuses_fsdp2_sharded_models_set_up_by_accelerate(target_model, tmp_path):
    """With FSDP from an accelerate config, `args.fsdp` is empty: the parameters tell (DTensors)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import TrainerControl, TrainerState

    callback, args = TOFUEvalCallback(every_n_steps=1), tiny_config(tmp_path)
    callback.on_train_begin(args, TrainerState(), TrainerControl(), model=target_model)  # a plain model is fine
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        fully_shard(target_model)
        with pytest.raises(ValueError, match="FSDP and DeepSpeed ZeRO-3 shard"):
            callback.on_train_begin(args, TrainerState(), TrainerControl(), model=target_model)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_evaluation_equals_single_process(target_model_dir, tokenizer, tmp_path):
    run_accelerate(REPO / "tests" / "scripts" / "ddp_tofu_eval.py", target_model_dir, tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    # Each rank evaluated its own half of the questions (5 per split: 3 on rank 0, 2 on rank 1), twice.
    for rank, report in enumerate(reports):
        assert len(report["evaluated"]) == 2
        for split_indices in report["evaluated"][0].values():
            assert split_indices == [str(i) for i in range(rank, 5, 2)]
    # Both ranks computed and logged the same numbers after each of the 2 steps.
    assert [e["step"] for e in reports[0]["logged"]] == [e["step"] for e in reports[1]["logged"]] == [1, 2]
    assert reports[0]["logged"] == reports[1]["logged"]
    assert reports[0]["history"] == reports[1]["history"]
    # Only rank 0 wrote: one history line per evaluation.
    lines = (tmp_path / "eval" / "eval_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]

    # The evaluation after the last step equals a single-process evaluation of the saved final weights.
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    evaluator = TOFUEvaluator(model, tokenizer, progress=False, **reports[0]["eval_kwargs"])
    expected = evaluator.evaluate()
    assert_same_logs(read_tofu_logs(tmp_path / "eval" / "step-2"), evaluator.logs)
    for key in ("model_utility", "forget_probability", "forget_truth_ratio", "forget_rougeL_recall"):
        assert reports[0]["history"][-1][key] == pytest.approx(expected[key], rel=1e-5), key
    assert set(reports[0]["history"][-1]["num_questions"].values()) == {5}


def test_an_unlearning_trainer_binds_the_callback_itself(
    target_model, tokenizer, small_forget, small_retain, tmp_path
):
    callback = TOFUEvalCallback(every_n_steps=1)
    trainer = make_trainer(target_model, tokenizer, small_forget, small_retain, tmp_path, callbacks=[callback])
    assert callback.trainer is trainer
