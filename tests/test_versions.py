"""The tested minimum versions: .github/min-versions.txt pins exactly pyproject.toml's lower bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent


def lower_bounds() -> dict[str, str]:
    """`name -> version` of every `>=` bound of the dependencies and of the test, grun and lm-eval extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    bounds = {}
    for line in [*project["dependencies"], *extras["test"], *extras["grun"], *extras["lm-eval"]]:
        requirement = Requirement(line)
        for spec in requirement.specifier:
            if spec.operator == ">=":
                bounds[canonicalize_name(requirement.name)] = spec.version
    return bounds


def pins(path: Path) -> dict[str, str]:
    """`name -> version` of a file of `name==version` lines (comments and blank lines skipped)."""
    pinned = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[canonicalize_name(name)] = version.strip()
    return pinned


def test_min_versions_file_pins_the_lower_bounds():
    assert pins(REPO / ".github" / "min-versions.txt") == lower_bounds()


def test_gpu_check_wheels_are_the_tested_minimums():
    """The GPU check carries wheels of what its image lacks; they are the versions the suite passed on."""
    minimums = pins(REPO / ".github" / "min-versions.txt")
    carried = pins(REPO / "examples" / "benchmarks" / "gpu" / "wheels.txt")
    assert {"trl", "peft", "datasets", "pyreft", "pyvene", "rouge-score"} <= set(carried)
    assert {name: v for name, v in carried.items() if name in minimums} == {
        name: minimums[name] for name in carried if name in minimums
    }


def test_ci_runs_the_readme_test_command_with_the_min_versions():
    workflow = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert 'PIP_CONSTRAINT="$PWD/.github/min-versions.txt"' in workflow
    assert "<!-- test-command -->" in workflow
