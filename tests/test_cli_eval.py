"""`hf-unlearn eval`: TOFU evaluation of saved models (full weights and peft adapters) from the command line."""

from __future__ import annotations

import json

import pytest
from peft import LoraConfig, get_peft_model

from hf_unlearn.cli import main
from hf_unlearn.evaluation import TOFU_LOG_FILES

QUICK = ["--dataset", "bundled", "--forget-split", "forget01", "--splits", "retain,forget"]
QUICK += ["--max-questions", "4", "--max-new-tokens", "8", "--no-progress"]


def _printed_summary(out: str) -> dict:
    return json.loads(out[out.index("{\n") :])


def test_eval_writes_tofu_logs_and_prints_the_summary(target_model_dir, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    assert main(["eval", "--model", str(target_model_dir), "--output-dir", str(out_dir), *QUICK]) == 0
    summary = _printed_summary(capsys.readouterr().out)
    assert summary["num_questions"] == {"retain": 4, "forget": 4}
    assert 0 < summary["forget_probability"] <= 1 and summary["forget_quality"] is None
    assert (out_dir / TOFU_LOG_FILES["forget"]).is_file() and (out_dir / "summary.json").is_file()
    # Against its own logs as the "retain model", the forget statistics are identical: KS p-value 1.
    assert main(["eval", "--model", str(target_model_dir), "--output-dir", str(tmp_path / "again"),
                 "--retain-logs", str(out_dir), *QUICK]) == 0  # fmt: skip
    assert _printed_summary(capsys.readouterr().out)["forget_quality"] == pytest.approx(1.0)


def test_eval_loads_a_peft_adapter_on_its_base(target_model, target_model_dir, tmp_path, capsys):
    lora = get_peft_model(target_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    lora.save_pretrained(adapter_dir)
    assert main(["eval", "--model", str(adapter_dir), "--base-model", str(target_model_dir), *QUICK]) == 0
    with_adapter = _printed_summary(capsys.readouterr().out)
    assert (adapter_dir / "eval" / "summary.json").is_file(), "logs go beside the model by default"
    assert main(["eval", "--model", str(target_model_dir), "--output-dir", str(tmp_path / "base"), *QUICK]) == 0
    base = _printed_summary(capsys.readouterr().out)
    assert with_adapter["forget_probability"] != pytest.approx(base["forget_probability"], rel=1e-6)


def test_eval_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nowhere"), *QUICK]) == 2
    assert "nowhere" in capsys.readouterr().err
