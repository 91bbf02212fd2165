"""MUSEEvaluator: KnowMem, VerbMem and PrivLeak on small texts of our own with the tiny memorising model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_unlearn import load_tofu
from hf_unlearn.demo.tiny import tiny_llama
from hf_unlearn.evaluation import MUSEEvaluator, load_muse, load_muse_retain_auc, mia_auc, mia_min_k

N = 8  # items per generation split
N_MIA = 40  # texts per PrivLeak split (scoring is cheap; the AUC needs a few dozen)


def qa_rows(config, start=0, n=N):
    data = load_tofu(config, data_dir="bundled")
    rows = data.select(range(start, start + n))
    return [{"question": q, "answer": a} for q, a in zip(rows["question"], rows["answer"])]


def as_text(row):
    # The tiny target model was fine-tuned on exactly this layout (PromptEncoder without a chat template).
    return f"Question: {row['question']}\nAnswer: {row['answer']}"


@pytest.fixture(scope="module")
def muse_data():
    """MUSE-shaped splits built from the bundled TOFU subset: the target model has seen every forget and retain
    question (it was fine-tuned on them) and none of the holdout ones."""
    forget, retain = qa_rows("forget01"), qa_rows("retain99")
    members, nonmembers = qa_rows("forget01", n=N_MIA), qa_rows("holdout01", n=N_MIA)
    return {
        "knowmem/forget_qa": forget[2:],
        "knowmem/forget_qa_icl": forget[:2],
        "knowmem/retain_qa": retain[2:],
        "knowmem/retain_qa_icl": retain[:2],
        "verbmem/forget": [{"prompt": f"Question: {r['question']}\nAnswer:", "gt": " " + r["answer"]} for r in forget],
        "privleak/forget": [{"text": as_text(r)} for r in members],
        "privleak/holdout": [{"text": as_text(r)} for r in nonmembers],
    }


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory, muse_data):
    """The same data as a local directory in the Hub's layout: JSON lists, JSON Lines, and plain lists of texts."""
    root = tmp_path_factory.mktemp("muse")
    for key, rows in muse_data.items():
        config, split = key.split("/")
        (root / config).mkdir(exist_ok=True)
        if config == "privleak":
            (root / config / f"{split}.json").write_text(json.dumps([r["text"] for r in rows]))
        elif split.endswith("icl"):
            (root / config / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            (root / config / f"{split}.json").write_text(json.dumps(rows))
    return root


def evaluator(model, tokenizer, data, **overrides):
    kwargs = dict(knowmem_max_new_tokens=16, verbmem_max_new_tokens=24, batch_size=4, progress=False)
    kwargs.update(overrides)
    if isinstance(data, dict):
        return MUSEEvaluator(model, tokenizer, datasets=data, **kwargs)
    return MUSEEvaluator(model, tokenizer, data_dir=data, **kwargs)


@pytest.fixture(scope="module")
def untrained(tokenizer):
    return tiny_llama(len(tokenizer), num_layers=2, hidden_size=64, seed=3)


def test_memorising_model_scores_higher_than_an_untrained_one(target_model, untrained, tokenizer, muse_dir, tmp_path):
    target = evaluator(target_model, tokenizer, muse_dir).evaluate(output_dir=tmp_path / "target")
    baseline = evaluator(untrained, tokenizer, muse_dir).evaluate(output_dir=tmp_path / "retain")

    # The tiny target model has memorised its training text only partly, but far better than a random model.
    assert target["verbmem_forget_rougeL_f1"] > baseline["verbmem_forget_rougeL_f1"] + 0.1
    assert target["knowmem_forget_rougeL_f1"] >= baseline["knowmem_forget_rougeL_f1"]
    assert target["knowmem_retain_rougeL_f1"] > baseline["knowmem_retain_rougeL_f1"] + 0.05
    # Min-K% tells the forget texts (trained on) from the holdout ones (never seen) for the target model only.
    assert target["privleak_auc"] > 0.85
    assert abs(baseline["privleak_auc"] - 0.5) < 0.2
    assert target["privleak_auc_muse"] == pytest.approx(1 - target["privleak_auc"])
    assert target["privleak"] is None and target["num_items"] == {
        "knowmem_forget": N - 2,
        "knowmem_retain": N - 2,
        "verbmem_forget": N,
        "privleak_forget": N_MIA,
        "privleak_holdout": N_MIA,
    }

    # Per-item logs on disk agree with the summary.
    for name in ("knowmem_forget", "knowmem_retain", "verbmem_forget"):
        items = json.loads((tmp_path / "target" / f"{name}.json").read_text())
        assert [it["index"] for it in items] == list(range(len(items)))
        assert target[f"{name}_rougeL_f1"] == pytest.approx(np.mean([it["rougeL_f1"] for it in items]))
        assert all(isinstance(it["generation"], str) for it in items)
    knowmem = json.loads((tmp_path / "target" / "knowmem_forget.json").read_text())
    assert all("\n\n" not in it["generation"] and "Question" not in it["generation"] for it in knowmem)
    forget = json.loads((tmp_path / "target" / "privleak_forget.json").read_text())
    holdout = json.loads((tmp_path / "target" / "privleak_holdout.json").read_text())
    auc = mia_auc([it["min_k"] for it in forget], [it["min_k"] for it in holdout])
    assert target["privleak_auc"] == pytest.approx(auc)
    assert json.loads((tmp_path / "target" / "summary.json").read_text()) == target

    # PrivLeak relative to the "retain" model (here the untrained one): from its result directory, its summary file
    # or the number; MUSE's formula on MUSE's AUC (1 - ours) and the open-unlearning convention agree.
    expected = (target["privleak_auc_muse"] - baseline["privleak_auc_muse"]) / baseline["privleak_auc_muse"] * 100
    references = [
        (tmp_path / "retain", None),
        (tmp_path / "retain" / "summary.json", None),
        (baseline["privleak_auc"], "hf_unlearn"),
        (baseline["privleak_auc_muse"], "muse"),
    ]
    for reference, convention in references:
        again = evaluator(target_model, tokenizer, muse_dir, metrics=["privleak"]).evaluate(
            retain_auc=reference, retain_auc_convention=convention
        )
        assert again["privleak_retain_auc"] == pytest.approx(baseline["privleak_auc"])
        assert again["privleak_retain_auc_muse"] == pytest.approx(baseline["privleak_auc_muse"])
        assert again["privleak"] == pytest.approx(expected)
    assert expected < -50  # the target model leaks: far below the ideal 0 (MUSE's target models: about -100)


def test_batched_generation_and_scoring_match_one_at_a_time(target_model, tokenizer, muse_data):
    batched = evaluator(target_model, tokenizer, muse_data, batch_size=8, generation_batch_size=5)
    single = evaluator(target_model, tokenizer, muse_data, batch_size=1)
    batched.evaluate()
    single.evaluate()
    for name in ("knowmem_forget", "knowmem_retain", "verbmem_forget"):
        assert [it["generation"] for it in batched.logs[name]] == [it["generation"] for it in single.logs[name]]
    for name in ("privleak_forget", "privleak_holdout"):
        np.testing.assert_allclose(
            [it["min_k"] for it in batched.logs[name]], [it["min_k"] for it in single.logs[name]], rtol=1e-4
        )

    # Min-K% of one text recomputed by hand from an unpadded forward pass.
    text = muse_data["privleak/forget"][3]["text"]
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(target_model(ids).logits[0, :-1].float(), dim=-1)
    token_logprobs = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)
    assert batched.logs["privleak_forget"][3]["min_k"] == pytest.approx(mia_min_k(token_logprobs, 0.4), rel=1e-4)
    assert batched.logs["privleak_forget"][3]["num_tokens"] == ids.shape[1] - 1


def test_verbmem_reference_is_truncated_and_max_length_truncates_scoring(target_model, tokenizer, muse_data):
    ev = evaluator(target_model, tokenizer, muse_data, metrics=["verbmem", "privleak"], verbmem_max_new_tokens=5)
    ev.max_length = 12
    ev.evaluate()
    for item, row in zip(ev.logs["verbmem_forget"], muse_data["verbmem/forget"]):
        first_tokens = tokenizer(row["gt"]).input_ids[:5]  # as MUSE cuts it: BOS and 4 text tokens
        assert first_tokens[0] == tokenizer.bos_token_id
        assert item["gt"] == tokenizer.decode(
            first_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=True
        )
        assert len(item["gt"]) < len(row["gt"].strip())
    assert {it["num_tokens"] for it in ev.logs["privleak_forget"]} == {11}
    assert "knowmem_forget" not in ev.logs


def test_local_directory_matches_in_memory_data(target_model, tokenizer, muse_dir, muse_data):
    assert load_muse("privleak", "holdout", muse_dir) == muse_data["privleak/holdout"]
    assert load_muse("knowmem", "forget_qa_icl", muse_dir) == muse_data["knowmem/forget_qa_icl"]
    # num_icl_examples=0: zero-shot prompts.
    ev = evaluator(target_model, tokenizer, muse_dir, metrics=["knowmem"], num_icl_examples=0, max_items=3)
    assert ev.knowmem["forget"][1] == "" and len(ev.knowmem["forget"][0]) == 3


def test_hub_loading_uses_the_muse_configs(monkeypatch):
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"question": "q", "answer": "a"}]

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    assert load_muse("knowmem", "retain_qa_icl") == [{"question": "q", "answer": "a"}]
    assert calls == [("muse-bench/MUSE-News", "knowmem", "retain_qa_icl")]


class SilentModel(torch.nn.Module):
    """A module with a transformers-like forward / generate (no config, no device) whose generate adds nothing."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def generate(self, input_ids, **kwargs):
        return input_ids


def test_empty_generations_give_explicit_zero_scores(target_model, tokenizer, muse_data):
    ev = evaluator(SilentModel(target_model), tokenizer, muse_data, metrics=["knowmem", "verbmem"])
    with pytest.warns(UserWarning, match="generations are empty"):
        summary = ev.evaluate()
    assert summary["knowmem_forget_rougeL_f1"] == 0.0 and summary["verbmem_forget_rougeL_f1"] == 0.0
    assert all(it["generation"] == "" and it["rougeL_f1"] == 0.0 for it in ev.logs["verbmem_forget"])


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda d: d.update({"knowmem/forget_qa": []}), ValueError, "is empty"),
        (lambda d: d.update({"verbmem/forget": [{"prompt": "x"}]}), ValueError, "lacks the field"),
        (lambda d: d.update({"privleak/holdout": [{"content": "x"}]}), ValueError, r"\['text'\]"),
        (lambda d: d.pop("knowmem/retain_qa"), FileNotFoundError, "retain_qa"),
    ],
)
def test_bad_data_is_reported_before_evaluating(change, error, message, target_model, tokenizer, muse_data, tmp_path):
    data = dict(muse_data)
    change(data)
    with pytest.raises(error, match=message):
        # Splits not supplied are read from an empty local directory.
        MUSEEvaluator(target_model, tokenizer, datasets=data, data_dir=tmp_path, progress=False)


def test_other_bad_inputs(target_model, tokenizer, muse_data, tmp_path):
    with pytest.raises(ValueError, match="Unknown MUSE metric"):
        MUSEEvaluator(target_model, tokenizer, metrics=["knowmem", "mmlu"], datasets=muse_data)
    with pytest.raises(ValueError, match="tokenizer is needed"):
        MUSEEvaluator(target_model, None, datasets=muse_data)
    (tmp_path / "privleak").mkdir()
    (tmp_path / "privleak" / "forget.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_muse("privleak", "forget", tmp_path)
    with pytest.raises(TypeError, match="no `generate`"):
        no_generate = torch.nn.Sequential()
        no_generate.forward = target_model.forward
        MUSEEvaluator(no_generate, tokenizer, metrics=["verbmem"], datasets=muse_data, progress=False).evaluate()
    with pytest.raises(ValueError, match="needs 'privleak'"):
        MUSEEvaluator(target_model, tokenizer, metrics=["verbmem"], datasets=muse_data).evaluate(retain_auc="news")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        load_muse_retain_auc(1.5, "muse")
    # A bare number must say its convention: MUSE's 0.4772 read as ours would give a wrong PrivLeak.
    with pytest.raises(ValueError, match="ambiguous.*retain_auc_convention='muse'"):
        load_muse_retain_auc(0.4772)
    assert load_muse_retain_auc(0.4772, "muse") == pytest.approx(0.5228)
    assert load_muse_retain_auc(0.4772, "hf_unlearn") == 0.4772
    assert load_muse_retain_auc("News") == pytest.approx(0.5228) and load_muse_retain_auc("books") == pytest.approx(
        0.4607
    )
    with pytest.raises(ValueError, match="only for a bare number"):
        load_muse_retain_auc("news", "muse")
    with pytest.raises(ValueError, match="convention must be one of"):
        load_muse_retain_auc(0.5, "MUSE")
    with pytest.raises(ValueError, match="which is missing"):
        MUSEEvaluator(target_model, tokenizer, metrics=["privleak"], datasets=muse_data).evaluate(
            retain_auc_convention="muse"
        )
    (tmp_path / "summary.json").write_text(json.dumps({"knowmem_forget_rougeL_f1": 0.3}))
    with pytest.raises(ValueError, match="no retain-model AUC"):
        load_muse_retain_auc(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_muse_retain_auc(tmp_path / "missing")
    # open-unlearning's result file is read too.
    (tmp_path / "MUSE_EVAL.json").write_text(json.dumps({"mia_min_k": {"agg_value": 0.25}}))
    assert load_muse_retain_auc(tmp_path / "MUSE_EVAL.json") == 0.25


def test_cli_eval_runs_muse_on_a_local_directory(target_model_dir, muse_dir, tmp_path, capsys):
    from hf_unlearn.cli import main

    out = tmp_path / "muse_eval"
    args = ["eval", "--model", str(target_model_dir), "--benchmark", "muse", "--dataset", str(muse_dir)]
    args += ["--max-questions", "4", "--output-dir", str(out), "--no-progress", "--retain-logs", "0.5"]
    assert main([*args, "--output-dir", str(tmp_path / "bare")]) == 2  # a bare number needs its convention
    assert "ambiguous" in capsys.readouterr().err and not (tmp_path / "bare").exists()
    args = [*args[:-2], "--retain-auc-convention", "hf_unlearn", *args[-2:]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{\n") :])
    assert summary["num_items"]["knowmem_forget"] == 4 and summary["num_items"]["privleak_forget"] == 4
    assert summary["privleak_retain_auc"] == 0.5 and summary["privleak"] is not None
    assert json.loads((out / "summary.json").read_text()) == summary
    # The retain model's result can also be its summary file: PrivLeak against itself is 0.
    again = [*args[:-4], "--retain-logs", str(out / "summary.json"), "--output-dir", str(tmp_path / "again")]
    assert main(again) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{\n") :])["privleak"] == pytest.approx(0.0)
