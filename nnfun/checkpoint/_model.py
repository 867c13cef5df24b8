"""A model's JSON config stored with its arrays: :func:`save_model`, :func:`load_model`."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._config import from_config, to_config
from ..core._layer import Layer
from ._format import CheckpointError, read_header
from ._tree import load, save_tree

MODEL_KEY = "nnfun.model"


def save_model(path: str | os.PathLike, model: Layer, params: Any, state: Any) -> None:
    """Writes a model's config, params and state to one safetensors file, atomically.

    The config (``nf.to_config(model)``) goes into the header's metadata as JSON,
    so :func:`load_model` rebuilds the model without the code that built it.

    Args:
        path: the file to write.
        model: the layer (its config must be writable: no lambdas or closures).
        params: its params tree.
        state: its state tree (``{}`` for stateless models).

    Example:
        >>> import os, tempfile, jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Sequential([nf.Dense(4), jax.nn.relu, nf.Dense(2)])
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 3)))
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> nf.save_model(path, model, params, state)
        >>> model2, params2, state2 = nf.load_model(path)
        >>> model2 == model, params2["2"]["kernel"].shape
        (True, (4, 2))
    """
    if not isinstance(model, Layer):
        raise TypeError(f"save_model expects an nnfun Layer, got {type(model).__name__}")
    config = json.dumps(to_config(model))
    save_tree(path, {"params": params, "state": state}, {MODEL_KEY: config})


def load_model(path: str | os.PathLike) -> tuple[Layer, Any, Any]:
    """Rebuilds ``(model, params, state)`` from a file written by :func:`save_model`.

    Built-in layers need no code; a user-defined layer class is imported by the
    path stored in the config (``"my_package.layers.Scale"``), which must be
    importable. Importing those classes is the only code that runs: arrays are
    bytes and the config is JSON.

    Returns:
        The model, and its params and state as nested dicts of JAX arrays (64-bit
        arrays stay NumPy unless ``jax_enable_x64`` is on, so no precision is lost).

    Raises:
        CheckpointError: the file has no model config, or a layer class named in it
            cannot be imported, or the file is truncated or corrupted.

    Example:
        >>> import os, tempfile, jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Residual(nf.Dense(3))
        >>> path = os.path.join(tempfile.mkdtemp(), "residual.safetensors")
        >>> nf.save_model(path, model, *model.init(jax.random.key(0), jnp.zeros((1, 3))))
        >>> nf.load_model(path)[0] == model
        True
    """
    _, metadata, _ = read_header(path)
    if MODEL_KEY not in metadata:
        raise CheckpointError(
            f"{path} holds no model config (it was not written by nf.save_model); "
            "read its arrays with nf.load(path)"
        )
    try:
        model = from_config(json.loads(metadata[MODEL_KEY]))
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the model from its config: {e}") from e
    tree = load(path)
    if not (isinstance(tree, dict) and set(tree) == {"params", "state"}):
        raise CheckpointError(f"{path}: expected a tree {{'params', 'state'}} next to the config")
    params, state = (jax.tree.map(_to_jax, tree[k]) for k in ("params", "state"))
    return model, params, state


def _to_jax(leaf: Any) -> Any:
    # jnp.asarray would silently narrow float64/int64 to 32 bits when x64 is off.
    if isinstance(leaf, np.ndarray) and jnp.dtype(jax.dtypes.canonicalize_dtype(leaf.dtype)) == (
        leaf.dtype
    ):
        return jnp.asarray(leaf)
    return leaf
