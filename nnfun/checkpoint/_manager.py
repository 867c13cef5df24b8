"""A directory of checkpoints named by step: :class:`CheckpointManager`."""

from __future__ import annotations

import contextlib
import operator
import os
import re
from typing import Any

from ._format import TEMP_MARKER, CheckpointError
from ._tree import load, save_tree

_PATTERN = re.compile(r"ckpt_(\d+)\.safetensors\Z")
_TEMP_PATTERN = re.compile(r"\.ckpt_\d+\.safetensors" + re.escape(TEMP_MARKER))


class CheckpointManager:
    """Saves pytrees as ``<directory>/ckpt_<step>.safetensors`` and keeps the newest few.

    Every save is atomic (temporary file, fsync, rename), so a run killed at any
    moment leaves every earlier checkpoint intact. Temporary files left by a killed
    run are ignored when scanning and removed when a manager is created. One
    process at a time should write to a directory.

    Args:
        directory: where the checkpoints live (created if missing).
        keep: how many of the newest checkpoints to keep (``None`` keeps all).

    Example:
        >>> import tempfile, jax.numpy as jnp, nnfun as nf
        >>> mgr = nf.checkpoint.CheckpointManager(tempfile.mkdtemp(), keep=2)
        >>> for step in (10, 20, 30):
        ...     _ = mgr.save(step, {"w": jnp.full(3, step)})
        >>> mgr.all_steps(), mgr.latest_step()
        ([20, 30], 30)
        >>> mgr.restore(like={"w": jnp.zeros(3, jnp.int32)})["w"]
        Array([30, 30, 30], dtype=int32)
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3):
        if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
            raise ValueError(f"keep must be a positive int or None, got {keep!r}")
        self.directory = os.fspath(directory)
        self.keep = keep
        os.makedirs(self.directory, exist_ok=True)
        self._remove_temp_files()

    def __repr__(self) -> str:
        return f"CheckpointManager({self.directory!r}, keep={self.keep})"

    def path(self, step: int) -> str:
        """The file name of the checkpoint of ``step``."""
        return os.path.join(self.directory, f"ckpt_{_check_step(step):09d}.safetensors")

    def all_steps(self) -> list[int]:
        """The steps of the checkpoints in the directory, oldest first."""
        steps = []
        for name in os.listdir(self.directory):
            match = _PATTERN.match(name)
            if match:
                steps.append(int(match.group(1)))
        return sorted(steps)

    def latest_step(self) -> int | None:
        """The newest step saved, or ``None`` when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree: Any) -> str:
        """Writes ``tree`` as the checkpoint of ``step`` and deletes the oldest beyond ``keep``.

        Returns:
            The path written.
        """
        path = self.path(step)
        save_tree(path, tree, {"nnfun.step": str(_check_step(step))})
        self._prune()
        return path

    def restore(self, step: int | None = None, like: Any = None) -> Any:
        """Loads the checkpoint of ``step`` (the newest when ``None``), like :func:`nnfun.load`.

        Raises:
            CheckpointError: there is no checkpoint (of that step) in the directory, or
                the file does not match ``like``.
        """
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint to restore in {self.directory}")
        if step is None:
            step = steps[-1]
        elif _check_step(step) not in steps:
            raise CheckpointError(
                f"no checkpoint of step {step} in {self.directory}; saved steps: {steps}"
            )
        return load(self.path(step), like=like)

    def _prune(self) -> None:
        if self.keep is None:
            return
        for step in self.all_steps()[: -self.keep]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path(step))

    def _remove_temp_files(self) -> None:
        for name in os.listdir(self.directory):
            if _TEMP_PATTERN.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, name))


def _check_step(step: Any) -> int:
    try:
        step = operator.index(step)  # ints, NumPy ints and integer 0-d JAX arrays
    except TypeError:
        raise TypeError(f"step must be an int, got {type(step).__name__}: {step!r}") from None
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step
