"""Pytrees to and from checkpoint files: :func:`save` and :func:`load`.

Every leaf becomes one tensor named by its path, ``"params/0/kernel"`` (dict keys,
sequence indices and attribute names joined by ``/``). The tree's shape (which
nodes are dicts, lists, tuples, NamedTuples or dataclasses, where the ``None``
leaves, Python scalars and PRNG keys are) is a JSON "skeleton" in the header's
metadata. ``load(path)`` rebuilds plain dicts, lists and tuples from it without
importing anything; ``load(path, like=tree)`` takes the structure from ``like``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from ..core._params import unflatten_params
from ._format import CheckpointError, read_safetensors, write_safetensors

SKELETON_KEY = "nnfun.tree"
FORMAT_KEY = "nnfun.format"
FORMAT_VERSION = "1"
ROOT_NAME = "__root__"  # the tensor name of a tree that is a single leaf
PY_TYPES = {"bool": (bool, np.bool_), "int": (int, np.int64), "float": (float, np.float64)}
PY_KINDS = {"bool": "b", "int": "iu", "float": "f"}  # NumPy dtype kinds each may load from
_MAX_LISTED = 20


def _segment(entry: Any) -> str:
    for attribute in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def leaf_name(path: tuple) -> str:
    """The tensor name of a leaf at a ``jax.tree_util`` key path: ``"a/0/b"``.

    Example:
        >>> import jax, nnfun as nf
        >>> paths, _ = jax.tree_util.tree_flatten_with_path({"a": [0, {"b": 1}]})
        >>> [nf.checkpoint.leaf_name(path) for path, _ in paths]
        ['a/0', 'a/1/b']
    """
    return "/".join(_segment(entry) for entry in path) or ROOT_NAME


def _join(prefix: str, segment: Any) -> str:
    return f"{prefix}/{segment}" if prefix else str(segment)


def is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def key_impl(leaf: Any) -> str:
    if isinstance(leaf, jax.Array):
        return str(jax.random.key_impl(leaf))
    return str(leaf.dtype).removeprefix("key<").removesuffix(">")  # a ShapeDtypeStruct


def is_python_scalar(leaf: Any) -> bool:
    return isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic)


def py_kind(leaf: bool | int | float) -> str:
    return "bool" if isinstance(leaf, bool) else "int" if isinstance(leaf, int) else "float"


class Encoder:
    """Walks a pytree, collecting ``{name: array}`` and returning its JSON skeleton.

    ``host`` turns each array leaf (and each key's data) into what is stored:
    ``np.asarray`` for a file; the identity keeps arrays that span processes on
    their devices for Orbax.
    """

    def __init__(self, host: Callable[[Any], Any] = np.asarray) -> None:
        self.tensors: dict[str, Any] = {}
        self.host = host

    def add(self, name: str, array: Any) -> str:
        name = name or ROOT_NAME
        if name in self.tensors or name == "__metadata__":
            raise CheckpointError(
                f"two leaves map to the tensor name {name!r} (a dict key containing '/'?); "
                "rename the keys so that every '/'-joined path is unique"
            )
        self.tensors[name] = array
        return name

    def encode(self, tree: Any, prefix: str = "") -> Any:
        if tree is None:
            return None
        if is_key(tree):
            data = self.host(jax.random.key_data(tree))
            return {"key": self.add(prefix, data), "impl": key_impl(tree)}
        if is_python_scalar(tree):
            kind = py_kind(tree)
            array: np.ndarray = np.asarray(tree, dtype=PY_TYPES[kind][1])
            return {"py": kind, "t": self.add(prefix, array)}
        if isinstance(tree, (np.ndarray, np.generic, jax.Array)):
            return {"t": self.add(prefix, self.host(tree))}
        if isinstance(tree, dict):
            return {
                "dict": [[_json_key(k), self.encode(v, _join(prefix, k))] for k, v in tree.items()]
            }
        if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
            names = cast(Any, tree)._fields  # a namedtuple
            fields = [[f, self.encode(getattr(tree, f), _join(prefix, f))] for f in names]
            return {"namedtuple": _type_name(tree), "fields": fields}
        if isinstance(tree, (list, tuple)):
            items = [self.encode(v, _join(prefix, i)) for i, v in enumerate(tree)]
            return {"list" if isinstance(tree, list) else "tuple": items}
        return self._encode_node(tree, prefix)

    def _encode_node(self, tree: Any, prefix: str) -> Any:
        # Any other registered pytree node (a dataclass such as TrainState): one level down.
        children, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda c: c is not tree)
        if len(children) == 1 and children[0][0] == ():
            raise CheckpointError(
                f"{prefix or ROOT_NAME}: cannot save a leaf of type {type(tree).__name__}; "
                "leaves must be arrays, PRNG keys, Python scalars or None"
            )
        pairs = []
        for path, child in children:
            segment = leaf_name(path)
            pairs.append([segment, self.encode(child, _join(prefix, segment))])
        return {"node": _type_name(tree), "children": pairs}


def _json_key(key: Any) -> Any:
    return key if isinstance(key, (str, int)) and not isinstance(key, bool) else str(key)


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def save(path: str | os.PathLike, tree: Any, *, metadata: Mapping[str, str] | None = None) -> None:
    """Writes a pytree of arrays to a safetensors file, atomically.

    Leaves may be arrays (NumPy or JAX, any supported dtype including bfloat16,
    0-d included), typed PRNG key arrays (``jax.random.key``), Python scalars and
    ``None``; nodes may be dicts, lists, tuples, NamedTuples (optax states) and
    registered dataclasses. The file is written under a temporary name, fsynced and
    renamed, so ``path`` holds the old file or the new one, never a partial one.
    Missing parent directories are created.

    Args:
        path: the file to write (conventionally ``*.safetensors``).
        tree: the pytree.
        metadata: extra strings to store in the header (keys must not start with
            ``"nnfun."``).

    Example:
        >>> import os, tempfile, jax.numpy as jnp, nnfun as nf
        >>> path = os.path.join(tempfile.mkdtemp(), "tree.safetensors")
        >>> nf.save(path, {"w": jnp.ones((2, 3), jnp.bfloat16), "step": 7})
        >>> tree = nf.load(path)
        >>> tree["w"].dtype, tree["w"].shape, tree["step"]
        (dtype(bfloat16), (2, 3), 7)
    """
    extra = dict(metadata or {})
    if any(k.startswith("nnfun.") for k in extra):
        raise ValueError(f"metadata keys starting with 'nnfun.' are reserved, got {list(extra)}")
    save_tree(path, tree, extra)


def save_tree(path: str | os.PathLike, tree: Any, metadata: Mapping[str, str]) -> None:
    """:func:`save` without the check on reserved metadata keys (for nnfun's own keys)."""
    extra = dict(metadata)
    encoder = Encoder()
    skeleton = encoder.encode(tree)
    extra.update({FORMAT_KEY: FORMAT_VERSION, SKELETON_KEY: json.dumps(skeleton)})
    write_safetensors(path, encoder.tensors, extra)


def load(path: str | os.PathLike, like: Any = None) -> Any:
    """Reads a pytree written by :func:`save` (or any safetensors file).

    Args:
        path: the file.
        like: optional pytree giving the structure to restore (leaves may be arrays,
            ``jax.ShapeDtypeStruct``, PRNG keys or Python scalars). Every leaf's
            shape and dtype is checked against the file; each value comes back as
            the kind of its ``like`` leaf (a JAX array, placed with the leaf's
            sharding; a NumPy array; a Python scalar; a PRNG key).

    Returns:
        With ``like``, a tree of exactly ``like``'s structure (NamedTuples and
        dataclasses included). Without it, nested dicts, lists and tuples of NumPy
        arrays (NamedTuples and dataclasses become dicts of their fields), Python
        scalars, PRNG keys and ``None``; a file written by another tool gives
        dicts nested by the ``/`` in its tensor names.

    Raises:
        CheckpointError: the file is truncated or corrupted, or does not match
            ``like`` (the message lists the keys missing and unexpected and every
            shape or dtype that differs).

    Example:
        >>> import os, tempfile, jax, jax.numpy as jnp, optax, nnfun as nf
        >>> opt_state = optax.adam(1e-3).init({"w": jnp.zeros(3)})
        >>> path = os.path.join(tempfile.mkdtemp(), "opt.safetensors")
        >>> nf.save(path, opt_state)
        >>> type(nf.load(path, like=opt_state)[0]).__name__
        'ScaleByAdamState'
    """
    tensors, metadata = read_safetensors(path)
    skeleton = _skeleton(path, metadata, tensors)
    if like is None:
        if skeleton is None:
            return _nest(path, tensors)
        return decode(path, skeleton, tensors)
    return _restore(path, like, tensors, leaf_kinds(skeleton))


def _skeleton(path: Any, metadata: Mapping[str, str], tensors: Mapping[str, Any]) -> Any:
    if SKELETON_KEY not in metadata:
        return None
    try:
        skeleton = json.loads(metadata[SKELETON_KEY])
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupted {SKELETON_KEY} metadata ({e})") from None
    used = set(leaf_kinds(skeleton, path))
    if used != set(tensors):
        raise CheckpointError(
            f"{path}: corrupted {SKELETON_KEY} metadata: it names tensors "
            f"{sorted(used - set(tensors))[:_MAX_LISTED]} that are not in the file, and the "
            f"file has tensors {sorted(set(tensors) - used)[:_MAX_LISTED]} that it does not name"
        )
    return skeleton


def _children(node: dict[str, Any]) -> list[Any]:
    for kind in ("dict", "fields", "children"):
        if kind in node:
            return [child for _, child in node[kind]]
    return list(node.get("list", node.get("tuple", [])))


def leaf_kinds(skeleton: Any, path: Any = None) -> dict[str, dict]:
    """``{tensor name: skeleton leaf}`` (``{"t": ...}``, ``{"key": ..., "impl": ...}``, ...)."""
    kinds: dict[str, dict] = {}
    stack = [skeleton]
    try:
        while stack:
            node = stack.pop()
            if node is None:
                continue
            if "t" in node or "key" in node:
                kinds[node.get("t", node.get("key"))] = node
            else:
                stack.extend(_children(node))
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: corrupted {SKELETON_KEY} metadata ({e})") from None
    return kinds


def decode(path: Any, node: Any, tensors: Mapping[str, np.ndarray]) -> Any:
    try:
        return _decode_node(node, tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupted {SKELETON_KEY} metadata ({e!r})") from None


def _decode_node(node: Any, tensors: Mapping[str, np.ndarray]) -> Any:
    if node is None:
        return None
    if "key" in node:
        return jax.random.wrap_key_data(jnp.asarray(tensors[node["key"]]), impl=node["impl"])
    if "py" in node:
        return PY_TYPES[node["py"]][0](tensors[node["t"]].item())
    if "t" in node:
        return tensors[node["t"]]
    if "list" in node:
        return [_decode_node(child, tensors) for child in node["list"]]
    if "tuple" in node:
        return tuple(_decode_node(child, tensors) for child in node["tuple"])
    pairs = node.get("dict", node.get("fields", node.get("children")))
    if pairs is None:
        raise ValueError(f"unrecognised node {sorted(node)}")
    return {key: _decode_node(child, tensors) for key, child in pairs}


def _nest(path: Any, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    try:
        return unflatten_params(tensors)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e


def describe(shape: tuple, dtype: Any) -> str:
    return f"{np.dtype(dtype)}{list(shape)}"


def _restore(path: Any, like: Any, tensors: Mapping[str, np.ndarray], kinds: dict[str, Any]) -> Any:
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = [leaf_name(p) for p, _ in flat]
    missing = [n for n in names if n not in tensors]
    unexpected = sorted(set(tensors) - set(names))
    problems: list[str] = []
    leaves = []
    for name, (_, leaf) in zip(names, flat, strict=True):
        if name in tensors:
            array = tensors[name]
            problem = check_leaf(name, leaf, array.shape, array.dtype, kinds.get(name))
            if problem is None:
                leaves.append(convert_leaf(leaf, array))
            else:
                problems.append(problem)
    if missing or unexpected or problems:
        raise CheckpointError(mismatch_message(path, missing, unexpected, problems))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def mismatch_message(path: Any, missing: list, unexpected: list, problems: list) -> str:
    def listed(items: list[str]) -> str:
        more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
        return ", ".join(items[:_MAX_LISTED]) + more

    lines = [f"{path} does not match `like`:"]
    if missing:
        lines.append(f"  keys missing (in like, not in the file): {listed(missing)}")
    if unexpected:
        lines.append(f"  keys unexpected (in the file, not in like): {listed(unexpected)}")
    lines += [f"  {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more differences")
    return "\n".join(lines)


def check_leaf(name: str, leaf: Any, shape: tuple, dtype: Any, kind: Any) -> str | None:
    """Why a stored tensor of ``shape`` and ``dtype`` cannot fill ``leaf``, or ``None``."""
    found = describe(shape, dtype)
    if is_key(leaf):
        return _check_key(name, leaf, found, kind)
    if is_python_scalar(leaf):
        wanted = py_kind(leaf)
        if tuple(shape) != () or np.dtype(dtype).kind not in PY_KINDS[wanted]:
            return f"{name}: expected a Python {wanted} (0-d), found {found}"
        return None
    if not isinstance(leaf, (np.ndarray, np.generic, jax.Array, jax.ShapeDtypeStruct)):
        return f"{name}: cannot restore into a like leaf of type {type(leaf).__name__}"
    expected = describe(np.shape(leaf), leaf.dtype)
    return f"{name}: expected {expected}, found {found}" if expected != found else None


def _check_key(name: str, leaf: Any, found: str, kind: Any) -> str | None:
    impl = key_impl(leaf)
    if not kind or "key" not in kind:
        return f"{name}: expected a PRNG key ({impl}), found a plain array"
    if kind["impl"] != impl:
        return f"{name}: expected a {impl} PRNG key, found a {kind['impl']} key"
    data = jax.eval_shape(jax.random.key_data, leaf)
    if describe(data.shape, data.dtype) != found:
        return f"{name}: expected key data {describe(data.shape, data.dtype)}, found {found}"
    return None


def convert_leaf(leaf: Any, array: Any) -> Any:
    """A stored tensor (checked by :func:`check_leaf`) as the kind of ``leaf``."""
    if is_key(leaf):
        key = jax.random.wrap_key_data(jnp.asarray(array), impl=key_impl(leaf))
        return to_device(key, leaf)
    if is_python_scalar(leaf):
        return type(leaf)(np.asarray(array).item())
    if isinstance(leaf, (np.ndarray, np.generic)):
        return np.array(array)
    return to_device(array, leaf)


def to_device(array: Any, leaf: Any) -> jax.Array:
    sharding = getattr(leaf, "sharding", None)
    return jax.device_put(array, sharding) if sharding is not None else jnp.asarray(array)
