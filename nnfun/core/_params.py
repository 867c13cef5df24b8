"""Parameter tools: counts, ``"a/b/c"`` paths, and label trees for optax."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np


def count_params(tree: Any) -> int:
    """The number of scalars in ``tree``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> params, _ = nf.Dense(3).init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> nf.count_params(params)
        15
    """
    return int(sum(np.prod(np.shape(leaf), dtype=np.int64) for leaf in jax.tree.leaves(tree)))


def flatten_params(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Flattens nested dicts to ``{"a/b/c": leaf}`` in depth-first key order.

    Example:
        >>> import nnfun as nf
        >>> nf.flatten_params({"encoder": {"0": {"kernel": 1, "bias": 2}}})
        {'encoder/0/kernel': 1, 'encoder/0/bias': 2}
    """
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{sep}{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                walk(value, path)
            else:
                flat[path] = value

    if not isinstance(tree, Mapping):
        raise TypeError(f"flatten_params expects nested dicts, got {type(tree).__name__}")
    walk(tree, "")
    return flat


def unflatten_params(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Inverse of :func:`flatten_params`.

    Example:
        >>> import nnfun as nf
        >>> nf.unflatten_params({"encoder/0/kernel": 1})
        {'encoder': {'0': {'kernel': 1}}}
    """
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(sep)
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"path {path!r} runs through a leaf at {part!r}")
        if leaf in node:
            raise ValueError(f"path {path!r} clashes with a subtree of the same name")
        node[leaf] = value
    return tree


def glob_to_regex(pattern: str) -> re.Pattern:
    """``*`` matches within one path segment, ``**`` across segments (or none)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def match_rules(paths: Sequence[str], rules: Any, what: str = "rule") -> list:
    """For each path, the value of the first matching ``(glob, value)`` rule, or a sentinel.

    Raises ``ValueError`` naming every rule that matches no path.
    """
    items = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    compiled = [(glob, glob_to_regex(glob), value) for glob, value in items]
    used, found = set(), []
    for path in paths:
        for glob, regex, value in compiled:
            if regex.match(path):
                used.add(glob)
                found.append(value)
                break
        else:
            found.append(_NO_MATCH)
    unused = [glob for glob, _, _ in compiled if glob not in used]
    if unused:
        sample = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise ValueError(f"{what}s {unused} match no parameter path; the paths are: {sample}")
    return found


_NO_MATCH = object()
_REQUIRED = object()


def labels(params: Mapping[str, Any], rules: Any, default: Any = _REQUIRED) -> dict[str, Any]:
    """A tree like ``params`` holding, per leaf, the value of the first matching glob rule.

    The result feeds ``optax.multi_transform`` (string labels) or ``optax.masked``
    (booleans). ``*`` matches inside one path segment, ``**`` across segments.

    Args:
        params: nested dicts of arrays.
        rules: ``{glob: label}`` or a list of ``(glob, label)``; the first match wins.
        default: the label of paths no rule matches; without it they raise.

    Example:
        >>> import nnfun as nf
        >>> params = {"encoder": {"kernel": 0, "bias": 0}, "head": {"kernel": 0, "bias": 0}}
        >>> nf.labels(params, {"encoder/**": "frozen"}, default="train")["encoder"]
        {'kernel': 'frozen', 'bias': 'frozen'}
        >>> nf.labels(params, {"**/bias": False}, default=True)["head"]
        {'kernel': True, 'bias': False}
    """
    flat = flatten_params(params)
    paths = list(flat)
    found = match_rules(paths, rules, what="label rule")
    missing = [p for p, v in zip(paths, found, strict=True) if v is _NO_MATCH]
    if missing and default is _REQUIRED:
        raise ValueError(f"no label rule matches {missing}; add a rule or pass default=")
    return unflatten_params(
        {p: (default if v is _NO_MATCH else v) for p, v in zip(paths, found, strict=True)}
    )
