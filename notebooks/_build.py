"""Writes ``notebooks/*.ipynb`` (without outputs) from the sources in ``notebooks/_src/``.

Run from the repository root: ``.venv/bin/python notebooks/_build.py`` (``--check``
only compares, and exits 1 when a committed notebook differs from its source).

A source is a Python file in the "percent" format that editors such as VS Code
and Jupytext understand: ``# %%`` starts a code cell, ``# %% [markdown]`` starts a
markdown cell whose lines are comments (``# text``). Keeping the notebooks as
plain Python makes them reviewable as diffs and keeps outputs out of git.
"""

from __future__ import annotations

import pathlib
import sys

import nbformat

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = HERE / "_src"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _strip_comment(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    return "" if line.strip() == "#" else line


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Splits a percent-format source into ``(kind, source)`` cells, kind "code" or "markdown"."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
        elif cells:
            kind, lines = cells[-1]
            lines.append(_strip_comment(line) if kind == "markdown" else line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError("code before the first '# %%' marker")
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build(source: pathlib.Path) -> nbformat.NotebookNode:
    """The notebook for one source file, with no outputs and no execution counts."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = KERNELSPEC
    notebook.metadata["language_info"] = {"name": "python"}
    for index, (kind, text) in enumerate(parse_cells(source.read_text())):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        cell = make(text)
        cell["id"] = f"{source.stem[:40]}-{index}"  # stable ids keep rebuilds diff-free
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for source in sorted(SOURCES.glob("*.py")):
        target = HERE / f"{source.stem}.ipynb"
        text = nbformat.writes(build(source)) + "\n"
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(HERE.parent)}")
    if stale:
        print(f"out of date (run notebooks/_build.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
