"""examples/benchmarks/run_all.py: the CPU smoke run writes every section, and a failing section is reported without
stopping the others."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest
from launch import REPO

SCRIPT = REPO / "examples" / "benchmarks" / "run_all.py"


def load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_section(tmp_path):
    output = tmp_path / "check.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--smoke", "--output", str(output)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    text = output.read_text() if output.exists() else ""
    assert run.returncode == 0, run.stdout + run.stderr + text
    for title in load_run_all().SECTIONS.values():
        assert f"## {title}" in text
    assert "- Versions: Python " in text and "torch " in text and "transformers " in text
    assert "not judged on CPU" in text
    assert "ERROR" not in text and "Skipped" not in text
    assert "pytest -k cuda" in text or "pytest -m cuda" in text
    assert "needs 2 GPUs" in text


def test_a_failing_section_is_reported_and_the_others_still_run(tmp_path):
    run_all = load_run_all()
    ctx = run_all.Context(device="cpu", smoke=True, workdir=tmp_path, deadline=time.monotonic() + 120)

    def broken(ctx):
        raise ValueError("boom in the middle")

    def failed_subprocess(ctx):
        run_all.run_command(ctx, [sys.executable, "-c", "import sys; print('partial output'); sys.exit(3)"])

    def fine(ctx):
        return "| a | b |\n|---|---|\n| 1 | 2 |\n", ["Target: something: **not judged on CPU**"]

    functions = {"cuda_tests": broken, "gru_overhead": failed_subprocess, "grun_cost": fine}
    seen = []
    results = run_all.run_sections(list(functions), ctx, 60, functions=functions, on_result=seen.append)
    assert [r.status for r in results] == ["error", "error", "done"]
    assert len(seen) == 3
    assert "boom in the middle" in results[0].error
    assert "exited with 3" in results[1].error and "partial output" in results[1].error
    text = run_all.render(results, ["# header"], ["- Versions: Python x"])
    assert text.count("**ERROR**") == 2 and "boom in the middle" in text and "| 1 | 2 |" in text
    for name in functions:
        assert f"## {run_all.SECTIONS[name]}" in text
    # with the budget used up, later sections are skipped and said to be
    skipped = run_all.run_sections(["cuda_tests", "grun_cost"], ctx, -1, functions=functions)
    assert [r.status for r in skipped] == ["skipped", "skipped"]
    assert "Skipped for the time budget" in run_all.render(skipped, [], [])


def _wheel(folder, name: str, version: str) -> None:
    """A minimal pure-Python wheel of package `name` (an empty module and its metadata)."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


@pytest.mark.slow  # its fsdp2 section launches 2 processes
def test_gpu_kit_installs_the_carried_wheels_and_writes_report_and_log(tmp_path):
    """examples/benchmarks/gpu/check.sh, as the GPU machine runs it: the wheels in WHEEL_DIR are installed into a
    separate folder that comes first on the path (the report shows the carried version), report and log go to $OUT,
    and run_all.py's exit code comes back."""
    wheels, out = tmp_path / "wheels", tmp_path / "out"
    wheels.mkdir()
    _wheel(wheels, "pyvene", "9.9.9")
    env = {
        **os.environ,
        "OUT": str(out),
        "WHEEL_DIR": str(wheels),
        "SITE_DIR": str(tmp_path / "site"),
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "HF_UNLEARN_COMMIT": "abc1234",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = ["bash", str(REPO / "examples" / "benchmarks" / "gpu" / "check.sh"), "--smoke", "--sections", "fsdp2"]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    report = (out / "gpu_check.md").read_text() if (out / "gpu_check.md").exists() else ""
    assert run.returncode == 0, run.stdout + run.stderr + report
    assert "pyvene 9.9.9" in report and "commit abc1234" in report and "## GRU on FSDP2, one process" in report
    assert "wrote" in (out / "gpu_check.log").read_text()
    bad = subprocess.run(command + ["--sections", "nonexistent"], cwd=tmp_path, env=env, capture_output=True)
    assert bad.returncode != 0, "run_all.py's failure is the script's exit code"
