"""Export: a model with its weights as one serialized ``jax.export`` artifact (StableHLO).

The file holds the compiled-to-StableHLO function ``inputs -> outputs`` of
``model.apply(params, state, inputs, train=False)``, weights included as
constants, with a symbolic batch size. Loading and calling it needs JAX alone::

    exported = jax.export.deserialize(open(path, "rb").read())
    y = exported.call(x)        # any batch size

Why the weights are baked in, and the size limit that follows: ``docs/design.md``
("Export").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from ..core._layer import Layer, Params, State
from ._format import atomic_open


def _check_input(example_input: Any) -> None:
    leaves = jax.tree_util.tree_leaves_with_path(example_input)
    if not leaves:
        raise TypeError(
            f"nf.export: example_input holds no arrays (got {example_input!r}). Fix: pass one "
            "batch of inputs, e.g. ids[:1], or a jax.ShapeDtypeStruct."
        )
    for where, leaf in leaves:
        if not isinstance(leaf, jax.Array | np.ndarray | jax.ShapeDtypeStruct):
            name = "example_input" + jax.tree_util.keystr(where)
            raise TypeError(
                f"nf.export: {name} is a {type(leaf).__name__}, expected an array or a "
                "jax.ShapeDtypeStruct (the exported function is specialised to its dtype and "
                "its shape past the batch axis). Fix: jnp.asarray(...) with the dtype the "
                "model takes."
            )


def _batch_specs(example_input: Any) -> Any:
    # One symbol for the leading axis of every input: they share the batch size.
    (batch,) = jax.export.symbolic_shape("batch")

    def spec(leaf: Any) -> jax.ShapeDtypeStruct:
        shape = tuple(np.shape(leaf))
        dims = (batch, *shape[1:]) if shape else ()
        return jax.ShapeDtypeStruct(dims, leaf.dtype)

    return jax.tree.map(spec, example_input)


def _check_path(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"nf.export: {path!r} is a directory. Fix: name a file, e.g. "
            f"{os.path.join(path, 'model.jax_exported')!r}."
        )
    parent = os.path.dirname(os.path.abspath(path))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"nf.export: cannot write {path!r}: {existing!r} is not a writable directory. "
            "Fix: choose a path in a directory you can write to."
        )
    return path


def export(
    model: Layer,
    params: Params,
    state: State,
    example_input: Any,
    path: str | os.PathLike[str],
    *,
    polymorphic_shapes: Any = None,
    constraints: Sequence[str] = (),
    platforms: Sequence[str] | None = None,
) -> jax.export.Exported:
    """Writes ``model`` with its weights to ``path`` as a serialized ``jax.export`` artifact.

    The artifact is the StableHLO of ``inputs -> model.apply(params, state,
    inputs, train=False)[0]`` with ``params`` and ``state`` as constants. Any
    program with JAX (and no nnfun) loads it with ``jax.export.deserialize``
    and calls it with ``.call(inputs)``. The write is atomic.

    Args:
        model: the model.
        params: its params (baked into the artifact).
        state: its state (baked in; the state the model returns is dropped).
        example_input: one batch of inputs, or ``jax.ShapeDtypeStruct`` s: an array
            or a dict/tuple of them (``{"inputs": ids, "mask": m}``). It fixes the
            dtypes and every axis but the leading (batch) one.
        path: the file to write (its parent directories are created).
        polymorphic_shapes: ``None`` makes axis 0 of every input the one symbolic
            size ``batch``; or shape specs as ``jax.export.symbolic_args_specs``
            takes them (``"(batch, time)"`` for ids of any length).
        constraints: bounds on the symbols, as ``jax.export.symbolic_shape``
            takes them: ``("time <= 256",)`` when the model checks a length
            against its ``max_length``.
        platforms: where the artifact may run, e.g. ``("cpu", "cuda")``;
            ``None``: the default backend of this process.

    Returns:
        The ``jax.export.Exported`` that was written.

    Example:
        >>> import os, tempfile, jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Sequential([nf.Dense(3)])
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> with tempfile.TemporaryDirectory() as directory:
        ...     path = os.path.join(directory, "dense.jax_exported")
        ...     _ = nf.export(model, params, state, jnp.zeros((1, 4)), path)
        ...     with open(path, "rb") as file:
        ...         loaded = jax.export.deserialize(file.read())
        >>> loaded.call(jnp.ones((5, 4))).shape
        (5, 3)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"nf.export: expected an nnfun Layer as model, got {type(model).__name__}")
    _check_input(example_input)
    path = _check_path(path)
    if polymorphic_shapes is None:
        specs = _batch_specs(example_input)
    else:
        specs = jax.export.symbolic_args_specs(example_input, polymorphic_shapes, constraints)

    def serve(inputs: Any) -> Any:
        return model.apply(params, state, inputs, train=False)[0]

    exported = jax.export.export(jax.jit(serve), platforms=platforms)(specs)
    try:
        data = exported.serialize()
    except ImportError as e:  # jax serializes with the flatbuffers package, an optional one
        raise ImportError(
            f"nf.export: {e}. Fix: pip install 'nnfun[export]' (or flatbuffers)."
        ) from e
    with atomic_open(path) as file:
        file.write(data)
    return exported
