"""Executes every notebook in ``notebooks/`` in a real Jupyter kernel.

Each notebook ends with a cell that asserts its key result, so a notebook that
runs to the end has shown what it claims. The notebooks are executed in memory
and never written back: the committed files stay without outputs (checked here
too, so a notebook saved from Jupyter with its outputs fails the suite).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import nbformat
import pytest

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell; a whole notebook is meant to take under 3 minutes


def _ids(paths):
    return [path.stem for path in paths]


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOKS_DIR}"


def test_notebooks_match_their_sources(capsys):
    spec = importlib.util.spec_from_file_location("_build", NOTEBOOKS_DIR / "_build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.main(["--check"]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {index} has outputs; clear them"
            assert cell.execution_count is None, f"{path.name} cell {index} has a count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    # The kernel inherits this environment: no plot windows, and the same Python
    # as the test run (jupyter_client swaps a kernelspec's bare "python" for
    # sys.executable, which is the venv's interpreter here).
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()
    # The kernel must have run the interpreter under test, not some other Python.
    assert notebook.cells[-1].outputs[0]["text"].strip() == sys.executable
