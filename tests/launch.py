"""Launching test scripts with `accelerate launch` as real separate processes."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CPU_DDP_CONFIG = REPO / "examples" / "accelerate" / "cpu_ddp_2proc.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_accelerate(
    script: str | Path, *args: str, config: Path = CPU_DDP_CONFIG, timeout: float = 300, module: bool = False
) -> subprocess.CompletedProcess:
    """Run `accelerate launch --config_file config script args...` (`-m script` with `module=True`); fail the test
    with its output if it fails."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--main_process_port",
        str(free_port()),
        *(["-m"] if module else []),
        str(script),
        *map(str, args),
    ]
    return _run(command, "accelerate launch", timeout)


def run_torchrun(script: str | Path, *args: str, processes: int = 2, timeout: float = 300):
    """Run `torchrun --nproc_per_node processes script args...` on the CPU (for what accelerate only runs on
    accelerators, e.g. FSDP); fail the test with its output if it fails."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_port",
        str(free_port()),
        str(script),
        *map(str, args),
    ]
    return _run(command, "torchrun", timeout)


def _run(command: list[str], name: str, timeout: float) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    if result.returncode != 0:
        raise AssertionError(f"{name} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def load_script(path: Path):
    """Import a launched script as a module, to run its function in this process (the one-process reference)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
