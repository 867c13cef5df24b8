"""benchmarks/accelerator.sh --quick runs every part on CPU (so the accelerator check keeps
working between the runs on a GPU): the device line, the tests, each benchmark's table."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_accelerator_script_quick_runs_every_part_on_cpu(tmp_path):
    report = tmp_path / "report.md"
    env = dict(os.environ, PYTHON=sys.executable, ACCELERATOR_REPORT=str(report))
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "accelerator.sh"), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "backend cpu" in out
    assert "4 passed" in out  # the sample of unit tests
    assert "| nnfun GPT (default: Stack unrolled) |" in out  # the GPT table, with its bound
    assert "step / GEMM bound" in out and "MFU vs measured peak" in out
    assert "| 1 |" in out  # the data-parallel table's row for one device
    assert "every part passed" in out
    written = report.read_text()  # ACCELERATOR_REPORT got every part
    for part in ("## unit tests (a sample)", "## GPT step (tiny", "## data parallel"):
        assert part in written


def test_accelerator_script_rejects_unknown_arguments():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "accelerator.sh"), "--fast"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "usage" in done.stderr
