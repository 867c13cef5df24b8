"""The README's example runs as written and reaches the accuracy it implies."""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_readme_example_trains_mnist1d():
    code = python_blocks()[0]  # the quick start; later blocks are fragments that build on it
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"test accuracy (\d\.\d+)", result.stdout)
    assert match, result.stdout[-2000:]
    assert float(match.group(1)) > 0.6
    assert "hidden" in result.stdout and "params" in result.stdout  # the summary table printed
