"""The `hf-unlearn` command line and the offline quickstart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hf_unlearn.cli import main
from hf_unlearn.demo.quickstart import run_quickstart


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "hf_unlearn.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "quickstart" in result.stdout


def test_bad_option_names_the_problem(capsys):
    assert main(["quickstart", "--methods", "ga,gaa", "--output-dir", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "gaa" in err and "choose from" in err


@pytest.mark.slow
def test_quickstart_unlearns_the_forget_authors(tmp_path, capsys):
    pytest.importorskip("pyreft")
    results = run_quickstart(tmp_path, methods=["ga", "grun"], progress=False)
    rows = {r.method: r for r in results}
    assert list(rows) == ["retain model", "target", "ga + nll", "GRUN(100 npo + 1 nll + 10 gate)"]
    retain_model, target, ga, grun = rows.values()
    assert target.forget_probability > 3 * retain_model.forget_probability, "only the target saw the forget authors"
    assert target.forget_quality < 0.01 and retain_model.forget_quality == pytest.approx(1.0)
    assert ga.forget_probability < 0.5 * target.forget_probability
    assert grun.forget_probability < 0.9 * target.forget_probability
    # GRUN edits only where its gate opens: retain answers move less than under full-parameter GA.
    assert abs(grun.retain_probability - target.retain_probability) < abs(
        ga.retain_probability - target.retain_probability
    )
    out = capsys.readouterr().out
    assert "| GRUN(100 npo + 1 nll + 10 gate) |" in out
    # each row says whether it reached the forget target (forget probability <= 0.1)
    assert "forgot (prob. <= 0.1)" in out and f"| target | {target.forget_probability:.3f} | no |" in out
    assert ga.reached_forget_target == (ga.forget_probability <= 0.1)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in saved] == list(rows)
    assert (tmp_path / "fq_vs_utility.png").stat().st_size > 0 and (tmp_path / "results.md").is_file()
    assert (tmp_path / "ga" / "model.safetensors").is_file() and (tmp_path / "grun" / "grun_config.json").is_file()
    card = (tmp_path / "grun" / "README.md").read_text()
    assert "GRUN" in card and "2502.17823" in card
    # 32-token generations on two splits of the bundled subset: shown, labelled, and not a model-index result
    assert "model-index" not in card and "Not a benchmark result" in card and "bundled with hf_unlearn" in card
    # the folder loads by itself (it records its base model) and the public evaluator scores it as the quickstart
    # did: a GRUN model is told where each prompt ends (it scored 0.951, the target's, instead of 0.590)
    from hf_unlearn.evaluation import TOFUEvaluator
    from hf_unlearn.hub import load_unlearned

    model, tokenizer = load_unlearned(tmp_path / "grun")
    summary = TOFUEvaluator(
        model, tokenizer, forget_split="forget01", data_dir="bundled", splits=["forget"], max_new_tokens=1,
        progress=False,
    ).evaluate()  # fmt: skip
    assert summary["forget_probability"] == pytest.approx(grun.forget_probability, rel=1e-5)

    # The retain model is saved: the robustness command the quickstart prints runs as printed.
    assert (tmp_path / "retain" / "model.safetensors").is_file() and (tmp_path / "retain" / "eval").is_dir()
    (command,) = [line for line in out.splitlines() if "hf-unlearn robustness" in line]
    argv = command.split("hf-unlearn ", 1)[1].split()
    assert argv[argv.index("--retain-model") + 1] == str(tmp_path / "retain")
    argv += ["--attacks", "relearning,quantization", "--bits", "8", "--relearn-steps", "1", "--max-questions", "4"]
    assert main([*argv, "--no-progress"]) == 0
    assert "relearning" in capsys.readouterr().out and (tmp_path / "ga" / "robustness" / "robustness.json").is_file()


def modules_imported_by(argv: list[str], cwd) -> set[str]:
    """Run `hf_unlearn.cli.main(argv)` in a fresh interpreter; the heavy libraries it imported."""
    code = (
        "import sys\nfrom hf_unlearn.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = ('trl', 'torch', 'transformers', 'peft', 'datasets', 'accelerate', 'rouge_score')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split("\n")[-2].split())


def test_help_starts_without_the_training_stack(tmp_path):
    # Import time is a robust proxy for start-up time: `hf-unlearn --help` took 11.5 s on a busy 2-core machine when
    # it imported torch, datasets, transformers and peft (through every command's module).
    assert modules_imported_by(["--help"], tmp_path) == set()


def test_tofu_summary_reads_logs_without_the_model_stack(tmp_path):
    # It took 10.4-12.2 s on a busy 2-core machine, importing transformers, datasets, peft and bitsandbytes through
    # hf_unlearn.evaluation's evaluators and training callback; the logs need none of them.
    from test_tofu_summary_cli import LOGS, write_logs

    logs = write_logs(tmp_path / "logs", LOGS)
    imported = modules_imported_by(["tofu-summary", "--logs", str(logs)], tmp_path)
    # torch (1.2 s) and rouge_score (nltk and scikit-learn, 2.1 s) were the rest: metrics import them on first use,
    # rouge_score only to recompute a ROUGE-L recall a log lacks (one split of these logs has generations only)
    assert imported == {"rouge_score"}, imported
    complete = {name: {k: v for k, v in log.items() if k != "generated_text"} for name, log in LOGS.items()}
    complete["eval_real_world_wo_options.json"]["rougeL_recall"] = {"0": 0.5}
    assert not modules_imported_by(
        ["tofu-summary", "--logs", str(write_logs(tmp_path / "complete", complete))], tmp_path
    )


def test_quickstart_help_shows_defaults_and_threads(capsys):
    with pytest.raises(SystemExit):
        main(["quickstart", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: quickstart_output)" in out and "(default: 10)" in out and "(default: 0.0005)" in out
    assert "--threads" in out and "OMP_NUM_THREADS" in out
    assert "(default: None)" not in out and "(default: False)" not in out, "those say what they mean in words"


def test_the_quickstart_runs_its_tiny_models_on_few_threads(monkeypatch, tmp_path):
    import torch

    from hf_unlearn.demo import quickstart

    used = []
    monkeypatch.setattr(quickstart, "run_quickstart", lambda **kwargs: used.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert main(["quickstart", "--output-dir", str(tmp_path)]) == 0
        assert main(["quickstart", "--output-dir", str(tmp_path), "--threads", "2"]) == 0
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice: torch's default follows it
        assert main(["quickstart", "--output-dir", str(tmp_path)]) == 0
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert main(["quickstart", "--output-dir", str(tmp_path), "--model", str(tmp_path)]) == 0  # a real model
        assert used == [1, 2, 2, 2]
    finally:
        torch.set_num_threads(before)
