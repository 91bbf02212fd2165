"""hf_unlearn.sequential: deletion requests one after another on a tiny model (the bundled TOFU forget01 cut into
requests of 8 questions): a full-parameter sequence and a GRUN sequence end to end, the cumulative forget quality
against a hand computation, earlier GRUN modules untouched by later requests, resuming after a kill, the config,
the cut into requests and the dry run of the shipped example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import ks_2samp

from hf_unlearn.cli import main as cli_main
from hf_unlearn.sequential import RequestsSpec, SequentialConfig
from hf_unlearn.sequential import runner as seq_runner

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {
    "source": "tofu",
    "data_dir": "bundled",
    "forget_split": "forget01",
    "max_questions": 4,
    "max_new_tokens": 4,
    "eval_splits": ["retain"],
}
NPO = {"forget_loss": "npo", "retain_loss": "nll", "learning_rate": 5e-3}
GRUN = {"kind": "grun", "forget_loss": "ga", "learning_rate": 1e-2, "method_kwargs": {"layers": [1], "rank": 2}}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sequential" / "tofu_forget05_llama32_1b.yaml"


@pytest.fixture(scope="module")
def retain_model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama that never saw the forget authors (untrained): the retain model of forget quality."""
    from hf_unlearn.demo.tiny import tiny_llama

    path = tmp_path_factory.mktemp("retain_model")
    tiny_llama(len(tokenizer), num_layers=2, hidden_size=64, seed=1).save_pretrained(path)
    return path


def base_config(target_dir, retain_dir, methods, **overrides) -> dict:
    config = {
        "target_model": str(target_dir),
        "retain_model": str(retain_dir),
        "data": dict(DATA),
        "requests": {"size": 8, "limit": 3},
        "methods": methods,
        "targets": ["forget_probability<=0.05"],
        "max_steps": 6,
        "eval_every": 3,
        "utility": "retain_utility",
        "training": {"per_device_train_batch_size": 4},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def full_run(target_model_dir, retain_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential_full")
    config = SequentialConfig.from_dict(base_config(target_model_dir, retain_model_dir, {"npo": NPO}))
    return config, seq_runner.run_sequence(config, out), out


# ---------------------------------------------------------------------------------------------------------------------
# a full-parameter sequence
# ---------------------------------------------------------------------------------------------------------------------


def test_full_parameter_sequence_end_to_end(full_run, target_model_dir):
    config, results, out = full_run
    records = results["methods"]["npo"]["requests"]
    assert [r["request"] for r in records] == [1, 2, 3]
    assert [r["questions"] for r in results["requests"]] == [8, 8, 8]
    assert results["requests"][1]["evaluated"] == ["8", "9", "10", "11"]  # the first max_questions of request 2
    n_params = sum(p.numel() for p in torch.nn.Module.parameters(_load(target_model_dir)))
    for record in records:
        assert 0 <= record["steps"] <= record["max_steps"] == 6
        assert [p["request"] for p in record["forget"]["per_request"]] == [1, 2, 3]
        assert [p["seen"] for p in record["forget"]["per_request"]] == [j <= record["request"] for j in (1, 2, 3)]
        assert 0 <= record["forget"]["cumulative"]["forget_quality"] <= 1
        assert record["utility"]["retain_utility"] is not None
        assert record["trainable_parameters"] == (n_params if record["steps"] else record["trainable_parameters"])
        assert record["stored_bytes"] in (0, 4 * n_params)  # float32 weights, or nothing when it trained 0 steps
        assert record["reference"] == "the original model" if record["request"] == 1 else "the previous model"
        assert record["trajectory"][0]["step"] == 0  # each request is evaluated before its first step
    # request 1 reaches its target; the model carries over: the next request starts where request 1 stopped
    first = records[0]
    assert first["met"] == {"forget_probability<=0.05": first["steps"]}
    target = results["references"]["target"]["forget"]["per_request"]
    assert first["forget"]["per_request"][0]["forget_probability"] <= 0.05 < target[0]["forget_probability"]
    second_start = records[1]["trajectory"][0]["forget_probability"]
    assert second_start == pytest.approx(first["forget"]["per_request"][1]["forget_probability"], rel=1e-4)
    # only the latest full model is kept (a resumed sequence starts from it)
    assert not (out / "methods/npo/seed_0/request_1/model").exists()
    assert (out / "methods/npo/seed_0/request_3/model/model.safetensors").is_file()
    report = (out / "report.md").read_text()
    assert "| 0 (target) |" in report and "| 3 |" in report and "cumulative forget quality" in report
    assert (out / "sequential.png").is_file()
    assert json.loads((out / "results.json").read_text())["methods"]["npo"]["requests"][2]["request"] == 3


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _stats(log: dict, keys: list[str]) -> np.ndarray:
    """TOFU's truth-ratio statistic, by hand: exp(mean perturbed mean-NLL - paraphrased mean-NLL)."""
    return np.array([np.exp(np.mean(log["average_perturb_loss"][k]) - log["avg_paraphrased_loss"][k]) for k in keys])


def test_cumulative_forget_quality_is_the_ks_test_of_the_concatenated_statistics(full_run):
    config, results, out = full_run
    retain_log = json.loads((out / "references/retain/eval/eval_log_forget.json").read_text())
    keys = [r["evaluated"] for r in results["requests"]]
    for record in results["methods"]["npo"]["requests"]:
        k = record["request"]
        log = json.loads((out / f"methods/npo/seed_0/request_{k}/eval/eval_log_forget.json").read_text())
        seen = [key for request_keys in keys[:k] for key in request_keys]
        expected = ks_2samp(_stats(log, seen), _stats(retain_log, seen)).pvalue
        assert record["forget"]["cumulative"]["forget_quality"] == pytest.approx(expected, rel=1e-9)
        for j, request_keys in enumerate(keys):
            per = record["forget"]["per_request"][j]
            own = ks_2samp(_stats(log, request_keys), _stats(retain_log, request_keys)).pvalue
            assert per["forget_quality"] == pytest.approx(own, rel=1e-9)
            probability = np.mean([np.exp(-log["avg_gt_loss"][key]) for key in request_keys])
            assert per["forget_probability"] == pytest.approx(probability, rel=1e-9)


def test_resuming_mid_sequence_runs_only_the_missing_requests(full_run, target_model_dir, retain_model_dir, tmp_path,
                                                              monkeypatch):  # fmt: skip
    config, results, _ = full_run
    real = seq_runner.run_request
    calls = []

    def killed_at_3(config, method, request, *args, **kwargs):
        calls.append(request.number)
        if request.number == 3:
            raise KeyboardInterrupt("killed")
        return real(config, method, request, *args, **kwargs)

    monkeypatch.setattr(seq_runner, "run_request", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        seq_runner.run_sequence(config, tmp_path, report=False)
    assert calls == [1, 2, 3]
    assert (tmp_path / "methods/npo/seed_0/request_2/record.json").is_file()
    assert not (tmp_path / "methods/npo/seed_0/request_3/record.json").exists()
    calls.clear()
    monkeypatch.setattr(seq_runner, "run_request", lambda *a, **k: calls.append(a[2].number) or real(*a, **k))
    resumed = seq_runner.run_sequence(config, tmp_path, report=False)
    assert calls == [3]  # requests 1 and 2 are reused, request 3 starts from request 2's saved model
    again, before = resumed["methods"]["npo"]["requests"][2], results["methods"]["npo"]["requests"][2]
    assert again["steps"] == before["steps"]
    for new, old in zip(again["forget"]["per_request"], before["forget"]["per_request"]):
        assert new["forget_probability"] == pytest.approx(old["forget_probability"], rel=1e-5)
    assert again["utility"]["retain_utility"] == pytest.approx(before["utility"]["retain_utility"], rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# GRUN: one gated module per request
# ---------------------------------------------------------------------------------------------------------------------


def test_grun_sequence_stacks_one_module_per_request(target_model_dir, retain_model_dir, tmp_path):
    pytest.importorskip("pyreft")
    raw = base_config(target_model_dir, retain_model_dir, {"grun": GRUN}, targets=["forget_probability<=0.001"],
                      max_steps=4, eval_every=4, keep_models=False)  # fmt: skip
    results = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path)
    records = results["methods"]["grun"]["requests"]
    assert [r["steps"] for r in records] == [4, 4, 4]  # the target is out of reach: each request runs its budget
    assert len({r["trainable_parameters"] for r in records}) == 1  # each request trains one module of the same size
    assert all(0 < r["stored_bytes"] < 100_000 for r in records)
    assert records[0]["reference"] is None  # GA reads no reference
    # every request's module is saved, and a later request leaves the earlier ones as they were
    saved = [
        load_file(tmp_path / f"methods/grun/seed_0/request_{k}/model/grun_interventions.safetensors")
        for k in (1, 2, 3)
    ]
    assert {key.split(".")[0] for key in saved[2]} == {"request_0", "request_1", "request_2"}
    for k in (0, 1):
        for key, value in saved[k].items():
            if key.startswith(f"request_{k}."):
                assert torch.equal(value, saved[2][key]), key
    # the gates' firing matrix: each request's gate on each request's prompts and on retain prompts
    gates = records[-1]["gates"]
    assert list(gates["mean"]) == ["request_1", "request_2", "request_3"]
    assert set(gates["mean"]["request_1"]) == {"retain", "request_1", "request_2", "request_3"}
    assert all(0 <= v <= 1 for row in gates["fires"].values() for v in row.values())
    assert "Gates after request 3" in (tmp_path / "report.md").read_text()
    # resumed at request 3, which stacks its module on the two loaded from request 2's folder: the same numbers
    (tmp_path / "methods/grun/seed_0/request_3/record.json").unlink()
    again = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path, report=False)
    assert again["methods"]["grun"]["requests"][2]["forget"] == records[2]["forget"]
    assert again["methods"]["grun"]["requests"][2]["gates"] == records[2]["gates"]


# ---------------------------------------------------------------------------------------------------------------------
# the config, the requests, the dry run
# ---------------------------------------------------------------------------------------------------------------------


def test_requests_cut_tofu_into_authors_and_chunks():
    assert [len(c) for c in RequestsSpec(authors=2).chunks(200)] == [40] * 5  # forget05: 5 requests of 2 authors
    assert [len(c) for c in RequestsSpec().chunks(400)] == [40] * 10  # forget10: 10
    assert [len(c) for c in RequestsSpec(count=3).chunks(40)] == [13, 14, 13]
    assert RequestsSpec(size=8, limit=2).chunks(40) == [list(range(8)), list(range(8, 16))]
    with pytest.raises(ValueError, match="one of size, authors, count and files"):
        RequestsSpec(size=8, count=2)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": {"npo": {**NPO, "learning_rate": None, "learning_rates": [1e-3, 1e-2]}}}, "one learning rate"),
        ({"reference": "first"}, "reference must be one of"),
        ({"max_epochs": 2}, "exactly one of max_steps and max_epochs"),
        ({"targets": []}, "needs a target"),
        ({"targets": ["forget_quality>=0.1"], "retain_model": None}, "give retain_model or retain_logs"),
        ({"request": {"size": 8}}, "Did you mean 'requests'"),
        ({"targets": ["verbmem_forget_rougeL_f1<=0.1"]}, "MUSE targets are not supported here"),
    ],
)
def test_config_errors_name_the_problem(change, message, target_model_dir, retain_model_dir):
    raw = base_config(target_model_dir, retain_model_dir, {"npo": NPO})
    raw.update(change)
    if raw["methods"]["npo"].get("learning_rate", 0) is None:
        raw["methods"]["npo"].pop("learning_rate")
    with pytest.raises(ValueError, match=message):
        SequentialConfig.from_dict(raw)


def test_config_round_trips(target_model_dir, retain_model_dir):
    config = SequentialConfig.from_dict(base_config(target_model_dir, retain_model_dir, {"npo": NPO, "grun": GRUN}))
    assert SequentialConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert config.fingerprint("npo") != config.fingerprint("grun")
    assert config.compare_config().methods["grun"].kind == "grun"


def test_report_only_rebuilds_the_report_from_results(full_run, tmp_path, capsys):
    _, _, out = full_run
    (tmp_path / "results.json").write_text((out / "results.json").read_text())
    assert cli_main(["sequential", "--config", str(EXAMPLE), "--output-dir", str(tmp_path), "--report-only"]) == 0
    assert "## npo + nll (`npo`, full)" in capsys.readouterr().out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "sequential.png").is_file()


def test_dry_run_of_the_shipped_example_works_offline(capsys):
    assert cli_main(["sequential", "--config", str(EXAMPLE), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "Requests: 5 (2 authors (40 questions) a request)" in text
    assert "tofu_Llama-3.2-1B-Instruct_retain95" in text and "a LoRA per request, merged" in text


# ---------------------------------------------------------------------------------------------------------------------
# LoRA: an adapter per request, merged
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 9 s
def test_lora_adapters_are_merged_after_each_request_and_original_reference(target_model_dir, retain_model_dir,
                                                                            tmp_path, monkeypatch):  # fmt: skip
    import hf_unlearn.trainer as trainer_module

    real, references = trainer_module.create_trainer, []

    def spy(*args, **kwargs):
        references.append(kwargs.get("ref_model"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "create_trainer", spy)
    lora = {**NPO, "kind": "peft", "learning_rate": 2e-2, "method_kwargs": {"r": 4, "target_modules": ["q_proj"]}}
    raw = base_config(target_model_dir, retain_model_dir, {"lora": lora}, targets=["forget_probability<=0.0001"])
    raw.update(requests={"size": 8, "limit": 2}, max_steps=3, reference="original", keep_models=True)
    results = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path, report=False)
    records = results["methods"]["lora"]["requests"]
    assert [r["steps"] for r in records] == [3, 3]
    assert references[0] is None and references[1] is not None  # request 2's NPO reads the original model
    assert [r["reference"] for r in records] == ["the original model", "the original model"]
    # the model after request 2 is the model after request 1 plus request 2's adapter, merged (scaling alpha / r = 2)
    name = "model.layers.0.self_attn.q_proj.weight"
    before = load_file(tmp_path / "methods/lora/seed_0/request_1/model/model.safetensors")[name]
    after = load_file(tmp_path / "methods/lora/seed_0/request_2/model/model.safetensors")[name]
    adapter = load_file(tmp_path / "methods/lora/seed_0/request_2/adapter/adapter_model.safetensors")
    prefix = "base_model.model." + name.removesuffix(".weight")
    delta = adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"] * 2.0
    assert delta.abs().max() > 0
    torch.testing.assert_close(after, before + delta, rtol=0, atol=1e-6)
    assert (
        records[1]["stored_bytes"]
        == (tmp_path / "methods/lora/seed_0/request_2/adapter/adapter_model.safetensors").stat().st_size
    )
    assert 0 < records[1]["trainable_parameters"] < 2_000


def test_requests_from_files_number_their_questions_one_after_another(tofu, tmp_path, target_model_dir):
    from hf_unlearn.sequential.plan import load_requests

    rows = tofu["forget01_perturbed"]
    for k, part in enumerate((range(0, 6), range(6, 10))):
        rows.select(part).to_json(tmp_path / f"request_{k}.jsonl")
    tofu["retain_perturbed"].select(range(8)).to_json(tmp_path / "retain.jsonl")
    raw = {
        "target_model": str(target_model_dir),
        "data": {"source": "files", "retain": str(tmp_path / "retain.jsonl"), "max_questions": 5},
        "requests": {"files": [str(tmp_path / "request_0.jsonl"), str(tmp_path / "request_1.jsonl")]},
        "methods": {"npo": NPO},
        "targets": "forget_probability<=0.1",
        "max_epochs": 1,
    }
    requests, retain = load_requests(SequentialConfig.from_dict(raw))
    assert [r.keys for r in requests] == [["0", "1", "2", "3", "4"], ["6", "7", "8", "9"]]
    assert [len(r.forget) for r in requests] == [6, 4] and len(retain) == 8
    assert requests[1].evaluation["question"] == rows["question"][6:10]


# ---------------------------------------------------------------------------------------------------------------------
# seeds and claims
# ---------------------------------------------------------------------------------------------------------------------

GD = {"forget_loss": "ga", "retain_loss": "nll", "learning_rate": 5e-3}
TOFU_MINI = Path(__file__).resolve().parents[1] / "examples" / "sequential" / "tofu_mini.yaml"


def _by_hand(claim_methods, results, request):
    """A claim's verdict from results.json's numbers, by THE VERDICT RULE written out again: seed s counts only
    where both methods met every target on requests 1..k; d_s = U_A(s) - U_B(s) after request k."""
    config = results["config"]
    targets = list(config["targets"].values())
    sides = []
    for name in claim_methods:
        values = {}
        for seed, records in results["methods"][name]["seeds"].items():
            met = all(all(t in r["met"] for t in targets) for r in records[:request])
            values[int(seed)] = records[request - 1]["utility"][config["utility"]] if met else None
        sides.append(values)
    if any(v is None for side in sides for v in side.values()):
        return "not testable", []
    d = [sides[0][s] - sides[1][s] for s in sorted(sides[0])]
    if all(x > 0 for x in d) and np.mean(d) >= config["min_effect"]:
        return "holds", d
    if all(x < 0 for x in d) and np.mean(d) <= -config["min_effect"]:
        return "contradicted", d
    return "no clear difference", d


def test_seeds_run_one_sequence_each_resume_per_seed_and_claims_are_judged(target_model_dir, retain_model_dir,
                                                                          tmp_path, monkeypatch):  # fmt: skip
    raw = base_config(target_model_dir, retain_model_dir, {"npo": NPO, "gd": GD}, seeds=[0, 1], max_steps=4,
                      eval_every=2, claims=["npo > gd", {"better": "gd", "than": "npo", "request": 1}])  # fmt: skip
    raw["requests"] = {"size": 8, "limit": 2}
    config = SequentialConfig.from_dict(raw)
    results = seq_runner.run_sequence(config, tmp_path)
    for method in ("npo", "gd"):
        entry = results["methods"][method]
        assert list(entry["seeds"]) == ["0", "1"] and entry["requests"] == entry["seeds"]["0"]
        for seed in (0, 1):
            records = entry["seeds"][str(seed)]
            assert [(r["request"], r["seed"]) for r in records] == [(1, seed), (2, seed)]
            assert (tmp_path / f"methods/{method}/seed_{seed}/request_2/record.json").is_file()
    # each seed trains its own sequence (a seed-specific fingerprint; the first seed's is the one-seed config's)
    assert config.fingerprint("npo", 0) != config.fingerprint("npo", 1)
    assert config.for_seed(1).fingerprint("npo") == config.fingerprint("npo", 1)
    one_seed = SequentialConfig.from_dict(
        {**{k: v for k, v in raw.items() if k not in ("seeds", "claims")}, "seed": 0}
    )
    assert one_seed.fingerprint("npo") == config.fingerprint("npo", 0)
    # the verdicts, recomputed from results.json's numbers
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [(v["better"], v["than"], v["request"]) for v in saved["verdicts"]] == [("npo", "gd", 2), ("gd", "npo", 1)]
    for verdict in saved["verdicts"]:
        expected, d = _by_hand((verdict["better"], verdict["than"]), saved, verdict["request"])
        assert verdict["verdict"].startswith(expected)
        assert verdict["differences"] == pytest.approx(d, abs=1e-12)
        assert verdict["seeds"] == [0, 1]
    report = (tmp_path / "report.md").read_text()
    assert "## Verdicts" in report and "### seed 1" in report and saved["verdicts"][0]["claim"] in report
    summary = report.split("## Summary")[1].split("\n## ")[0]
    assert [line.split(" | ")[1] for line in summary.splitlines() if line.startswith("| ")][1:] == ["0", "1"] * 2
    # resume per method and seed: only GD's seed-1 sequence runs again, every other sequence is reused
    (tmp_path / "methods/gd/seed_1/request_2/record.json").unlink()
    real, calls = seq_runner.run_request, []
    monkeypatch.setattr(
        seq_runner,
        "run_request",
        lambda c, m, r, *a, **k: calls.append((m, c.seeds[0], r.number)) or real(c, m, r, *a, **k),
    )
    again = seq_runner.run_sequence(config, tmp_path, report=False)
    # request 1's full model was deleted once request 2 was recorded: that seed's sequence runs both again
    assert calls == [("gd", 1, 1), ("gd", 1, 2)]
    assert [v["verdict"] for v in again["verdicts"]] == [v["verdict"] for v in results["verdicts"]]
    # --report-only judges the claims again from results.json's records
    stale = json.loads((tmp_path / "results.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps({**stale, "verdicts": []}))
    assert seq_runner.rejudge(tmp_path)["verdicts"] == again["verdicts"]
    assert json.loads((tmp_path / "results.json").read_text())["verdicts"] == again["verdicts"]


def _record(request: int, utility: float, met: bool, forget: float = 0.05) -> dict:
    return {
        "request": request,
        "met": {"forget_probability<=0.1": 3} if met else {},
        "utility": {"retain_utility": utility},
        "forget": {"per_request": [{"request": j, "forget_probability": forget} for j in (1, 2, 3)], "cumulative": {}},
    }


def test_a_claim_is_not_testable_where_a_request_missed_its_target():
    from hf_unlearn.compare.rules import MatchedValue, paired_verdict
    from hf_unlearn.sequential.config import parse_sequential_claim
    from hf_unlearn.sequential.verdicts import judge

    a = {"0": [_record(1, 0.8, True), _record(2, 0.7, True)], "1": [_record(1, 0.9, True), _record(2, 0.6, False)]}
    b = {"0": [_record(1, 0.5, True), _record(2, 0.4, True)], "1": [_record(1, 0.6, True), _record(2, 0.3, True)]}
    methods = {"a": {"label": "A", "seeds": a}, "b": {"label": "B", "seeds": b}}
    claims = [parse_sequential_claim("a > b"), parse_sequential_claim({"better": "a", "than": "b", "request": 1})]
    last, first = judge(claims, methods, targets=["forget_probability<=0.1"], utility="retain_utility",
                        num_requests=2, min_effect=0.01)  # fmt: skip
    assert last["request"] == 2 and last["verdict"].startswith("not testable")
    assert "A seed 1: target not met at request(s) [2]" in last["verdict"] and last["differences"] == []
    # after request 1 both met their targets on both seeds: THE VERDICT RULE of compare, on the same numbers
    assert first["request"] == 1 and first["differences"] == pytest.approx([0.3, 0.3])
    expected = paired_verdict("x", "y", {0: MatchedValue(0.8, 0), 1: MatchedValue(0.9, 0)},
                              {0: MatchedValue(0.5, 0), 1: MatchedValue(0.6, 0)}, tolerance=0.0)  # fmt: skip
    assert first["verdict"] == expected.verdict == "holds"
    assert first["claim"] == "A keeps more utility than B after request 1"
    # a seed one method did not run is not testable either
    methods["b"]["seeds"] = {"0": b["0"]}
    (only,) = judge(claims[1:], methods, targets=["forget_probability<=0.1"], utility="retain_utility",
                    num_requests=2, min_effect=0.01)  # fmt: skip
    assert only["verdict"] == "holds" and only["seeds"] == [0]  # the rule pairs the seeds both ran


def test_the_summary_counts_the_targets_met_and_lists_the_utility_after_each_request():
    from hf_unlearn.sequential.report import summary_table

    def seq(utilities, met, forget):
        return [{**_record(k, u, m, f), "steps": 3} for k, (u, m, f) in enumerate(zip(utilities, met, forget), 1)]

    results = {
        "config": {"utility": "retain_utility", "targets": {"p": "forget_probability<=0.1"}, "data": {}},
        "requests": [{}, {}],
        "methods": {
            "a": {
                "label": "A",
                "seeds": {
                    "0": seq([0.8, 0.7], [True, False], [0.05, 0.4]),
                    "1": seq([0.9, 0.6], [True, True], [0.05, 0.08]),
                },
            },  # fmt: skip
            "b": {"label": "B", "seeds": {"0": seq([0.5], [True], [0.02])}},  # stopped after request 1
        },
    }
    rows = summary_table(results).splitlines()[2:]
    assert rows == [
        "| A | 0 | 1/2 | 6 | 0.800 | 0.700 | 0.400 |",
        "| A | 1 | 2/2 | 6 | 0.900 | 0.600 | 0.080 |",
        "| B | 0 | 1/1 | 3 | 0.500 | – | 0.020 |",
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seeds": [0, 1], "seed": 0}, "Give seeds .* or seed .*, not both"),
        ({"seeds": []}, "non-empty list"),
        ({"seeds": [0, 0]}, "distinct integers"),
        ({"claims": ["npo > gdx"]}, "no method 'gdx'"),
        ({"claims": ["npo gd"]}, "Cannot read the claim"),
        ({"claims": [{"better": "npo", "than": "gd", "request": 0}]}, "request must be an integer >= 1"),
        ({"claims": [{"better": "npo", "than": "gd", "targets": ["p10"]}]}, "drop 'targets'"),
        ({"claims": [{"better": "npo", "than": "gd", "metric": "attack:relearning"}]}, "runs no attacks"),
        ({"claims": [{"better": "npo", "than": "gd", "requests": 2}]}, "Did you mean 'request'"),
        ({"claims": "npo > gd"}, "claims must be a list"),
    ],
)
def test_seed_and_claim_config_errors(change, message, target_model_dir, retain_model_dir):
    raw = base_config(target_model_dir, retain_model_dir, {"npo": NPO, "gd": GD})
    raw.update(change)
    with pytest.raises(ValueError, match=message):
        SequentialConfig.from_dict(raw)


def test_seed_is_a_one_seed_shorthand_and_a_claim_after_a_missing_request_is_refused(target_model_dir,
                                                                                    retain_model_dir):  # fmt: skip
    from hf_unlearn.sequential.plan import format_plan

    raw = base_config(target_model_dir, retain_model_dir, {"npo": NPO, "gd": GD}, seed=3)
    assert SequentialConfig.from_dict(raw).seeds == [3]
    assert SequentialConfig.from_dict(base_config(target_model_dir, retain_model_dir, {"npo": NPO})).seeds == [0]
    raw = base_config(target_model_dir, retain_model_dir, {"npo": NPO, "gd": GD}, seeds=[0, 1])
    raw["claims"] = [{"better": "npo", "than": "gd", "request": 3}]
    text = format_plan(SequentialConfig.from_dict(raw))  # 3 requests (limit 3)
    assert "Seeds: [0, 1]" in text and "npo + nll keeps more utility than ga + nll after request 3" in text
    raw["claims"] = [{"better": "npo", "than": "gd", "request": 4}]
    with pytest.raises(ValueError, match="request 4, but the sequence has 3 requests"):
        format_plan(SequentialConfig.from_dict(raw))


def test_the_shipped_tofu_mini_config_parses():
    config = SequentialConfig.from_yaml(TOFU_MINI)
    assert config.seeds == [0, 1, 2] and config.requests.size == 16
    assert list(config.methods) == ["grun_npo", "npo", "npo_gru", "gd"]
    assert config.targets == {"forget_probability<=0.45": "forget_probability<=0.45"} and config.max_epochs == 80
    assert (config.workers, config.threads_per_worker) == (2, 1)
    grun = config.methods["grun_npo"]
    assert (grun.kind, grun.learning_rates, grun.steps_factor) == ("grun", [0.1], 10)
    assert config.methods["npo_gru"].rectification == "gru" and config.utility == "retain_utility"
    assert [(c.better, c.than, c.after(5), c.metric) for c in config.claims] == [
        ("grun_npo", "npo", 5, "utility"),
        ("grun_npo", "gd", 5, "utility"),
    ]
    assert config.target_model.endswith("examples/benchmarks/tofu_mini_models/full/target")
    assert SequentialConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    if Path(config.data.forget).is_file() and Path(config.target_model).is_dir():  # the models exist: the dry run
        assert cli_main(["sequential", "--config", str(TOFU_MINI), "--dry-run"]) == 0


def _without_times(records: list[dict]) -> list[dict]:
    """A sequence's records without what depends on the machine's speed."""
    return [{k: v for k, v in r.items() if k not in ("seconds",)} for r in records]


@pytest.mark.slow
def test_worker_processes_give_the_in_process_sequences_and_a_failure_keeps_the_others(
    target_model_dir, retain_model_dir, tmp_path
):
    raw = base_config(target_model_dir, retain_model_dir, {"npo": NPO}, seeds=[0, 1], max_steps=4, eval_every=2)
    raw["requests"] = {"size": 8, "limit": 2}
    raw["threads_per_worker"] = 1
    in_process = seq_runner.run_sequence(SequentialConfig.from_dict(raw), tmp_path / "one", report=False)
    pooled = seq_runner.run_sequence(SequentialConfig.from_dict({**raw, "workers": 2}), tmp_path / "two")
    for seed in ("0", "1"):
        one, two = in_process["methods"]["npo"]["seeds"][seed], pooled["methods"]["npo"]["seeds"][seed]
        assert _without_times(two) == _without_times(one)
        assert "request 2/2" in (tmp_path / f"two/methods/npo/seed_{seed}/sequence.log").read_text()
    # a sequence that fails in its worker is named with its log; the other one's requests are saved
    broken = {**raw, "workers": 2, "seeds": [0], "methods": {"npo": NPO, "bad": {**GD, "forget_loss": "no_such"}}}
    with pytest.raises(RuntimeError, match=r"1 of 2 sequences failed: bad seed 0 .*sequence\.log"):
        seq_runner.run_sequence(SequentialConfig.from_dict(broken), tmp_path / "broken")
    assert (tmp_path / "broken/methods/npo/seed_0/request_2/record.json").is_file()
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        SequentialConfig.from_dict({**raw, "workers": 0})
