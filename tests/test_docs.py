"""The documentation: its runnable code blocks run offline, its generated references cover the code, it builds.

- Every Python block marked `<!-- runnable -->` in docs/ runs, offline, in a temporary directory; the blocks of a
  page run in order in one namespace (docs/README.md states the convention).
- The command line reference (generated from the parsers at build time) names every subcommand and every option.
- The API reference (generated from the packages' `__all__`) has an entry for every public name that the imported
  packages export.
- `mkdocs build --strict` succeeds (when the `docs` extra is installed), and leaves no doc-builder cross-reference
  unrendered.
- The README is a landing page that keeps what CI reads from it and links to pages that exist.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
import yaml

import hf_unlearn

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
HOOKS = DOCS / "hooks"

#: `<!-- runnable -->` or `<!-- runnable requires=pkg1,pkg2 -->`, then a ```python block on the next line.
MARKER = re.compile(r"^<!-- runnable(?: requires=([\w,.-]+))? -->$")


def doc_pages() -> list[Path]:
    return sorted(path for path in DOCS.rglob("*.md") if HOOKS not in path.parents)


def runnable_blocks(page: Path) -> tuple[list[str], list[str]]:
    """The runnable blocks of a page, in order, and the packages they require."""
    lines = page.read_text().splitlines()
    blocks, requires = [], []
    for index, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if not match:
            continue
        if index + 1 >= len(lines) or lines[index + 1].strip() != "```python":
            raise AssertionError(f"{page}:{index + 1}: a runnable marker must be followed by a ```python block")
        end = next(i for i in range(index + 2, len(lines)) if lines[i].strip() == "```")
        blocks.append("\n".join(lines[index + 2 : end]))
        requires += [name for name in (match.group(1) or "").split(",") if name]
    return blocks, requires


RUNNABLE_PAGES = [page for page in doc_pages() if runnable_blocks(page)[0]]


def _import_hook(name: str):
    sys.path.insert(0, str(HOOKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(HOOKS))


def test_the_runnable_convention_is_used():
    """The guides the issue asks to be runnable have runnable blocks, and every marker is well formed."""
    names = {str(page.relative_to(DOCS)) for page in RUNNABLE_PAGES}
    assert {"quickstart.md", "guides/losses.md", "guides/gru.md", "guides/compare.md", "guides/cli.md"} <= names


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_runnable_blocks_run_offline(page, tmp_path, monkeypatch, one_thread):
    blocks, requires = runnable_blocks(page)
    for package in requires:
        pytest.importorskip(package, reason=f"{page.name}'s runnable blocks need {package}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    started = time.perf_counter()
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{page.relative_to(REPO)} (runnable block {number})", "exec")
        exec(code, namespace)  # noqa: S102  (the documentation's own examples)
    # Runnable blocks are examples a reader runs: a few seconds each page on 2 cores (tiny models, few steps).
    assert time.perf_counter() - started < 120


# --- the command line reference ---------------------------------------------------------------------------------


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag not in ("-h", "--help")}


def test_cli_reference_names_every_subcommand_and_flag():
    """The reference is generated from the parsers: every subcommand and option of `hf-unlearn` is in it,
    `train`'s options (trl's parser over its dataclasses) included."""
    from hf_unlearn.cli import build_parser
    from hf_unlearn.commands import COMMAND_MODULES
    from hf_unlearn.commands.train import make_parser

    reference = _import_hook("hf_docs").render_cli_reference()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(subparsers.choices) == len(COMMAND_MODULES) >= 8
    missing = []
    for name, sub in subparsers.choices.items():
        if f"## `hf-unlearn {name}`" not in reference:
            missing.append(name)
        flags = _option_strings(make_parser() if name == "train" else sub)
        missing += [f"{name} {flag}" for flag in sorted(flags) if f"`{flag}`" not in reference]
    assert not missing, f"missing from the command line reference: {missing}"
    assert "`hf-unlearn --version`" in reference
    assert "`--config RECIPE.yaml`" in reference


# --- the API reference ------------------------------------------------------------------------------------------


def _public_modules() -> list[str]:
    """hf_unlearn's packages with an `__all__` and its top-level modules with one, imported (not parsed)."""
    skip = ("hf_unlearn.commands", "hf_unlearn.demo", "hf_unlearn.cli")
    found = ["hf_unlearn"]
    for info in pkgutil.walk_packages(hf_unlearn.__path__, "hf_unlearn."):
        if info.name.startswith(skip) or any(part.startswith("_") for part in info.name.split(".")):
            continue
        top_level = info.name.count(".") == 1
        if not (info.ispkg or top_level):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional dependency (pyreft for GRUN is imported lazily, so this is rare)
            continue
        if hasattr(module, "__all__"):
            found.append(info.name)
    return found


def test_api_reference_documents_every_public_name():
    """Every name in the `__all__` of every public package and top-level module (as Python imports it) has an entry
    on an API page (rendered there, or linked to the page that renders it)."""
    pytest.importorskip("griffe", reason="the API reference is read with griffe (pip install -e '.[docs]')")
    api_reference = _import_hook("api_reference")
    pages = {module: (rendered, elsewhere) for module, _, rendered, elsewhere in api_reference.api_pages()}
    missing = []
    for module_name in _public_modules():
        if module_name not in pages:
            missing.append(module_name)
            continue
        listed = {entry.name for entry in pages[module_name][0] + pages[module_name][1]}
        exported = set(importlib.import_module(module_name).__all__)
        missing += [f"{module_name}.{name}" for name in sorted(exported - listed)]
    assert not missing, f"public names without an API entry: {missing}"
    # Each object is rendered once.
    rendered = [entry.canonical for rendered, _ in pages.values() for entry in rendered]
    assert len(rendered) == len(set(rendered))


def test_doc_builder_cross_references_become_links_or_code():
    griffe = pytest.importorskip("griffe", reason="the cross-references are rewritten by a griffe extension")
    crossrefs = _import_hook("crossrefs")
    pkg = griffe.load("hf_unlearn", search_paths=[str(REPO)])
    crossrefs.DocBuilderCrossReferences().on_package(pkg=pkg)
    evaluator = pkg["evaluation.tofu.TOFUEvaluator"]
    config = pkg["config.UnlearningConfig"]
    assert "[`UnlearningTrainer`][hf_unlearn.trainer.core.UnlearningTrainer]" in config.docstring.value
    assert "`SFTConfig`" in config.docstring.value and "[`~trl" not in config.docstring.value  # not documented here
    leftover = [
        obj.path
        for obj in (evaluator, config, pkg["grun.model.get_grun_model"], pkg["evaluation.targets"])
        if crossrefs.CROSS_REFERENCE.search(obj.docstring.value)
    ]
    assert not leftover


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    """The site builds with warnings as errors (CI's docs job), and no doc-builder reference is left as text."""
    for package in ("mkdocs", "mkdocstrings", "material"):
        pytest.importorskip(package, reason=f"{package} is not installed: pip install -e '.[docs]'")
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).with_name("mkdocs"))
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-5000:]
    site = tmp_path / "site"
    assert (site / "reference" / "cli" / "index.html").is_file()
    api_pages = list((site / "api").rglob("index.html"))
    assert len(api_pages) >= 16
    literal = [
        str(page.relative_to(site)) for page in api_pages if re.search(r"\[<code>[\w.~]+</code>\]", page.read_text())
    ]
    assert not literal, f"doc-builder references left as text in {literal}"


# --- the README and CI ------------------------------------------------------------------------------------------


def test_readme_is_a_landing_page_that_links_into_the_docs():
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 200, f"the README is a landing page of about 150 lines, not {len(lines)}"
    for marker in ("<!-- quickstart-command -->", "<!-- test-command -->"):
        assert lines[lines.index(marker) + 1] == "```bash"
    headings = [line for line in lines if line.startswith("## ")]
    assert "## Compare methods" in headings and "## GPU" in headings
    for project in ("locuslab/open-unlearning", "tmlr-group/GRU", "tmlr-group/G-effect", "renjie3/GRUN"):
        assert project in text
    assert "OPTML-Group/Unlearn-Smooth" in text
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local)
    assert [link for link in local if not (REPO / link).exists()] == []


def test_ci_builds_the_docs_strictly_and_the_docs_extra_installs_the_tools():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    commands = "\n".join(step.get("run", "") for step in workflow["jobs"]["docs"]["steps"])
    assert "mkdocs build --strict" in commands and "[docs" in commands
    assert "tests/test_docs.py" in commands
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[\[<>=~! ]", requirement)[0] for requirement in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["strict"] is True
    assert config["hooks"] == ["docs/hooks/hf_docs.py"]
