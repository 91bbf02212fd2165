"""TOFUEvaluator, TOFU logs and summaries, plots: hand-checked aggregation, end-to-end runs on the tiny model."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from hf_unlearn import load_tofu
from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama
from hf_unlearn.evaluation import (
    TOFU_LOG_FILES,
    TOFU_UTILITY_KEYS,
    TOFUEvaluator,
    load_retain_truth_ratio_stats,
    plot_fq_vs_utility,
    plot_metrics_over_steps,
    read_tofu_logs,
    tofu_summary_from_logs,
)
from hf_unlearn.losses import mean_nll

LN2, LN4 = math.log(2.0), math.log(4.0)
SUMMARY_KEYS = {
    *TOFU_UTILITY_KEYS,
    "model_utility",
    "forget_probability",
    "forget_rougeL_recall",
    "forget_truth_ratio",
    "forget_quality",
    "split",
    "num_questions",
}


def quick_evaluator(model, tokenizer, **overrides) -> TOFUEvaluator:
    kwargs = dict(forget_split="forget01", data_dir="bundled", max_questions=6, max_new_tokens=8, batch_size=8)
    kwargs.update(overrides)
    return TOFUEvaluator(model, tokenizer, progress=False, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# aggregation from logs, checked by hand against TOFU's formulas
# ------------------------------------------------------------------------------------------------------------------


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# Per-question values; the comments give the TOFU quantities they imply.
HAND_LOGS = {
    "eval_log_forget.json": {
        "avg_gt_loss": {"0": LN2, "1": LN4, "2": 0.0},  # probabilities 1/2, 1/4, 1 -> 7/12
        "avg_paraphrased_loss": {"0": LN2, "1": LN2, "2": LN2},
        # stats exp(mean(pert) - para): 2, 1, 1/2 -> min(stat, 1/stat) = 1/2, 1, 1/2 -> 2/3
        "average_perturb_loss": {"0": [LN4, LN4], "1": [LN2, LN2], "2": [0.0, 0.0]},
        "rougeL_recall": {"0": 1.0, "1": 0.5, "2": 0.0},  # 1/2
    },
    "eval_log.json": {
        "avg_gt_loss": {"0": LN2, "1": LN2},  # 1/2
        "avg_paraphrased_loss": {"0": LN2, "1": LN4},
        # stats 2 and 1/2 -> max(0, 1 - 1/stat) = 1/2, 0 -> 1/4
        "average_perturb_loss": {"0": [LN4, LN4, LN4], "1": [LN2]},
        "rougeL_recall": {"0": 0.5, "1": 1.0},  # 3/4
    },
    # Published-by-others style: no avg_paraphrased_loss (TOFU uses the answer here), no truth_ratio, no ROUGE
    # (recomputed from generated_text = [input, generation, ground truth]).
    "eval_real_author_wo_options.json": {
        # option-normalised probabilities: 1/2 / (1/2 + 1/4 + 1/4) = 1/2, 1/2 / (1/2 + 1/2 + 1/2) = 1/3 -> 5/12
        "avg_gt_loss": {"0": LN2, "1": LN2},
        # stats with the answer as paraphrase: 2, 1 -> 1/2, 0 -> 1/4
        "average_perturb_loss": {"0": [LN4, LN4], "1": [LN2, LN2]},
        "generated_text": {
            "0": ["Question: Who wrote Hamlet?", "William Shakespeare wrote it", "William Shakespeare"],  # recall 1
            "1": ["Question: Who wrote 1984?", "", "George Orwell"],  # an empty generation: recall 0
        },
    },
    "eval_real_world_wo_options.json": {
        "avg_gt_loss": {"0": 0.0},  # 1 / (1 + 3 * 1/2) = 2/5
        "avg_paraphrased_loss": {"0": 0.0},
        "average_perturb_loss": {"0": [LN2, LN2, LN2]},  # stat 2 -> 1/2
        "rougeL_recall": {"0": 0.8},
    },
}
HAND_COMPONENTS = {
    "retain_probability": 1 / 2,
    "retain_rougeL_recall": 3 / 4,
    "retain_truth_ratio": 1 / 4,
    "real_authors_probability": 5 / 12,
    "real_authors_rougeL_recall": 1 / 2,
    "real_authors_truth_ratio": 1 / 4,
    "world_facts_probability": 2 / 5,
    "world_facts_rougeL_recall": 4 / 5,
    "world_facts_truth_ratio": 1 / 2,
}
# Harmonic mean of the nine: 9 / sum(1 / v).
HAND_UTILITY = 9 / (2 + 4 / 3 + 4 + 12 / 5 + 2 + 4 + 5 / 2 + 5 / 4 + 2)
# The retain model's forget-split stats 4, 8, 16 all exceed ours (2, 1, 1/2): KS statistic D = 1, and the exact
# two-sided p-value for n = m = 3 is P(D >= 1) = 2 / C(6, 3) = 0.1. Logged as TOFU's truth_ratio (1 / stat) only.
RETAIN_TRUTH_RATIOS = {"0": 1 / 4, "1": 1 / 8, "2": 1 / 16}


@pytest.fixture
def hand_logs(tmp_path):
    for name, log in HAND_LOGS.items():
        write_json(tmp_path / "model" / name, log)
    write_json(tmp_path / "retain" / "eval_log_forget.json", {"truth_ratio": RETAIN_TRUTH_RATIOS})
    return tmp_path


def test_summary_from_logs_matches_hand_computation(hand_logs):
    summary = tofu_summary_from_logs(hand_logs / "model", hand_logs / "retain")
    assert SUMMARY_KEYS <= set(summary)
    for key, expected in HAND_COMPONENTS.items():
        assert summary[key] == pytest.approx(expected, rel=1e-12), key
    assert summary["forget_probability"] == pytest.approx(7 / 12)
    assert summary["forget_rougeL_recall"] == pytest.approx(1 / 2)
    assert summary["forget_truth_ratio"] == pytest.approx(2 / 3)
    assert summary["model_utility"] == pytest.approx(HAND_UTILITY, rel=1e-12)
    assert summary["forget_quality"] == pytest.approx(0.1)
    assert summary["num_questions"] == {"retain": 2, "real_authors": 2, "world_facts": 1, "forget": 3}

    alone = tofu_summary_from_logs(hand_logs / "model")
    assert alone["forget_quality"] is None
    assert alone["model_utility"] == summary["model_utility"]
    # The model compared with itself is indistinguishable.
    assert tofu_summary_from_logs(hand_logs / "model", hand_logs / "model")["forget_quality"] == pytest.approx(1.0)


def test_other_log_layouts_are_read(hand_logs):
    # TOFU's eval_log_aggregated.json bundle, as a directory or as a file.
    bundle = hand_logs / "bundle" / "eval_log_aggregated.json"
    write_json(bundle, HAND_LOGS)
    expected = tofu_summary_from_logs(hand_logs / "model", hand_logs / "retain")
    assert tofu_summary_from_logs(bundle.parent, hand_logs / "retain") == expected
    assert tofu_summary_from_logs(bundle, hand_logs / "retain") == expected
    # open-unlearning's TOFU_EVAL.json for the retain model: per-question truth-ratio scores (P_pert / P_para).
    ou = hand_logs / "ou" / "TOFU_EVAL.json"
    scores = {k: {"score": v} for k, v in RETAIN_TRUTH_RATIOS.items()}
    write_json(ou, {"forget_truth_ratio": {"agg_value": 0.2, "value_by_index": scores}})
    np.testing.assert_allclose(np.sort(load_retain_truth_ratio_stats(ou.parent)), [4.0, 8.0, 16.0])
    assert tofu_summary_from_logs(hand_logs / "model", ou)["forget_quality"] == pytest.approx(0.1)
    # Only some splits: components of the missing ones are absent and model utility is None.
    only_forget = tofu_summary_from_logs(hand_logs / "model" / "eval_log_forget.json")
    assert only_forget["model_utility"] is None and "retain_probability" not in only_forget


def test_bad_logs_give_clear_errors(tmp_path, hand_logs):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No TOFU evaluation logs"):
        read_tofu_logs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_tofu_logs(tmp_path / "missing")
    write_json(tmp_path / "noforget" / "eval_log.json", HAND_LOGS["eval_log.json"])
    with pytest.raises(ValueError, match="no forget-split log"):
        tofu_summary_from_logs(hand_logs / "model", tmp_path / "noforget")
    broken = {k: v for k, v in HAND_LOGS["eval_log.json"].items() if k != "avg_gt_loss"}
    write_json(tmp_path / "broken" / "eval_log.json", broken)
    with pytest.raises(ValueError, match=r"eval_log\.json.*'avg_gt_loss'"):
        tofu_summary_from_logs(tmp_path / "broken")
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "eval_log.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_tofu_logs(tmp_path / "bad_json")


# ------------------------------------------------------------------------------------------------------------------
# end to end on the tiny model and the bundled subset
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, target_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    out = tmp_path_factory.mktemp("tofu_logs")
    padding_side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    evaluator = quick_evaluator(model, tokenizer)
    summary = evaluator.evaluate(output_dir=out)
    # Left padding for generation is built by the evaluator: the user's tokenizer is untouched.
    assert (tokenizer.padding_side, tokenizer.pad_token) == (padding_side, pad_token)
    return model, evaluator, summary, out


def test_end_to_end_structure(evaluated):
    _, evaluator, summary, out = evaluated
    assert SUMMARY_KEYS <= set(summary)
    assert summary["split"] == "forget01" and summary["forget_quality"] is None
    assert summary["num_questions"] == {"retain": 6, "real_authors": 6, "world_facts": 6, "forget": 6}
    for key in [*TOFU_UTILITY_KEYS, "forget_probability", "forget_rougeL_recall", "forget_truth_ratio"]:
        assert 0.0 <= summary[key] <= 1.0, key
    assert 0.0 <= summary["model_utility"] <= 1.0
    assert {p.name for p in out.iterdir()} == {*TOFU_LOG_FILES.values(), "eval_log_aggregated.json", "summary.json"}
    assert json.loads((out / "summary.json").read_text()) == summary

    forget_rows = load_tofu("forget01_perturbed", data_dir="bundled")
    for split, n_perturbed in [("forget", 5), ("retain", 5), ("real_authors", 3), ("world_facts", 3)]:
        log = json.loads((out / TOFU_LOG_FILES[split]).read_text())
        assert log == evaluator.logs[split]
        assert list(log["avg_gt_loss"]) == [str(i) for i in range(6)]
        for i in log["avg_gt_loss"]:
            assert log["avg_gt_loss"][i] == pytest.approx(log["gt_loss"][i] / log["num_token_gt"][i])
            assert len(log["average_perturb_loss"][i]) == n_perturbed
            stat_inverse = math.exp(log["avg_paraphrased_loss"][i] - np.mean(log["average_perturb_loss"][i]))
            assert log["truth_ratio"][i] == pytest.approx(stat_inverse)  # TOFU logs P_perturbed / P_paraphrased
            prompt, generation, truth = log["generated_text"][i]
            assert isinstance(generation, str) and prompt.startswith("Question:")
            if split == "forget":
                assert truth == forget_rows[int(i)]["answer"]
        if split in ("real_authors", "world_facts"):  # TOFU scores the answer as the "paraphrase" there
            assert log["avg_paraphrased_loss"] == log["avg_gt_loss"]
            assert set(log["normalized_gt_loss"]) == set(log["avg_gt_loss"])


def test_summary_from_logs_round_trip(evaluated):
    _, _, summary, out = evaluated
    assert tofu_summary_from_logs(out) == summary
    with_retain = tofu_summary_from_logs(out, retain_logs_dir=out)
    assert with_retain["forget_quality"] == pytest.approx(1.0)
    assert {k: v for k, v in with_retain.items() if k != "forget_quality"} == {
        k: v for k, v in summary.items() if k != "forget_quality"
    }


@torch.no_grad()
def test_batched_scoring_equals_one_at_a_time(evaluated, tokenizer):
    model, evaluator, _, _ = evaluated
    rows = load_tofu("forget01_perturbed", data_dir="bundled")
    encoder = PromptEncoder(tokenizer)
    log = evaluator.logs["forget"]
    for i in range(3):
        row = rows[i]
        prompt = [{"role": "user", "content": row["question"]}]
        for answer, expected in [
            (row["answer"], log["avg_gt_loss"][str(i)]),
            (row["paraphrased_answer"], log["avg_paraphrased_loss"][str(i)]),
            (row["perturbed_answer"][2], log["average_perturb_loss"][str(i)][2]),
        ]:
            batch = pad_examples([encoder.encode(prompt, answer)], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            assert mean_nll(logits, batch["labels"]).item() == pytest.approx(expected, abs=1e-5)
    # Logits only from the last prompt token on (logits_to_keep) or at every position: the same scores.
    pairs = [(q.prompt_ids, a) for q in evaluator.questions["retain"] for a in q.perturbed_ids]
    kept = evaluator.score(pairs)
    evaluator._logits_to_keep = False
    try:
        full = evaluator.score(pairs)
    finally:
        evaluator._logits_to_keep = True
    np.testing.assert_array_equal(kept[1], full[1])
    np.testing.assert_allclose(kept[0], full[0], rtol=1e-5)


def test_memorised_model_beats_random_model(evaluated, tokenizer, tmp_path):
    _, _, summary, out = evaluated
    random_model = tiny_llama(len(tokenizer), num_layers=2, hidden_size=64, seed=1)
    random_summary = quick_evaluator(random_model, tokenizer, splits=["forget"], max_new_tokens=4).evaluate(
        retain_logs=out
    )
    assert summary["forget_probability"] > 2 * random_summary["forget_probability"]
    assert 0.0 <= random_summary["forget_quality"] <= 1.0
    assert random_summary["model_utility"] is None


def test_generation_of_a_memorised_question_has_high_rouge(target_model, tokenizer):
    forget = load_tofu("forget01", data_dir="bundled")
    finetune_on_qa(target_model, tokenizer, forget["question"][:2], forget["answer"][:2], epochs=20, progress=False)
    evaluator = quick_evaluator(target_model, tokenizer, splits=["forget"], max_questions=2, max_new_tokens=48)
    summary = evaluator.evaluate()
    assert summary["forget_rougeL_recall"] >= 0.9
    assert evaluator.logs["forget"]["generated_text"]["1"][1] == forget["answer"][1]


def test_peft_model(evaluated, tokenizer):
    model, evaluator, _, _ = evaluated
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    peft_eval = quick_evaluator(peft_model, tokenizer, splits=["forget", "world_facts"], max_questions=3)
    peft_eval.evaluate()
    # A fresh LoRA adapter (B = 0) leaves the model unchanged.
    for split in ("forget", "world_facts"):
        for i, value in peft_eval.logs[split]["avg_gt_loss"].items():
            assert value == pytest.approx(evaluator.logs[split]["avg_gt_loss"][i], abs=1e-5)
        for i, value in peft_eval.logs[split]["generated_text"].items():
            assert value == evaluator.logs[split]["generated_text"][i]
    # ...and the adapter is really in the forward pass once it is not zero.
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.5)
    question = peft_eval.questions["forget"][0]
    sums, counts = peft_eval.score([(question.prompt_ids, question.answer_ids)])
    assert abs(sums[0] / counts[0] - peft_eval.logs["forget"]["avg_gt_loss"]["0"]) > 1e-3


# ------------------------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------------------------


def test_bad_splits_give_clear_errors(target_model, tokenizer):
    good = {"question": "Q?", "answer": "A.", "paraphrased_answer": "A!", "perturbed_answer": ["B."]}
    with pytest.raises(ValueError, match=r"forget split \(forget01_perturbed\) lacks.*'paraphrased_answer'.*found"):
        quick_evaluator(
            target_model, tokenizer, splits=["forget"], datasets={"forget": [{"question": "Q?", "answer": "A."}]}
        )
    with pytest.raises(ValueError, match=r"retain split \(retain_perturbed\) is empty"):
        quick_evaluator(target_model, tokenizer, splits=["retain"], datasets={"retain": []})
    with pytest.raises(ValueError, match="Row 1 .* empty 'perturbed_answer'"):
        quick_evaluator(
            target_model, tokenizer, splits=["forget"], datasets={"forget": [good, {**good, "perturbed_answer": []}]}
        )
    with pytest.raises(ValueError, match="Unknown TOFU split"):
        quick_evaluator(target_model, tokenizer, splits=["holdout"])
    with pytest.raises(FileNotFoundError, match="forget07_perturbed"):
        quick_evaluator(target_model, tokenizer, forget_split="forget07")
    # A perturbed answer given as a plain string is one option, as in TOFU.
    ev = quick_evaluator(
        target_model, tokenizer, splits=["forget"], datasets={"forget": [{**good, "perturbed_answer": "B."}]}
    )
    assert len(ev.questions["forget"][0].perturbed_ids) == 1


def test_model_smaller_than_the_tokenizer_is_rejected_up_front(tokenizer):
    small = tiny_llama(len(tokenizer) - 10, num_layers=1, hidden_size=32)
    with pytest.raises(ValueError, match=rf"tokenizer has {len(tokenizer)} tokens.*embedding matrix only"):
        quick_evaluator(small, tokenizer)


def test_empty_generation_scores_zero(target_model, tokenizer):
    evaluator = quick_evaluator(target_model, tokenizer, splits=["forget"], max_questions=3)

    def eos_only(input_ids, attention_mask, **kwargs):  # a model that stops at once
        return torch.cat([input_ids, torch.full_like(input_ids[:, :1], tokenizer.eos_token_id)], dim=1)

    target_model.generate = eos_only
    with pytest.warns(UserWarning, match="3 of 3 generations on the TOFU forget split are empty"):
        summary = evaluator.evaluate()
    assert summary["forget_rougeL_recall"] == 0.0
    assert all(text[1] == "" for text in evaluator.logs["forget"]["generated_text"].values())


def test_tokenizer_without_pad_token_falls_back_to_eos(target_model, tokenizer):
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    with pytest.warns(UserWarning, match="no pad token"):
        evaluator = quick_evaluator(target_model, no_pad, splits=["world_facts"], max_questions=2, max_new_tokens=2)
    assert evaluator.pad_token_id == tokenizer.eos_token_id
    evaluator.evaluate()
    assert no_pad.pad_token is None and tokenizer.pad_token is not None


# ------------------------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------------------------


def test_plots_write_nontrivial_pngs(tmp_path):
    runs = {
        "target": {"forget_quality": 1e-21, "model_utility": 0.62},
        "retain": {"forget_quality": 1.0, "model_utility": 0.6},
        "npo": {"forget_quality": 0.02, "model_utility": 0.46},
        "ga": {"forget_quality": 0.0, "model_utility": 0.0},
        "no retain logs": {"forget_quality": None, "model_utility": 0.5},
    }
    scatter = plot_fq_vs_utility(runs, tmp_path / "plots" / "fq_vs_mu.png")
    history = [{"step": s, "forget_quality": 10.0**-s, "model_utility": 0.6 - 0.01 * s} for s in range(0, 50, 10)]
    lines = plot_metrics_over_steps(history, ["forget_quality", "model_utility"], tmp_path / "steps.png")
    for path in (scatter, lines):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.01  # not a blank canvas
    with pytest.raises(ValueError, match="No run has both"):
        plot_fq_vs_utility({"a": {"forget_quality": None, "model_utility": 0.5}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="None of the keys"):
        plot_metrics_over_steps(history, ["missing"], tmp_path / "y.png")
