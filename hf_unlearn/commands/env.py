"""`hf-unlearn env`: the environment, as a markdown list to paste into a bug report (as `transformers env`)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

NAME = "env"
HELP = "Print the environment (versions, GPUs, accelerate config) to paste into a bug report."
DESCRIPTION = """\
Print the platform, Python, hf_unlearn (version, where it is imported from, the git commit of a checkout), torch
with its CUDA, cuDNN and GPUs, the versions of the Hugging Face libraries hf_unlearn runs on, GRUN's pyreft and
pyvene, bitsandbytes and lm-eval, and accelerate's default config, as a markdown list to paste into an issue.

Versions come from the installed packages' metadata: nothing but torch (and accelerate, for its config path) is
imported, so the command runs in a few seconds even where trl or transformers is broken.
"""

#: Distributions reported, in order: (name shown, distribution name). torch is reported on its own, with its devices.
PACKAGES = [
    ("transformers", "transformers"),
    ("trl", "trl"),
    ("peft", "peft"),
    ("datasets", "datasets"),
    ("accelerate", "accelerate"),
    ("huggingface-hub", "huggingface-hub"),
    ("tokenizers", "tokenizers"),
    ("safetensors", "safetensors"),
    ("pyreft", "pyreft"),
    ("pyvene", "pyvene"),
    ("bitsandbytes", "bitsandbytes"),
    ("lm-eval", "lm-eval"),
]

NOT_INSTALLED = "not installed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def package_version(distribution: str) -> str:
    """The installed version of `distribution`, from its metadata (nothing is imported), or "not installed"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _git_commit(source: Path) -> str | None:
    """`commit (uncommitted changes)` of the checkout `source` lies in, or None outside a checkout (or without git)."""
    root = source.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "hf_unlearn"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    changes = ", uncommitted changes in hf_unlearn/" if dirty.returncode == 0 and dirty.stdout.strip() else ""
    return f"{commit.stdout.strip()}{changes}"


def hf_unlearn_lines() -> list[str]:
    from .. import __version__

    source = Path(__file__).resolve().parent.parent
    lines = [f"hf_unlearn version: {__version__}", f"hf_unlearn location: {source}"]
    commit = _git_commit(source)
    if commit is not None:
        lines.append(f"hf_unlearn git commit: {commit}")
    return lines


def torch_lines() -> list[str]:
    """torch's version, the CUDA and cuDNN it was built with, and the GPUs it sees ("no GPU" when none)."""
    if package_version("torch") == NOT_INSTALLED:
        return [f"torch version: {NOT_INSTALLED}"]
    try:
        import torch
    except Exception as err:  # a broken install is worth reporting as such
        return [f"torch version: {package_version('torch')} (import failed: {type(err).__name__}: {err})"]
    lines = [f"torch version: {torch.__version__}"]
    lines.append(f"torch CUDA version: {torch.version.cuda or 'none (CPU build)'}")
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    lines.append(f"torch cuDNN version: {cudnn if cudnn is not None else 'none'}")
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"GPUs: {len(names)} ({'; '.join(names)})")
    else:
        mps = getattr(torch.backends, "mps", None)
        lines.append("GPUs: no GPU" + (" (Apple MPS available)" if mps is not None and mps.is_available() else ""))
    return lines


def _default_accelerate_config() -> Path | None:
    """accelerate's default config file (`accelerate config`'s output), None when accelerate is not installed."""
    if package_version("accelerate") == NOT_INSTALLED:
        return None
    try:
        from accelerate.commands.config import default_config_file
    except Exception:
        return None
    return Path(default_config_file)


def _summary(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def accelerate_config_lines(path: Path | None = None) -> list[str]:
    """The accelerate default config's path and its top-level settings as nested list items ("not found" if none)."""
    path = _default_accelerate_config() if path is None else path
    if path is None:
        return ["accelerate default config: none (accelerate is not installed)"]
    if not path.is_file():
        return [f"accelerate default config: not found ({path})"]
    try:
        import yaml

        config = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON configs are YAML too
    except Exception as err:
        return [f"accelerate default config: {path} (unreadable: {type(err).__name__}: {err})"]
    if not isinstance(config, dict):
        return [f"accelerate default config: {path} (not a mapping)"]
    return [f"accelerate default config: {path}", *(f"  - {key}: {_summary(config[key])}" for key in sorted(config))]


def environment_lines() -> list[str]:
    """Every line of the report, without the list markers of the first level."""
    lines = [
        f"Platform: {platform.platform()}",
        f"Python version: {platform.python_version()} ({platform.python_implementation()})",
        *hf_unlearn_lines(),
        *torch_lines(),
    ]
    lines += [f"{shown} version: {package_version(distribution)}" for shown, distribution in PACKAGES]
    lines += accelerate_config_lines()
    for variable in ("CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE"):
        if variable in os.environ:
            lines.append(f"{variable}: {os.environ[variable]}")
    return lines


def format_environment(lines: list[str]) -> str:
    return "\n".join(line if line.startswith("  ") else f"- {line}" for line in lines)


def run(args: argparse.Namespace) -> int:
    print("Copy and paste the text below into your GitHub issue.\n")
    print(format_environment(environment_lines()))
    return 0
