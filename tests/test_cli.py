"""The `hf-unlearn` command line and the offline quickstart."""

from __future__ import annotations

import json
import subprocess
import sys

from hf_unlearn.cli import main
from hf_unlearn.quickstart import run_quickstart


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "hf_unlearn.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "quickstart" in result.stdout


def test_bad_option_names_the_problem(capsys):
    assert main(["quickstart", "--methods", "ga,gaa", "--output-dir", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "gaa" in err and "choose from" in err


def test_quickstart_unlearns_the_forget_authors(tmp_path, capsys):
    results = run_quickstart(tmp_path, methods=["ga"], finetune_epochs=12, unlearn_steps=6, progress=False)
    target, ga = results
    assert target.forget_probability > 0.1, "the tiny model should have learned its data"
    assert ga.forget_probability < 0.5 * target.forget_probability
    assert "| ga+nll |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in saved] == ["target (before unlearning)", "ga+nll"]
    assert (tmp_path / "ga" / "model.safetensors").is_file() and (tmp_path / "target" / "tokenizer.json").is_file()
