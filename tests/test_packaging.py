"""Packaging: the wheel and the sdist hold the whole package with its data and templates, `twine check` accepts them,
the version has one source, and the release workflow is well formed."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import hf_unlearn

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "hf_unlearn"
# What a build must not pick up from a working tree (caches, environments, earlier builds).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
    ".hypothesis", "outputs", "quickstart_output", ".whl", "gpu_check_out",
)  # fmt: skip


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def source_files(pattern: str) -> set[str]:
    """Paths (relative to the repository, '/'-separated) of the package's source files matching `pattern`."""
    return {
        path.relative_to(REPO).as_posix()
        for path in PACKAGE.rglob(pattern)
        if "__pycache__" not in path.parts and path.is_file()
    }


def _build_requirements_installed() -> bool:
    """Whether this environment satisfies pyproject's build-system requirements (then the build needs no network)."""
    for line in pyproject()["build-system"]["requires"]:
        requirement = Requirement(line)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(installed, prereleases=True):
            return False
    return True


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`python -m build` (the sdist, then the wheel built from it, as PyPI users get them) of a copy of the working
    tree, so that the build writes nothing into it. Without network access the environment must hold the build
    requirements (the `dev` extra and setuptools)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("`build` is not installed (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    isolation = ["--no-isolation"] if _build_requirements_installed() else []
    result = subprocess.run(
        [sys.executable, "-m", "build", *isolation, "--outdir", str(root / "dist"), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "dist"


def only(directory: Path, pattern: str) -> Path:
    matches = sorted(directory.glob(pattern))
    assert len(matches) == 1, matches
    return matches[0]


def test_the_wheel_holds_every_module_the_data_and_the_templates(dist):
    wheel = only(dist, f"hf_unlearn-{hf_unlearn.__version__}-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = source_files("data/tofu_subset/*")
    templates = source_files("hub/templates/*.md")
    assert {"hf_unlearn/data/tofu_subset/full.json", "hf_unlearn/data/tofu_subset/idontknow.jsonl"} <= data
    assert "hf_unlearn/hub/templates/model_card.md" in templates
    assert data <= names
    assert templates <= names
    subpackages = {path.rsplit("/", 1)[0] for path in source_files("*/__init__.py")}
    assert {"hf_unlearn/methods", "hf_unlearn/trainer", "hf_unlearn/losses", "hf_unlearn/grun"} <= subpackages
    assert {f"{package}/__init__.py" for package in subpackages} <= names
    missing = source_files("*.py") - names
    assert not missing, f"modules left out of the wheel: {sorted(missing)}"
    dist_info = f"hf_unlearn-{hf_unlearn.__version__}.dist-info"
    assert "hf-unlearn = hf_unlearn.cli:main" in zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    # Apache-2.0 for the code, and the MIT notice of the bundled TOFU data (also beside the data, listed above).
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/hf_unlearn/data/tofu_subset/LICENSE"} <= names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert f"Version: {hf_unlearn.__version__}" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    assert "License-Expression: Apache-2.0" in metadata


def test_the_sdist_holds_the_package_data(dist):
    sdist = only(dist, f"hf_unlearn-{hf_unlearn.__version__}.tar.gz")
    prefix = f"hf_unlearn-{hf_unlearn.__version__}/"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(prefix) for name in archive.getnames()}
    assert {"pyproject.toml", "README.md"} <= names
    assert source_files("data/tofu_subset/*") | source_files("hub/templates/*.md") | source_files("*.py") <= names


def test_twine_accepts_the_distributions(dist):
    if importlib.util.find_spec("twine") is None:
        pytest.skip("`twine` is not installed (pip install -e '.[dev]')")
    files = [str(path) for path in sorted(dist.iterdir())]
    command = [sys.executable, "-m", "twine", "check", "--strict", *files]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_version_has_one_source():
    config = pyproject()
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hf_unlearn.__version__"}
    assigned = [
        path.relative_to(REPO).as_posix()
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign) and "__version__" in [getattr(target, "id", None) for target in node.targets]
    ]
    assert assigned == ["hf_unlearn/__init__.py"]
    # Nothing else spells the version out: code reads hf_unlearn.__version__; CITATION.cff is checked below.
    version = hf_unlearn.__version__
    files = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.md"), *(REPO / "examples").rglob("*.py")]
    files.append(REPO / "pyproject.toml")
    spelled = [path.relative_to(REPO).as_posix() for path in files if version in path.read_text(encoding="utf-8")]
    assert spelled == ["hf_unlearn/__init__.py"]


def test_citation_and_changelog_follow_the_version():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == hf_unlearn.__version__
    assert citation["license"] == pyproject()["project"]["license"] == "Apache-2.0"
    assert citation["repository-code"] == "https://github.com/hf-unlearn/hf_unlearn"
    assert citation["title"] and citation["authors"] == [{"name": "hf_unlearn developers"}]
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"\n## [{Version(hf_unlearn.__version__).base_version}]" in changelog


def test_the_release_workflow_publishes_tags_to_pypi():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert trigger == {"push": {"tags": ["v*"]}}
    build, publish = workflow["jobs"]["build"], workflow["jobs"]["publish"]
    build_commands = "\n".join(step.get("run", "") for step in build["steps"])
    assert "python -m build" in build_commands and "twine check" in build_commands
    assert "v${version}" in build_commands  # the tag must be the package's version
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [step.get("uses", "") for step in publish["steps"]]
    assert any(use.startswith("pypa/gh-action-pypi-publish@") for use in uses)
    assert not any("password" in step.get("with", {}) for step in publish["steps"])  # trusted publishing: no token


def readme_command(marker: str) -> str:
    lines = (REPO / "README.md").read_text().splitlines()
    return lines[lines.index(marker) + 2]


def test_ci_installs_the_wheel_as_the_readme_installs_the_source():
    """CI's wheel job runs the quickstart from the installed wheel with the README quickstart's pins."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    job = workflow["jobs"]["wheel"]
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    quickstart = readme_command("<!-- quickstart-command -->")
    for pin in [word for word in quickstart.split() if "==" in word]:  # torch, pyreft, pyvene
        assert pin in commands, pin
    assert "python -m build" in commands and "[grun]" in commands
    assert "-e " not in commands  # the wheel, not an editable install
    assert "hf-unlearn quickstart --methods ga" in commands
