"""Tensors of a PyTorch-style ``state_dict`` (a ``.safetensors`` file) into an nnfun params tree."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._format import CheckpointError, read_safetensors
from ._tree import describe, leaf_name, mismatch_message, to_device

Transform = Callable[[np.ndarray], np.ndarray]
Mapping = Callable[[str], "str | tuple[str, Transform] | None"]


def import_state_dict(
    path: str | os.PathLike, like: Any, mapping: Mapping, *, strict: bool = True
) -> Any:
    """Reads a safetensors file of PyTorch-named tensors into a tree shaped like ``like``.

    ``mapping(name)`` is called with every tensor name in the file (``"0.weight"``)
    and returns one of:

    - ``None``: skip the tensor;
    - ``"0/kernel"``: the ``/``-path of the leaf of ``like`` it fills;
    - ``("0/kernel", transform)``: the same, after ``transform(array)``. PyTorch's
      ``nn.Linear`` stores its weight as ``(out, in)``, nnfun's ``Dense`` kernel is
      ``(in, out)``: pass ``np.transpose``. A conv weight ``(out, in, h, w)`` becomes
      ``(h, w, in, out)`` with ``lambda w: w.transpose(2, 3, 1, 0)``.

    Floating-point tensors are cast to the dtype of their ``like`` leaf (a float16
    file into float32 params, say); every other dtype and every shape must match.

    Args:
        path: a ``.safetensors`` file (``safetensors.torch.save_file(model.state_dict())``).
        like: the params tree to fill (arrays or ``jax.ShapeDtypeStruct`` leaves, e.g.
            from ``nf.init_shapes``).
        mapping: the name function described above.
        strict: raise when a leaf of ``like`` receives no tensor; with ``False`` such
            leaves keep their value from ``like`` (which must then be arrays).

    Returns:
        A tree of ``like``'s structure with the imported arrays.

    Raises:
        CheckpointError: a target path is not in ``like``, two tensors map to one path,
            a shape or dtype differs, or (``strict``) leaves are left unfilled.

    Example:
        >>> import os, tempfile, jax, jax.numpy as jnp, numpy as np, nnfun as nf
        >>> from safetensors.numpy import save_file
        >>> path = os.path.join(tempfile.mkdtemp(), "torch.safetensors")
        >>> save_file({"fc.weight": np.ones((3, 4), np.float32),
        ...            "fc.bias": np.zeros(3, np.float32)}, path)
        >>> like, _ = nf.init_shapes(nf.Dense(3), jnp.zeros((1, 4)))
        >>> names = {"fc.weight": ("kernel", np.transpose), "fc.bias": "bias"}
        >>> params = nf.checkpoint.import_state_dict(path, like, names.get)
        >>> params["kernel"].shape
        (4, 3)
    """
    tensors, _ = read_safetensors(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    targets = {leaf_name(p): leaf for p, leaf in flat}
    filled: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    unexpected: list[str] = []
    for name, array in tensors.items():
        target, transform = _target(mapping, name)
        if target is None:
            continue
        if target not in targets:
            unexpected.append(f"{target} (from {name})")
            continue
        if target in sources:
            problems.append(f"{target}: filled by both {sources[target]} and {name}")
            continue
        sources[target] = name
        value = _convert(name, target, transform(array), targets[target], problems)
        if value is not None:
            filled[target] = value
    missing = [t for t in targets if t not in sources] if strict else []
    if missing or unexpected or problems:
        raise CheckpointError(mismatch_message(path, missing, unexpected, problems))
    leaves = [filled.get(name, leaf) for name, leaf in targets.items()]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _target(mapping: Mapping, name: str) -> tuple[str | None, Transform]:
    result = mapping(name)
    if result is None or isinstance(result, str):
        return result, _identity
    if isinstance(result, tuple) and len(result) == 2 and callable(result[1]):
        return result[0], result[1]
    raise TypeError(
        f"mapping({name!r}) returned {result!r}; return None, a path string or (path, transform)"
    )


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def _convert(name: str, target: str, array: Any, leaf: Any, problems: list) -> Any:
    array = np.asarray(array)
    dtype = np.dtype(leaf.dtype)
    both_float = jnp.issubdtype(array.dtype, jnp.floating) and jnp.issubdtype(dtype, jnp.floating)
    if array.shape != tuple(leaf.shape) or (array.dtype != dtype and not both_float):
        problems.append(
            f"{target} (from {name}): expected {describe(leaf.shape, dtype)}, "
            f"found {describe(array.shape, array.dtype)}"
        )
        return None
    array = array.astype(dtype, copy=False)
    if isinstance(leaf, (np.ndarray, np.generic)):
        return np.array(array)
    return to_device(array, leaf)
