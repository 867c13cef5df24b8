"""Metric writers for ``fit(..., loggers=[...])``: CSV, JSON lines and TensorBoard.

``fit`` calls a logger four ways: ``open(config, summary)`` before the first
step (a directory that cannot be written fails there, before any training),
``write(part, rows)`` after each compiled call (``part="train"``, one row per
step) and each evaluation (``part="eval"``), ``flush()`` at each evaluation and
checkpoint, and ``close()`` at the end. ``rows`` maps column names to 1-D
arrays of equal length, ``"step"`` first.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


class Logger:
    """The protocol ``fit`` writes to; subclass it for your own writer.

    Every method has a default that does nothing, so a subclass overrides only
    what it needs (``write``, usually).
    """

    def open(self, config: Mapping[str, Any], summary: str) -> None:
        """Called once before training with the run's settings and the model summary."""

    def write(self, part: str, rows: Mapping[str, np.ndarray]) -> None:
        """Records ``rows`` (columns of equal length, ``"step"`` first) of ``part``."""

    def flush(self) -> None:
        """Makes everything written so far survive the process being killed."""

    def close(self) -> None:
        """Flushes and releases files; called at the end, also when training fails."""


def _make_directory(owner: str, directory: str) -> str:
    """Creates ``directory`` and checks it is writable, or raises naming ``owner`` and the fix."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".nnfun-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise OSError(
            f"fit: {owner} cannot write to {directory!r} ({error.strerror or error}); "
            "nothing was trained. Fix: pass a directory you can create and write to."
        ) from error
    return directory


def _write_atomic(path: str, text: str) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)


class CSVLogger(Logger):
    """Writes ``train.csv`` and ``eval.csv`` (one row per step / evaluation) in ``directory``.

    Also writes ``config.json`` (the run's settings) and ``summary.txt`` (the
    model's table) when training starts. Rows are appended, so a resumed run
    continues the same files (steps between its checkpoint and the interruption
    appear twice; keep the last row of each step). Plot with
    ``pandas.read_csv(directory + "/train.csv")`` or ``np.genfromtxt(..., names=True)``.

    Args:
        directory: created if missing; checked before training starts.

    Example:
        >>> import tempfile, numpy as np, optax, nnfun as nf
        >>> data = {"x": np.ones((8, 3), np.float32), "y": np.zeros((8, 1), np.float32)}
        >>> logs = tempfile.mkdtemp()
        >>> _ = nf.fit(nf.Dense(1), nf.mse, optax.sgd(0.1), data, steps=4, batch_size=4,
        ...            progress=False, loggers=[nf.CSVLogger(logs)])
        >>> open(logs + "/train.csv").readline().split(",")[:2]
        ['step', 'loss']
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self.files: dict[str, io.TextIOWrapper] = {}
        self.columns: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"CSVLogger({self.directory!r})"

    def open(self, config: Mapping[str, Any], summary: str) -> None:
        _make_directory(repr(self), self.directory)
        _write_atomic(os.path.join(self.directory, "config.json"), json.dumps(config, indent=1))
        _write_atomic(os.path.join(self.directory, "summary.txt"), summary + "\n")

    def write(self, part: str, rows: Mapping[str, np.ndarray]) -> None:
        if part not in self.files:
            path = os.path.join(self.directory, f"{part}.csv")
            self.files[part] = open(path, "a", newline="")  # noqa: SIM115 (kept open)
            self.columns[part] = list(rows)
            if self.files[part].tell() == 0:
                csv.writer(self.files[part]).writerow(self.columns[part])
        columns = [np.asarray(rows[name]).tolist() for name in self.columns[part]]
        csv.writer(self.files[part]).writerows(zip(*columns))

    def flush(self) -> None:
        for file in self.files.values():
            file.flush()

    def close(self) -> None:
        for file in self.files.values():
            file.close()
        self.files.clear()


class JSONLinesLogger(Logger):
    """Writes ``metrics.jsonl`` in ``directory``: one JSON object per step or evaluation.

    The first line of a run is ``{"part": "config", "config": ..., "summary": ...}``;
    then ``{"part": "train", "step": 1, "loss": ..., ...}`` and
    ``{"part": "eval", ...}`` lines. Appends, like :class:`CSVLogger`.

    Args:
        directory: created if missing; checked before training starts.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self.file: io.TextIOWrapper | None = None

    def __repr__(self) -> str:
        return f"JSONLinesLogger({self.directory!r})"

    def open(self, config: Mapping[str, Any], summary: str) -> None:
        _make_directory(repr(self), self.directory)
        self.file = open(os.path.join(self.directory, "metrics.jsonl"), "a")  # noqa: SIM115
        self.file.write(json.dumps({"part": "config", "config": config, "summary": summary}))
        self.file.write("\n")

    def write(self, part: str, rows: Mapping[str, np.ndarray]) -> None:
        assert self.file is not None, "open() is called first"
        names = list(rows)
        columns = [np.asarray(rows[name]).tolist() for name in names]
        lines = [json.dumps({"part": part, **dict(zip(names, row))}) for row in zip(*columns)]
        self.file.write("\n".join(lines) + "\n")

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class TensorBoardLogger(Logger):
    """Writes TensorBoard event files in ``directory`` through ``tensorboardX``.

    Scalars are tagged ``train/<name>`` and ``eval/<name>`` at their step; the
    settings and the model summary are text (``config``, ``model``). View with
    ``tensorboard --logdir <directory>`` (``pip install tensorboard``).

    Args:
        directory: created if missing; checked before training starts.

    Raises:
        ImportError: ``tensorboardX`` is not installed (``pip install nnfun[logging]``).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self.writer: Any = None

    def __repr__(self) -> str:
        return f"TensorBoardLogger({self.directory!r})"

    def open(self, config: Mapping[str, Any], summary: str) -> None:
        try:
            # By name, like every optional package: the core's imports are its dependencies.
            SummaryWriter = importlib.import_module("tensorboardX").SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardLogger needs tensorboardX. Fix: pip install 'nnfun[logging]' "
                "(or pip install tensorboardX)."
            ) from error
        _make_directory(repr(self), self.directory)
        # Flushed by fit at each evaluation; a long interval keeps the writer thread quiet.
        self.writer = SummaryWriter(logdir=self.directory, flush_secs=3600, max_queue=1000)
        indented = "\n".join("    " + line for line in json.dumps(config, indent=1).splitlines())
        self.writer.add_text("config", indented, 0)
        self.writer.add_text("model", "\n".join("    " + s for s in summary.splitlines()), 0)

    def write(self, part: str, rows: Mapping[str, np.ndarray]) -> None:
        steps = np.asarray(rows["step"]).tolist()
        for name, values in rows.items():
            if name == "step":
                continue
            for step, value in zip(steps, np.asarray(values).tolist()):
                if not (isinstance(value, float) and math.isnan(value)):
                    self.writer.add_scalar(f"{part}/{name}", value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _has_hyperparams(node: Any) -> bool:
    return isinstance(getattr(node, "hyperparams", None), Mapping)


def find_hyperparams(opt_state: Any) -> dict[str, Any]:
    """The hyperparameters of every ``optax.inject_hyperparams`` state in ``opt_state``."""
    found: dict[str, Any] = {}
    for node in jax.tree.leaves(opt_state, is_leaf=_has_hyperparams):
        if _has_hyperparams(node):
            found.update(node.hyperparams)
    return found


def find_learning_rate(opt_state: Any) -> Any:
    """The ``learning_rate`` hyperparameter in an ``optax.inject_hyperparams`` state, or None."""
    return find_hyperparams(opt_state).get("learning_rate")


def config_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON values: numbers, strings, lists and dicts; anything else as repr."""
    return json.loads(json.dumps(dict(settings), default=repr))
