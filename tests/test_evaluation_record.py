"""Every number says what it is: evaluation results record their settings and data, and mixing two evaluations made
differently is warned about."""

from __future__ import annotations

import json
import warnings

import pytest

from hf_unlearn.data import DataSource, data_source, load_tofu, with_source
from hf_unlearn.evaluation.logs import tofu_summary_from_logs
from hf_unlearn.evaluation.record import RECORD_KEY, compare_records, is_benchmark_result, read_record
from hf_unlearn.evaluation.tofu import TOFUEvaluator

pytestmark = pytest.mark.usefixtures("one_thread")


def evaluate(model, tokenizer, output_dir=None, retain_logs=None, **overrides):
    kwargs = dict(forget_split="forget01", data_dir="bundled", splits=["forget"], max_new_tokens=4, progress=False)
    kwargs.update(overrides)
    return TOFUEvaluator(model, tokenizer, **kwargs).evaluate(output_dir=output_dir, retain_logs=retain_logs)


def test_load_tofu_tags_where_the_rows_come_from(tmp_path):
    bundled = load_tofu("forget01", data_dir="bundled")
    source = data_source(bundled)
    assert (source.kind, source.dataset, source.config, source.num_rows) == (
        "bundled",
        "locuslab/TOFU",
        "forget01",
        40,
    )
    assert "not the benchmark" in source.describe() and not source.is_hub_dataset
    selected = data_source(bundled.select(range(3)))  # the origin survives a selection, with its own rows
    assert (selected.kind, selected.config, selected.num_rows) == ("bundled", "forget01", 3)
    assert selected.fingerprint == data_source(bundled.select(range(3)).to_list()).fingerprint
    (tmp_path / "forget01.json").write_text("".join(json.dumps(row) + "\n" for row in bundled.to_list()))
    local = data_source(load_tofu("forget01", data_dir=tmp_path))
    assert local.kind == "local" and local.path.endswith("forget01.json") and local.fingerprint == source.fingerprint
    given = data_source(bundled.to_list())
    assert given.kind == "in_memory" and given.fingerprint == source.fingerprint and given.num_rows == 40
    hub = DataSource("hub", dataset="locuslab/TOFU", config="forget10")
    assert hub.is_hub_dataset and "from the Hugging Face Hub" in hub.describe()
    tagged = with_source(bundled.select(range(2)), hub)
    assert data_source(tagged).num_rows == 2 and data_source(tagged).kind == "hub"
    with pytest.raises(ValueError, match="kind must be one of"):
        DataSource("s3")


def test_summary_and_aggregated_log_record_settings_data_and_why_partial(target_model, tokenizer, tmp_path):
    summary = evaluate(target_model, tokenizer, tmp_path / "eval", max_questions=3, max_new_tokens=8)
    record = summary[RECORD_KEY]
    assert record["max_new_tokens"] == 8 and record["max_questions"] == 3 and record["splits"] == ["forget"]
    forget = record["data"]["forget"]
    assert forget["kind"] == "bundled" and forget["config"] == "forget01_perturbed" and forget["questions"] == 3
    assert any("first 3 of 40 forget questions" in reason for reason in record["partial"])
    assert any("at most 8 new tokens" in reason for reason in record["partial"])
    assert any("without the retain, real_authors, world_facts" in reason for reason in record["partial"])
    assert not is_benchmark_result(record)
    aggregated = json.loads((tmp_path / "eval" / "eval_log_aggregated.json").read_text())
    assert aggregated[RECORD_KEY] == record == read_record(tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())[RECORD_KEY] == record
    # the logs still read as TOFU logs, and the record comes back with the summary recomputed from them
    assert tofu_summary_from_logs(tmp_path / "eval")[RECORD_KEY] == record


def test_only_a_complete_evaluation_on_the_hubs_data_is_a_benchmark_result():
    hub = {"kind": "hub", "dataset": "locuslab/TOFU"}
    assert is_benchmark_result({"partial": [], "data": {"forget": hub, "retain": hub}})
    assert not is_benchmark_result({"partial": ["the first 3 of 400 forget questions"], "data": {"forget": hub}})
    assert not is_benchmark_result({"partial": [], "data": {"forget": hub, "retain": {"kind": "bundled"}}})
    assert not is_benchmark_result(None) and not is_benchmark_result({})


def test_retain_logs_made_otherwise_are_warned_about(target_model, tokenizer, tmp_path):
    evaluate(target_model, tokenizer, tmp_path / "retain")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same questions and settings: no warning
        same = evaluate(target_model, tokenizer, retain_logs=tmp_path / "retain")
    assert same["forget_quality"] == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="other forget questions.*max_questions None here, 5 there"):
        evaluate(target_model, tokenizer, tmp_path / "fewer", max_questions=5)
        evaluate(target_model, tokenizer, retain_logs=tmp_path / "fewer")
    with pytest.warns(UserWarning, match="max_new_tokens 4 here, 16 there"):
        evaluate(target_model, tokenizer, tmp_path / "longer", max_new_tokens=16)
        evaluate(target_model, tokenizer, retain_logs=tmp_path / "longer")
    with pytest.warns(UserWarning, match="other forget questions"):
        tofu_summary_from_logs(tmp_path / "retain", tmp_path / "fewer")


def test_compare_records_puts_what_changes_forget_quality_first():
    ours = {"use_chat_template": False, "max_new_tokens": 200, "data": {"forget": {"questions_fingerprint": "a"}}}
    theirs = {"use_chat_template": True, "max_new_tokens": 32, "data": {"forget": {"questions_fingerprint": "b"}}}
    differences = compare_records(ours, theirs)
    assert differences[0].startswith("other forget questions")
    assert "the prompts differ" in differences[1] and differences[2].startswith("max_new_tokens 200 here, 32 there")
    assert compare_records(ours, ours) == [] and compare_records({}, theirs) == []


def test_muse_summary_records_its_settings_and_data(target_model, tokenizer):
    from hf_unlearn.evaluation.muse import MUSEEvaluator

    rows = [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    texts = [{"text": f"Some text number {i}."} for i in range(6)]
    data = {"knowmem/forget_qa": rows, "knowmem/forget_qa_icl": rows[:1], "knowmem/retain_qa": rows,
            "knowmem/retain_qa_icl": rows[:1], "privleak/forget": texts[:3],
            "privleak/holdout": texts[3:]}  # fmt: skip
    evaluator = MUSEEvaluator(
        target_model, tokenizer, metrics=["knowmem", "privleak"], datasets=data, knowmem_max_new_tokens=4,
        max_items=2, progress=False,
    )  # fmt: skip
    record = evaluator.evaluate()[RECORD_KEY]
    assert record["benchmark"] == "MUSE" and record["knowmem_max_new_tokens"] == 4 and record["max_items"] == 2
    assert (
        record["data"]["knowmem/forget_qa"]["kind"] == "in_memory"
        and record["data"]["knowmem/forget_qa"]["items"] == 2
    )
    partial = " | ".join(record["partial"])
    assert "the first 2 of 4 rows of knowmem/forget_qa" in partial and "without verbmem" in partial
    assert "knowmem_max_new_tokens=4 (MUSE: 32)" in partial
    assert not is_benchmark_result(record)
