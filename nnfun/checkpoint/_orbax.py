"""Checkpoints of arrays that span processes, written by Orbax: each process its own shards.

A checkpoint is a directory ``ckpt_<step>.orbax`` with two Orbax items:
``arrays``, a flat dict ``{"params/0/kernel": array, ...}`` named like the
tensors of a safetensors checkpoint (PRNG keys stored as their key data,
Python scalars as 0-d arrays), and ``nnfun``, JSON holding the tree's skeleton
(the same one ``nf.save`` writes), the step, the process count and every
tensor's dtype and shape. Orbax writes into ``<name>.orbax-checkpoint-tmp`` and
renames it once every process has finished its part (its commit protocol), so
a directory under the final name is complete; a temporary one is ignored.
Orbax is imported only here, and only when needed (the ``[scale]`` extra).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import threading
import warnings
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ._format import DTYPES, CheckpointError, dtype_name, write_safetensors
from ._tree import (
    FORMAT_KEY,
    FORMAT_VERSION,
    SKELETON_KEY,
    Encoder,
    check_leaf,
    convert_leaf,
    decode,
    is_key,
    leaf_kinds,
    leaf_name,
    mismatch_message,
)

ARRAYS = "arrays"
META = "nnfun"
EXTRA = "pip install 'nnfun[scale]'"


def spans_processes(tree: Any) -> bool:
    """Whether any array of ``tree`` lives partly on devices of other processes."""
    return any(
        isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
        for leaf in jax.tree.leaves(tree)
    )


def import_orbax(why: str) -> Any:
    """``orbax.checkpoint``, or an ImportError naming the extra that installs it."""
    try:
        # By name, like every optional dependency (test_package: static imports are core ones).
        ocp = importlib.import_module("orbax.checkpoint")
    except ImportError:
        raise ImportError(
            f"{why} needs Orbax (the orbax-checkpoint package), which is not installed. "
            f"Fix: {EXTRA}"
        ) from None
    return ocp


def _device_data(leaf: Any) -> Any:
    # Arrays stay where they are (Orbax copies each process's shards); NumPy and
    # Python values become host arrays, written once by the primary process.
    return leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)


def encode(tree: Any, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({name: array}, metadata)`` for an Orbax checkpoint of ``tree`` at ``step``."""
    encoder = Encoder(host=_device_data)
    skeleton = encoder.encode(tree)
    tensors = {
        name: [dtype_name(array.dtype, name), list(array.shape)]
        for name, array in encoder.tensors.items()
    }
    meta = {
        FORMAT_KEY: FORMAT_VERSION,
        SKELETON_KEY: skeleton,
        "nnfun.step": step,
        "nnfun.processes": jax.process_count(),
        "nnfun.tensors": tensors,
    }
    return encoder.tensors, meta


class OrbaxSaver:
    """One Orbax ``AsyncCheckpointer``: a save returns once the shards are copied to host
    memory, writes in a background thread, and the next save (or :meth:`wait`) waits."""

    def __init__(self) -> None:
        ocp = import_orbax("saving arrays that span several processes")
        self._ocp = ocp
        self._checkpointer = ocp.AsyncCheckpointer(ocp.CompositeCheckpointHandler())
        _finish_at_exit(self)

    def save(self, path: str, tree: Any, step: int) -> None:
        arrays, meta = encode(tree, step)
        args = self._ocp.args.Composite(
            **{ARRAYS: self._ocp.args.PyTreeSave(arrays), META: self._ocp.args.JsonSave(meta)}
        )
        # force: a step saved again replaces the old directory (as a file would be replaced).
        self._checkpointer.save(os.path.abspath(path), args=args, force=True)

    def wait(self) -> None:
        self._checkpointer.wait_until_finished()

    def close(self) -> None:
        self._checkpointer.close()
        _OPEN.discard(self)


# Savers not closed yet: waited for when Python exits (see _finish_at_exit).
_OPEN: set[OrbaxSaver] = set()
_registered = False


def _finish_at_exit(saver: OrbaxSaver) -> None:
    """Makes a script that ends right after a save still commit it.

    Orbax's background write needs thread pools that Python closes when the
    interpreter starts to exit, before ``atexit`` handlers run; a save still in
    flight would then fail and leave only its temporary directory. The hooks of
    ``threading._register_atexit`` run earlier (``concurrent.futures`` registers
    its own there), last registered first, so this wait comes before the pools
    close. The set holds each saver until :meth:`OrbaxSaver.close`, so a manager
    dropped right after ``save`` is still waited for.
    """
    global _registered
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # not CPython: close() or wait_until_finished() before exiting
        return
    if not _registered:
        import concurrent.futures.thread  # noqa: F401  (its hook first, so it runs after ours)

        register(_wait_for_open_savers)
        _registered = True
    _OPEN.add(saver)


def _wait_for_open_savers() -> None:
    for saver in list(_OPEN):
        try:
            saver.wait()
        except Exception as e:  # an exception here would stop Python's other exit hooks
            print(f"nnfun: the last Orbax checkpoint was not committed: {e!r}", file=sys.stderr)
    _OPEN.clear()


def _checkpointer(why: str) -> tuple[Any, Any]:
    ocp = import_orbax(why)
    return ocp, ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``nnfun`` item of an Orbax checkpoint (skeleton, step, processes, tensors)."""
    ocp, checkpointer = _checkpointer("reading an Orbax checkpoint")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such Orbax checkpoint directory")
    try:
        item = checkpointer.restore(
            os.path.abspath(path), args=ocp.args.Composite(**{META: ocp.args.JsonRestore()})
        )[META]
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: not an nnfun Orbax checkpoint ({e})") from None
    if not isinstance(item, dict) or SKELETON_KEY not in item or "nnfun.tensors" not in item:
        raise CheckpointError(f"{path}: not an nnfun Orbax checkpoint (no {SKELETON_KEY})")
    return item


def _read(path: str | os.PathLike, targets: dict[str, Any]) -> dict[str, Any]:
    """Reads the named tensors: a ``ShapeDtypeStruct`` target onto its sharding (or the
    saved one when it has none), any other target into host memory as NumPy."""
    ocp, checkpointer = _checkpointer("reading an Orbax checkpoint")
    restore_args = {
        name: ocp.ArrayRestoreArgs(sharding=t.sharding, global_shape=t.shape, dtype=t.dtype)
        if isinstance(t, jax.ShapeDtypeStruct)
        else ocp.RestoreArgs(restore_type=np.ndarray)
        for name, t in targets.items()
    }
    args = ocp.args.PyTreeRestore(item=targets, restore_args=restore_args)
    with warnings.catch_warnings():
        # Reading onto the saved sharding is what was asked for; the process count was checked.
        warnings.filterwarnings("ignore", "Sharding info not provided", UserWarning)
        restored = checkpointer.restore(os.path.abspath(path), args=ocp.args.Composite(arrays=args))
    return dict(restored[ARRAYS])


def _host_targets(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        name: np.zeros((0,) * len(shape), DTYPES[dtype])
        for name, (dtype, shape) in meta["nnfun.tensors"].items()
    }


def restore(path: str | os.PathLike, like: Any = None) -> Any:
    """Reads an Orbax checkpoint like :func:`nnfun.load` reads a file.

    Each array leaf of ``like`` (an array or a ``jax.ShapeDtypeStruct``) is read
    onto its sharding: every process reads only its own shards, from a checkpoint
    written by any number of processes onto any mesh that holds the arrays. NumPy
    leaves and Python scalars are read whole into host memory; without ``like``
    everything is (NumPy arrays in the saved tree's structure).
    """
    meta = read_meta(path)
    skeleton = meta[SKELETON_KEY]
    kinds = leaf_kinds(skeleton, path)
    if like is None:
        return decode(path, skeleton, _read(path, _host_targets(meta)))
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = {leaf_name(p): leaf for p, leaf in flat}
    targets = _targets(path, meta, leaves, kinds)
    arrays = _read(path, targets)
    restored = [convert_leaf(leaf, arrays[name]) for name, leaf in leaves.items()]
    return jax.tree_util.tree_unflatten(treedef, restored)


def _targets(
    path: Any, meta: dict[str, Any], leaves: dict[str, Any], kinds: dict[str, Any]
) -> dict[str, Any]:
    """What to read each tensor into, after checking ``like`` against the checkpoint."""
    stored = meta["nnfun.tensors"]
    missing = [n for n in leaves if n not in stored]
    unexpected = sorted(set(stored) - set(leaves))
    problems, targets = [], {}
    for name, leaf in leaves.items():
        if name not in stored:
            continue
        dtype, shape = DTYPES[stored[name][0]], tuple(stored[name][1])
        problem = check_leaf(name, leaf, shape, dtype, kinds.get(name))
        if problem is not None:
            problems.append(problem)
            continue
        targets[name] = _target(path, meta, name, leaf, shape, dtype)
    if missing or unexpected or problems:
        raise CheckpointError(mismatch_message(path, missing, unexpected, problems))
    return targets


def _target(path: Any, meta: dict, name: str, leaf: Any, shape: tuple, dtype: Any) -> Any:
    if not isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return np.zeros((0,) * len(shape), dtype)  # read whole into host memory
    sharding = getattr(leaf, "sharding", None)
    if is_key(leaf) and sharding is not None:
        sharding = _key_data_sharding(sharding, len(shape))
    if sharding is None:
        _check_same_processes(path, meta, name)
    else:
        check_fits(name, shape, sharding)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _key_data_sharding(sharding: Any, ndim: int) -> Any:
    # A key array of shape S holds data of shape S + (k,): split it as the keys are.
    if isinstance(sharding, NamedSharding):
        spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
        return NamedSharding(sharding.mesh, PartitionSpec(*spec))
    return sharding


def _check_same_processes(path: Any, meta: dict, name: str) -> None:
    saved, now = meta["nnfun.processes"], jax.process_count()
    if saved != now:
        raise CheckpointError(
            f"{path} was saved by {saved} processes and this run has {now}; like's leaf "
            f"{name!r} has no sharding, so it would be read onto the saved devices, which "
            "this run does not have. Fix: give that leaf a target sharding "
            "(jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec)), or an "
            "array placed on your mesh), or read it into host memory (a NumPy leaf, or "
            "like=None)."
        )


def check_fits(name: str, shape: tuple, sharding: Any) -> None:
    """Raises a ``CheckpointError`` if ``sharding``'s mesh cannot split ``shape`` evenly."""
    if not isinstance(sharding, NamedSharding):
        return
    mesh_shape = dict(sharding.mesh.shape)
    if len(sharding.spec) > len(shape):
        raise CheckpointError(
            f"cannot restore {name!r} (shape {list(shape)}) with sharding {sharding.spec}: "
            f"it names {len(sharding.spec)} dimensions, the array has {len(shape)}. Fix: "
            "a PartitionSpec with at most one entry per dimension."
        )
    for dim, entry in enumerate(sharding.spec):
        axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
        size = math.prod(mesh_shape[a] for a in axes)
        if shape[dim] % size:
            raise CheckpointError(
                f"cannot restore {name!r} (shape {list(shape)}) onto mesh {mesh_shape}: "
                f"dimension {dim} (size {shape[dim]}) is split over mesh axis "
                f"{' x '.join(repr(a) for a in axes)} of size {size}, which does not divide "
                f"it. Fix: restore onto a mesh whose {axes[0]!r} axis divides {shape[dim]}, "
                f"or give {name!r} a sharding that does not split dimension {dim}."
            )


def orbax_to_safetensors(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Converts an Orbax checkpoint (saved by several processes) into one safetensors file.

    The file is what a single-process :class:`CheckpointManager` would have
    written for the same tree: ``nf.load(path, like=tree)`` restores it. Every
    array is read whole into host memory, so run it in one process with room for
    the whole checkpoint.

    Args:
        source: an Orbax checkpoint directory (``<dir>/ckpt_<step>.orbax``).
        path: the file to write, atomically.

    Raises:
        ImportError: Orbax is not installed (``pip install 'nnfun[scale]'``).
        CheckpointError: ``source`` is not an nnfun Orbax checkpoint.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, nnfun as nf
        >>> directory = tempfile.mkdtemp()
        >>> mgr = nf.checkpoint.CheckpointManager(directory, format="orbax")
        >>> source = mgr.save(7, {"w": jnp.arange(3.0), "step": 7})
        >>> mgr.close()  # waits for the asynchronous write
        >>> path = os.path.join(directory, "w.safetensors")
        >>> nf.checkpoint.orbax_to_safetensors(source, path)
        >>> nf.load(path)
        {'w': array([0., 1., 2.], dtype=float32), 'step': 7}
    """
    meta = read_meta(source)
    tensors = _read(source, _host_targets(meta))
    metadata = {
        FORMAT_KEY: FORMAT_VERSION,
        SKELETON_KEY: json.dumps(meta[SKELETON_KEY]),
        "nnfun.step": str(meta["nnfun.step"]),
    }
    write_safetensors(path, tensors, metadata)
