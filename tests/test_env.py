"""`hf-unlearn env` (the environment for bug reports) and `hf-unlearn --version`."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hf_unlearn
from hf_unlearn.cli import main
from hf_unlearn.commands import env

REPO = Path(__file__).resolve().parent.parent


def env_output(capsys) -> str:
    assert main(["env"]) == 0
    return capsys.readouterr().out


def test_env_reports_the_installed_versions(capsys):
    out = env_output(capsys)
    lines = out.splitlines()
    assert f"- Python version: {platform.python_version()} ({platform.python_implementation()})" in lines
    assert f"- hf_unlearn version: {hf_unlearn.__version__}" in lines
    assert f"- hf_unlearn location: {Path(hf_unlearn.__file__).resolve().parent}" in lines
    import torch

    assert f"- torch version: {torch.__version__}" in lines
    if torch.cuda.is_available():
        assert f"- GPUs: {torch.cuda.device_count()} ({torch.cuda.get_device_name(0)}" in out
    else:
        assert any(line.startswith("- GPUs: no GPU") for line in lines)
    shown = [name for name, _ in env.PACKAGES]
    for name in ["transformers", "trl", "peft", "datasets", "accelerate", "huggingface-hub", "tokenizers"]:
        assert name in shown
    for name in ["safetensors", "pyreft", "pyvene", "bitsandbytes", "lm-eval"]:
        assert name in shown
    for name, distribution in env.PACKAGES:
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        assert f"- {name} version: {version}" in lines
    assert any(line.startswith("- accelerate default config: ") for line in lines)


def test_env_says_what_is_not_installed(capsys, monkeypatch):
    real_version = importlib.metadata.version

    def version(distribution: str) -> str:
        if distribution in ("pyreft", "lm-eval"):
            raise importlib.metadata.PackageNotFoundError(distribution)
        return real_version(distribution)

    monkeypatch.setattr(env.importlib.metadata, "version", version)
    lines = env_output(capsys).splitlines()
    assert "- pyreft version: not installed" in lines
    assert "- lm-eval version: not installed" in lines
    assert f"- peft version: {real_version('peft')}" in lines


def test_env_names_the_commit_of_a_checkout(capsys):
    source = Path(hf_unlearn.__file__).resolve().parent
    if source.parent != REPO or not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("hf_unlearn is not imported from a git checkout")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert f"- hf_unlearn git commit: {commit.stdout.strip()}" in env_output(capsys)


def test_env_summarises_the_accelerate_config(tmp_path):
    config = tmp_path / "default_config.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\n")
    assert env.accelerate_config_lines(config) == [
        f"accelerate default config: {config}",
        "  - compute_environment: LOCAL_MACHINE",
        "  - distributed_type: MULTI_GPU",
        "  - num_processes: 2",
    ]
    assert env.accelerate_config_lines(tmp_path / "missing.yaml") == [
        f"accelerate default config: not found ({tmp_path / 'missing.yaml'})"
    ]
    text = env.format_environment(["a: 1", *env.accelerate_config_lines(config)[:2]])
    assert text.splitlines() == [
        "- a: 1",
        f"- accelerate default config: {config}",
        "  - compute_environment: LOCAL_MACHINE",
    ]


def test_env_does_not_import_the_training_stack(tmp_path):
    # The report must work (and be quick) where trl or transformers is broken: versions come from package metadata.
    code = (
        "import sys\nfrom hf_unlearn.cli import main\nmain(['env'])\n"
        "print(' '.join(m for m in ('trl', 'transformers', 'peft', 'datasets') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "- trl version: " in result.stdout
    assert result.stdout.splitlines()[-1] == ""


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hf-unlearn {hf_unlearn.__version__}"
