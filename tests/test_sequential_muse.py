"""hf_unlearn.sequential on MUSE data: MUSE-News's sustainability folds (fold 1 = raw/forget, fold k =
sust/forget_k) as requests, on a tiny local folder in MUSE's layout built from the bundled TOFU subset the tiny target
model memorised. A full-parameter sequence end to end (each fold's NLL goes up after its own request; the NLL against
a hand computation), GRUN and LoRA sequences, a fold already met at its start, the config errors, the dry runs
(local folder, and the Hub offline without loading) and --report-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_unlearn import load_tofu
from hf_unlearn.cli import main as cli_main
from hf_unlearn.sequential import SequentialConfig
from hf_unlearn.sequential import runner as seq_runner
from hf_unlearn.sequential.plan import format_plan

pytestmark = pytest.mark.usefixtures("one_thread")

FOLD_SIZE = 8  # texts per fold
MAX_ITEMS = 4  # evaluated items per MUSE split and texts per fold's NLL
#: out of reach (a ROUGE-L F1 is >= 0): every fold trains its whole budget, as MUSE's sustainability script does
UNREACHABLE = "knowmem_forget_rougeL_f1<=-1"
GA = {"forget_loss": "ga", "retain_loss": "nll", "learning_rate": 5e-3}
GRUN = {"kind": "grun", "forget_loss": "ga", "learning_rate": 1e-2, "method_kwargs": {"layers": [1], "rank": 2}}
LORA = {
    "kind": "peft",
    "forget_loss": "ga",
    "retain_loss": "nll",
    "learning_rate": 1e-2,
    "method_kwargs": {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]},
}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sequential" / "muse_news_sust.yaml"


def _qa(config: str, start: int, n: int) -> list[dict[str, str]]:
    rows = load_tofu(config, data_dir="bundled").select(range(start, start + n))
    return [{"question": q, "answer": a} for q, a in zip(rows["question"], rows["answer"])]


def _text(row: dict[str, str]) -> dict[str, str]:
    return {"text": f"Question: {row['question']}\nAnswer: {row['answer']}"}


@pytest.fixture(scope="module")
def muse_dir(tmp_path_factory):
    """MUSE's layout with four disjoint folds of forget01 (raw/forget, sust/forget_2..4), raw/retain1, KnowMem,
    VerbMem and PrivLeak on fold 1's rows (MUSE's standard forget set is raw/forget's)."""
    root = tmp_path_factory.mktemp("muse_sust")
    folds = [_qa("forget01", FOLD_SIZE * i, FOLD_SIZE) for i in range(4)]
    retain, fold_1 = _qa("retain99", 0, 16), folds[0]
    splits = {
        "raw/forget": [_text(r) for r in folds[0]],
        **{f"sust/forget_{k}": [_text(r) for r in folds[k - 1]] for k in (2, 3, 4)},
        "raw/retain1": [_text(r) for r in retain],
        "knowmem/forget_qa": folds[0][2:6],
        "knowmem/forget_qa_icl": folds[0][:2],
        "knowmem/retain_qa": retain[2:6],
        "knowmem/retain_qa_icl": retain[:2],
        "verbmem/forget": [{"prompt": f"Question: {r['question']}\nAnswer:", "gt": f" {r['answer']}"} for r in fold_1],
        "privleak/forget": [_text(r) for r in fold_1],
        "privleak/holdout": [_text(r) for r in _qa("holdout01", 0, FOLD_SIZE)],
    }
    for key, rows in splits.items():
        config, split = key.split("/")
        (root / config).mkdir(exist_ok=True)
        (root / config / f"{split}.json").write_text(json.dumps(rows))
    return root


def muse_config(target_dir, muse_dir, methods, **overrides) -> dict:
    config = {
        "target_model": str(target_dir),
        "data": {"source": "muse", "data_dir": str(muse_dir), "max_questions": MAX_ITEMS, "max_new_tokens": 8},
        "requests": {"limit": 3},
        "methods": methods,
        "targets": [UNREACHABLE],
        "max_steps": 4,
        "eval_every": 4,
        "training": {"per_device_train_batch_size": 4, "max_length": 48},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def full_run(target_model_dir, muse_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential_muse_full")
    raw = muse_config(target_model_dir, muse_dir, {"ga": GA})
    (out / "config.yaml").write_text(json.dumps(raw))  # JSON is YAML: --report-only and the dry run read it
    return SequentialConfig.from_dict(raw), seq_runner.run_sequence(SequentialConfig.from_dict(raw), out), out


# ---------------------------------------------------------------------------------------------------------------------
# a full-parameter sequence
# ---------------------------------------------------------------------------------------------------------------------


def test_full_parameter_muse_sequence_end_to_end(full_run):
    config, results, out = full_run
    assert config.utility == "knowmem_retain_rougeL_f1" and config.requests.muse_folds == [1, 2, 3, 4]
    assert [r["split"] for r in results["requests"]] == ["raw/forget", "sust/forget_2", "sust/forget_3"]
    assert [r["questions"] for r in results["requests"]] == [FOLD_SIZE] * 3
    assert results["requests"][1]["evaluated"] == [f"sust/forget_2/{i}" for i in range(MAX_ITEMS)]
    records = results["methods"]["ga"]["requests"]
    assert [r["request"] for r in records] == [1, 2, 3]
    for record in records:
        assert record["steps"] == 4 and record["met"] == {}  # the target is out of reach: each fold runs its budget
        assert record["trajectory"][0]["step"] == 0 and "knowmem_forget_rougeL_f1" in record["trajectory"][0]
        per = record["forget"]["per_request"]
        assert [p["split"] for p in per] == ["raw/forget", "sust/forget_2", "sust/forget_3"]
        assert [p["seen"] for p in per] == [j <= record["request"] for j in (1, 2, 3)]
        assert all(p["nll"] > 0 and p["texts"] == MAX_ITEMS for p in per)
        assert record["forget"]["cumulative"] is None  # TOFU's cumulative forget quality: not on MUSE
        summary = record["utility"]
        assert {"knowmem_forget_rougeL_f1", "knowmem_retain_rougeL_f1", "verbmem_forget_rougeL_f1"} <= set(summary)
        assert not any(k.startswith("privleak") for k in summary)  # PrivLeak only when asked
        assert (out / f"methods/ga/seed_0/request_{record['request']}/eval/fold_nll.json").is_file()
    # GA raises the NLL of the fold it unlearns: each fold's NLL is higher after its own request than before it
    before = results["references"]["target"]["forget"]["per_request"]
    for k, record in enumerate(records, start=1):
        previous = before if k == 1 else records[k - 2]["forget"]["per_request"]
        assert record["forget"]["per_request"][k - 1]["nll"] > previous[k - 1]["nll"], k
    # the model carries over: fold 2 starts where fold 1 left MUSE's forget numbers
    start = records[1]["trajectory"][0]["knowmem_forget_rougeL_f1"]
    assert start == pytest.approx(records[0]["utility"]["knowmem_forget_rougeL_f1"], abs=1e-6)
    report = (out / "report.md").read_text()
    assert "MUSE-News sustainability" in report and "| 0 (target) |" in report and "| 3 | sust/forget_3 |" in report
    assert "NLL of this fold" in report and "not computed on MUSE" in report
    assert "cumulative forget quality |" not in report
    assert (out / "sequential.png").is_file()


def test_fold_nll_is_the_pooled_teacher_forced_nll_of_the_truncated_texts(full_run, target_model_dir, muse_dir):
    config, results, _ = full_run
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(target_model_dir)
    texts = [row["text"] for row in json.loads((muse_dir / "sust/forget_2.json").read_text())[:MAX_ITEMS]]
    total = count = 0
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"][:48]])
        assert ids.shape[1] == 48  # the texts are longer than max_length: truncation matters here
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss  # the mean NLL of every token after the first
        total, count = total + float(loss) * (ids.shape[1] - 1), count + ids.shape[1] - 1
    fold_2 = results["references"]["target"]["forget"]["per_request"][1]
    assert fold_2["tokens"] == count
    assert fold_2["nll"] == pytest.approx(total / count, rel=1e-5)


def test_report_only_rebuilds_the_muse_report(full_run, capsys):
    _, _, out = full_run
    (out / "report.md").unlink()
    args = ["sequential", "--config", str(out / "config.yaml"), "--output-dir", str(out), "--report-only"]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "## ga + nll (`ga`, full)" in text and "Mean per-token NLL of each fold" in text
    assert (out / "report.md").read_text() in text


def test_a_fold_met_at_its_start_trains_nothing(target_model_dir, muse_dir, tmp_path):
    raw = muse_config(target_model_dir, muse_dir, {"ga": GA}, targets=["verbmem_forget_rougeL_f1<=1"],
                      requests={"muse_folds": [1, 3]})  # fmt: skip
    results = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path, report=False)
    assert [r["split"] for r in results["requests"]] == ["raw/forget", "sust/forget_3"]
    target = results["references"]["target"]["forget"]["per_request"]
    for record in results["methods"]["ga"]["requests"]:
        assert record["steps"] == 0 and record["met"] == {"verbmem_forget_rougeL_f1<=1": 0}
        assert record["stored_bytes"] == 0
        assert [p["nll"] for p in record["forget"]["per_request"]] == pytest.approx([p["nll"] for p in target])


def test_without_the_stop_every_fold_trains_its_budget_and_records_where_it_met_the_target(
    target_model_dir, muse_dir, tmp_path
):
    # the same target as above, met before the first step: with stop_at_targets false nothing stops the folds
    raw = muse_config(target_model_dir, muse_dir, {"ga": GA}, targets=["verbmem_forget_rougeL_f1<=1"],
                      requests={"muse_folds": [1, 3]}, stop_at_targets=False)  # fmt: skip
    results = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path, report=False)
    for record in results["methods"]["ga"]["requests"]:
        assert record["steps"] == 4 and record["met"] == {"verbmem_forget_rougeL_f1<=1": 0}
        assert [p["step"] for p in record["trajectory"]] == [0, 4] and record["stored_bytes"] > 0
    assert "Every request trains its whole budget" in format_plan(SequentialConfig.from_dict(raw))


def test_claims_need_the_stop(target_model_dir, muse_dir):
    raw = muse_config(target_model_dir, muse_dir, {"ga": GA, "gd": GA}, stop_at_targets=False, claims=["ga > gd"])
    with pytest.raises(ValueError, match="matched forgetting"):
        SequentialConfig.from_dict(raw)


def test_privleak_when_asked_is_relative_to_the_retain_model(target_model_dir, tokenizer, muse_dir, tmp_path):
    from hf_unlearn.demo.tiny import tiny_llama

    retain_dir = tmp_path / "retain_model"  # never saw the forget texts (untrained): the retain model
    tiny_llama(len(tokenizer), num_layers=2, hidden_size=64, seed=1).save_pretrained(retain_dir)
    raw = muse_config(target_model_dir, muse_dir, {"ga": GA}, requests={"limit": 2}, max_steps=2, eval_every=2,
                      privleak=True, retain_model=str(retain_dir))  # fmt: skip
    results = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path / "out")
    refs = results["references"]
    retain_auc = refs["retain model"]["utility"]["privleak_auc"]
    assert refs["retain model"]["utility"]["privleak"] is None  # the reference itself has none
    for summary in [refs["target"]["utility"]] + [r["utility"] for r in results["methods"]["ga"]["requests"]]:
        assert summary["privleak_retain_auc"] == pytest.approx(retain_auc)
        assert summary["privleak"] is not None and summary["num_items"]["privleak_holdout"] == MAX_ITEMS
    assert len(refs["retain model"]["forget"]["per_request"]) == 2  # the retain model's fold NLLs, for reference
    assert "| PrivLeak |" in (tmp_path / "out" / "report.md").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# GRUN and LoRA
# ---------------------------------------------------------------------------------------------------------------------


def test_grun_and_lora_muse_sequences(target_model_dir, muse_dir, tmp_path):
    pytest.importorskip("pyreft")
    raw = muse_config(target_model_dir, muse_dir, {"grun": GRUN, "lora": LORA}, requests={"limit": 2})
    raw["training"]["max_length"] = 128  # room after GRUN's 32-word prompts
    results = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path)
    grun = results["methods"]["grun"]["requests"]
    assert [r["steps"] for r in grun] == [4, 4] and all(0 < r["stored_bytes"] < 100_000 for r in grun)
    first, second = (
        load_file(tmp_path / f"methods/grun/seed_0/request_{k}/model/grun_interventions.safetensors") for k in (1, 2)
    )
    assert {key.split(".")[0] for key in second} == {"request_0", "request_1"}
    for key, value in first.items():  # request 2 stacked its module on request 1's, which did not change
        assert torch.equal(value, second[key]), key
    target = results["references"]["target"]["forget"]["per_request"]
    own = grun[0]["forget"]["per_request"][0]["nll"]  # GRUN's edit at the end of the prompt reaches the NLL
    assert abs(own - target[0]["nll"]) > 1e-4
    gates = grun[-1]["gates"]
    assert list(gates["mean"]) == ["request_1", "request_2"]
    assert set(gates["mean"]["request_1"]) == {"retain", "request_1", "request_2"}
    lora = results["methods"]["lora"]["requests"]
    assert [r["steps"] for r in lora] == [4, 4]
    for k in (1, 2):
        assert (tmp_path / f"methods/lora/seed_0/request_{k}/adapter/adapter_model.safetensors").is_file()
    # the merged adapter of fold 1 is where fold 2 starts: its first cheap evaluation is fold 1's final one
    assert lora[1]["trajectory"][0]["knowmem_forget_rougeL_f1"] == pytest.approx(
        lora[0]["utility"]["knowmem_forget_rougeL_f1"], abs=1e-6
    )
    report = (tmp_path / "report.md").read_text()
    assert "Gates after request 2" in report and "## GRUN(ga) (`grun`, grun)" in report


# ---------------------------------------------------------------------------------------------------------------------
# the config and the dry run
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"requests": {"size": 4}}, "requests.size: a MUSE sequence's requests are MUSE-News's sustainability folds"),
        ({"requests": {"count": 2}}, "requests.count: a MUSE sequence"),
        ({"requests": {"authors": 1}}, "requests.authors: a MUSE sequence"),
        ({"requests": {"muse_folds": [2, 1]}}, "in increasing order"),
        ({"requests": {"muse_folds": [1, 5]}}, "among \\[1, 2, 3, 4\\]"),
        ({"requests": {"muse_folds": [1, 2], "size": 4}}, r"files \(MUSE: muse_folds\), got \['size', 'muse_folds'\]"),
        ({"targets": ["forget_probability<=0.1"]}, "MUSE data is evaluated with MUSE metrics"),
        ({"targets": ["forget_probability<=0.1", UNREACHABLE]}, "targets mix TOFU metrics"),
        ({"utility": "model_utility"}, "utility 'model_utility' is not computed on muse data"),
        ({"utility": "retain_utility"}, "utility 'retain_utility' is not computed on muse data"),
        ({"retain_logs": "/tmp/x"}, "retain_logs are TOFU logs"),
        ({"claims": [{"better": "ga", "than": "ga", "metric": "cumulative_forget_quality"}]}, "cumulative forget"),
    ],
)
def test_muse_config_errors_name_the_problem(change, message, target_model_dir, muse_dir):
    with pytest.raises(ValueError, match=message):
        SequentialConfig.from_dict(muse_config(target_model_dir, muse_dir, {"ga": GA}, **change))


def test_muse_keys_are_refused_on_tofu_data_and_tofu_configs_keep_their_defaults(target_model_dir):
    tofu = {
        "target_model": str(target_model_dir),
        "data": {"source": "tofu", "data_dir": "bundled", "forget_split": "forget01"},
        "methods": {"ga": GA},
        "targets": ["forget_probability<=0.1"],
        "max_steps": 2,
    }
    config = SequentialConfig.from_dict(tofu)
    assert config.utility == "model_utility" and config.requests.muse_folds is None
    assert "privleak" not in config.stable_dict() and "muse_folds" not in config.stable_dict()["requests"]
    with pytest.raises(ValueError, match="muse_folds are MUSE's sustainability folds"):
        SequentialConfig.from_dict({**tofu, "requests": {"muse_folds": [1, 2]}})
    with pytest.raises(ValueError, match="privleak is MUSE's PrivLeak"):
        SequentialConfig.from_dict({**tofu, "privleak": True})
    with pytest.raises(ValueError, match="not computed on tofu data"):
        SequentialConfig.from_dict({**tofu, "utility": "knowmem_retain_rougeL_f1"})


def test_muse_config_round_trips(target_model_dir, muse_dir):
    config = SequentialConfig.from_dict(muse_config(target_model_dir, muse_dir, {"ga": GA}, privleak=True))
    again = SequentialConfig.from_dict(config.to_dict())
    assert again == config and again.fingerprint("ga") == config.fingerprint("ga")
    assert config.stable_dict()["privleak"] is True


def test_dry_run_prints_the_folds_of_a_local_folder(full_run, capsys):
    _, _, out = full_run
    assert cli_main(["sequential", "--config", str(out / "config.yaml"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert (
        "Requests: 3 (MUSE-News sustainability folds 1, 2, 3): #1 raw/forget 8 texts / 4 evaluated, "
        "#2 sust/forget_2 8 texts / 4 evaluated, #3 sust/forget_3 8 texts / 4 evaluated" in text
    )
    assert "on MUSE's standard forget set" in text and "utility knowmem_retain_rougeL_f1" in text
    assert "Cumulative forget quality is TOFU's" in text


def test_dry_run_on_the_hub_prints_the_plan_without_loading(target_model_dir, monkeypatch):
    import hf_unlearn.evaluation.muse as muse

    def no_loading(*args, **kwargs):
        raise AssertionError("a dry run loads no MUSE data")

    monkeypatch.setattr(muse, "load_muse", no_loading)
    raw = muse_config(target_model_dir, None, {"ga": GA}, requests={}, max_steps=None, max_epochs=5)
    raw["data"] = {"source": "muse"}
    text = format_plan(SequentialConfig.from_dict(raw))
    assert "Requests: 4 (MUSE-News sustainability folds 1, 2, 3, 4)" in text
    assert "#3 sust/forget_3, #4 sust/forget_4 (texts counted when the run loads them from the Hub)" in text
    assert "At most 5 epochs of each request" in text
    assert "the Hub (muse-bench/MUSE-News)" in text and "5 epochs x 1" in text


def test_the_shipped_muse_example_dry_runs_offline(capsys):
    assert cli_main(["sequential", "--config", str(EXAMPLE), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "Hub model muse-bench/MUSE-News_target" in text
    assert "Requests: 4 (MUSE-News sustainability folds 1, 2, 3, 4)" in text and "GRU(NPO)" in text
    assert "Every request trains its whole budget" in text  # as MUSE's sustainability script trains each fold
