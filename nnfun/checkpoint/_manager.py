"""A directory of checkpoints named by step: :class:`CheckpointManager`."""

from __future__ import annotations

import contextlib
import operator
import os
import re
import secrets
import shutil
from typing import Any

import jax

from ._format import TEMP_MARKER, CheckpointError
from ._orbax import OrbaxSaver, restore, spans_processes
from ._tree import load, save_tree

_PATTERN = re.compile(r"ckpt_(\d+)\.(safetensors|orbax)\Z")
_TEMP_PATTERN = re.compile(r"\.ckpt_\d+\.safetensors" + re.escape(TEMP_MARKER))
# Orbax's unfinished directories, and ours being deleted (renamed first, so never half-deleted
# under a checkpoint's name).
_ORBAX_TEMP_PATTERN = re.compile(r"(ckpt_\d+\.orbax\.orbax-checkpoint-tmp|\.ckpt_\d+\.orbax\.del-)")
_FORMATS = ("auto", "orbax")


class CheckpointManager:
    """Saves pytrees as ``<directory>/ckpt_<step>.safetensors`` and keeps the newest few.

    Every save is atomic (temporary file, fsync, rename), so a run killed at any
    moment leaves every earlier checkpoint intact. Temporary files left by a killed
    run are ignored when scanning and removed when a manager is created. One
    process at a time should write to a directory.

    When a tree holds arrays that span several processes (after
    ``nnfun.parallel.initialize``, sharded or replicated over a mesh of all
    processes' devices), every process calls :meth:`save` with the same step and
    each writes its own shards through Orbax (the ``[scale]`` extra) into the
    directory ``ckpt_<step>.orbax``. Such a save is asynchronous: it returns once
    the shards are copied to host memory and writes in the background while
    training goes on; the next save, :meth:`restore`, :meth:`wait_until_finished`
    and :meth:`close` wait for it. Orbax's commit protocol renames the directory
    into place only after every process has written its part, so a run killed
    mid-save leaves a temporary directory that is ignored (and removed by the next
    save), and the previous checkpoint stays the latest. Old checkpoints are
    pruned only after the new one is committed. ``restore`` reads either format.

    Args:
        directory: where the checkpoints live (created if missing). With several
            processes, a file system all of them share.
        keep: how many of the newest checkpoints to keep (``None`` keeps all).
        format: ``"auto"`` (safetensors files, Orbax for arrays that span
            processes) or ``"orbax"`` (always Orbax, asynchronous; needs the
            ``[scale]`` extra).

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

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3, format: str = "auto"):
        if keep is not None and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
            raise ValueError(f"keep must be a positive int or None, got {keep!r}")
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
        self.directory = os.fspath(directory)
        self.keep = keep
        self.format = format
        self._orbax: OrbaxSaver | None = None
        os.makedirs(self.directory, exist_ok=True)
        self._remove_temp_files()

    def __repr__(self) -> str:
        return f"CheckpointManager({self.directory!r}, keep={self.keep}, format={self.format!r})"

    def path(self, step: int) -> str:
        """The file name of the checkpoint of ``step`` (its directory, if saved by Orbax)."""
        name = os.path.join(self.directory, f"ckpt_{_check_step(step):09d}")
        return name + ".orbax" if os.path.isdir(name + ".orbax") else name + ".safetensors"

    def all_steps(self) -> list[int]:
        """The steps of the (committed) checkpoints in the directory, oldest first."""
        steps = set()
        for name in os.listdir(self.directory):
            match = _PATTERN.match(name)
            if match:
                steps.add(int(match.group(1)))
        return sorted(steps)

    def latest_step(self) -> int | None:
        """The newest step saved, or ``None`` when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, tree: Any) -> str:
        """Writes ``tree`` as the checkpoint of ``step`` and deletes the oldest beyond ``keep``.

        Arrays that span processes (or ``format="orbax"``) go through Orbax,
        asynchronously (see above); every process must call this with the same step.

        Returns:
            The path written (for Orbax, the directory it will have once committed).

        Raises:
            ImportError: arrays span processes and Orbax is not installed.
        """
        step = _check_step(step)
        if self.format == "orbax" or spans_processes(tree):
            return self._save_orbax(step, tree)
        self.wait_until_finished()
        path = os.path.join(self.directory, f"ckpt_{step:09d}.safetensors")
        save_tree(path, tree, {"nnfun.step": str(step)})
        self._prune()
        return path

    def _save_orbax(self, step: int, tree: Any) -> str:
        if self._orbax is None:
            self._orbax = OrbaxSaver()
            self._remove_orbax_temp_dirs()
        self.wait_until_finished()  # the previous save is committed; prune before the next
        path = os.path.join(self.directory, f"ckpt_{step:09d}.orbax")
        self._orbax.save(path, tree, step)
        return path

    def wait_until_finished(self) -> None:
        """Waits until an asynchronous (Orbax) save is committed, then prunes."""
        if self._orbax is not None:
            self._orbax.wait()
            self._prune()

    def close(self) -> None:
        """Waits for a pending save and releases Orbax's background thread."""
        if self._orbax is not None:
            self.wait_until_finished()
            self._orbax.close()
            self._orbax = None

    def restore(self, step: int | None = None, like: Any = None) -> Any:
        """Loads the checkpoint of ``step`` (the newest when ``None``), like :func:`nnfun.load`.

        Raises:
            CheckpointError: there is no checkpoint (of that step) in the directory, or
                the file does not match ``like``.
        """
        self.wait_until_finished()
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint to restore in {self.directory}")
        if step is None:
            step = steps[-1]
        elif _check_step(step) not in steps:
            raise CheckpointError(
                f"no checkpoint of step {step} in {self.directory}; saved steps: {steps}"
            )
        path = self.path(step)
        return restore(path, like=like) if os.path.isdir(path) else load(path, like=like)

    def _prune(self) -> None:
        if self.keep is None or jax.process_index() != 0:  # one process deletes
            return
        for step in self.all_steps()[: -self.keep]:
            path = self.path(step)
            if os.path.isdir(path):
                # Renamed first: a kill mid-deletion leaves no half checkpoint under its name.
                doomed = os.path.join(self.directory, f".{os.path.basename(path)}.del-")
                doomed += secrets.token_hex(4)
                os.replace(path, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)

    def _remove_orbax_temp_dirs(self) -> None:
        # Left by a run killed mid-save. Only process 0, before its first Orbax save: no
        # process of this run writes anything before that save's opening barrier.
        if jax.process_index() != 0:
            return
        for name in os.listdir(self.directory):
            if _ORBAX_TEMP_PATTERN.match(name):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

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
