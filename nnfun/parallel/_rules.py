"""Sharding rules: ``{glob on "a/b/c" parameter paths: PartitionSpec}`` to shardings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ..core._params import _NO_MATCH, flatten_params, glob_to_regex, match_rules, unflatten_params
from ._mesh import axis_size, check_axes, spec_axes


def param_specs(params: Mapping[str, Any], mesh: Any, rules: Any = None) -> dict[str, Any]:
    """A tree like ``params`` holding the ``PartitionSpec`` of each parameter.

    The first rule whose glob matches a path wins (``*`` inside one path segment,
    ``**`` across segments); parameters no rule matches are replicated (``P()``).

    Args:
        params: nested dicts of arrays (or ``ShapeDtypeStruct``).
        mesh: a ``Mesh`` (or ``AbstractMesh``) whose axis names the specs use.
        rules: ``{glob: PartitionSpec}`` or a list of pairs; ``None`` replicates all.

    Raises:
        ValueError: a rule matches no parameter, a spec names an axis the mesh
            lacks, has more entries than the parameter has dimensions, or splits a
            dimension its mesh axes do not divide.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> from jax.sharding import PartitionSpec
        >>> from nnfun import parallel as P
        >>> params, _ = nf.Dense(4).init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> mesh = P.make_mesh({"model": 1})
        >>> P.param_specs(params, mesh, {"kernel": PartitionSpec(None, "model")})
        {'kernel': P(None, 'model'), 'bias': P()}
    """
    flat = flatten_params(params)
    paths = list(flat)
    found = match_rules(paths, rules or {}, what="sharding rule")
    specs = {}
    for path, spec in zip(paths, found, strict=True):
        spec = PartitionSpec() if spec is _NO_MATCH else _as_spec(spec, path)
        _check_spec(spec, np.shape(flat[path]), mesh, path)
        specs[path] = spec
    return unflatten_params(specs)


def _as_spec(spec: Any, path: str) -> PartitionSpec:
    if isinstance(spec, PartitionSpec):
        return spec
    if spec is None:
        return PartitionSpec()
    if isinstance(spec, (tuple, list)):
        return PartitionSpec(*spec)
    raise TypeError(f"the sharding rule for {path!r} gives {spec!r}; expected a PartitionSpec")


def _check_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Any, path: str) -> None:
    check_axes(mesh, spec_axes(spec), f"the sharding rule for {path!r} ({spec})")
    if len(spec) > len(shape):
        raise ValueError(
            f"the sharding rule for {path!r} gives {spec} ({len(spec)} entries) to a parameter "
            f"of shape {shape}. Fix: give at most {len(shape)} entries."
        )
    for dim, entry in enumerate(spec):
        if entry is None or entry is PartitionSpec.UNCONSTRAINED:
            continue
        shards = axis_size(mesh, entry)
        if shape[dim] % shards:
            raise ValueError(
                f"the sharding rule for {path!r} splits dimension {dim} (size {shape[dim]}) of "
                f"shape {shape} over {entry!r} ({shards} shards), which does not divide it. Fix: "
                "shard another dimension, or pick widths that are multiples of the mesh axis."
            )


def fsdp_rules(
    params: Mapping[str, Any], mesh: Any, axis: str = "data", pattern: str = "**/kernel"
) -> dict[str, PartitionSpec]:
    """FSDP-style rules: shard the largest dimension of every matching parameter on ``axis``.

    Each parameter whose path matches ``pattern`` is split along its largest
    dimension that the ``axis`` size divides (parameters with none stay
    replicated). The result is a plain rules dict, one literal path per entry, to
    pass to :func:`place_state` (inspect or edit it first if you like).

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> from nnfun import parallel as P
        >>> params, _ = nf.Dense(4).init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> P.fsdp_rules({"head": params}, P.make_mesh({"data": 1}))
        {'head/kernel': P(None, 'data')}
    """
    shards = axis_size(mesh, axis)
    regex = glob_to_regex(pattern)
    rules, matched = {}, False
    for path, leaf in flatten_params(params).items():
        if not regex.match(path):
            continue
        matched = True
        shape = np.shape(leaf)
        dims = [d for d in range(len(shape)) if shape[d] % shards == 0]
        if dims:
            best = max(dims, key=lambda d: (shape[d], d))  # ties: the later (output) axis
            rules[path] = PartitionSpec(*(axis if d == best else None for d in range(best + 1)))
    if not matched:
        sample = ", ".join(list(flatten_params(params))[:8])
        raise ValueError(f"fsdp_rules: pattern {pattern!r} matches no parameter path ({sample})")
    return rules


def params_of(train_state: Any) -> Any:
    """The params inside a train state: its ``.params`` attribute or ``["params"]`` entry.

    Anything else is taken to be a params tree itself.
    """
    if hasattr(train_state, "params"):
        return train_state.params
    if isinstance(train_state, Mapping) and isinstance(train_state.get("params"), Mapping):
        return train_state["params"]
    return train_state


def state_shardings(train_state: Any, mesh: Any, rules: Any = None) -> Any:
    """A ``NamedSharding`` for every array of a train state, by the rules on its params.

    The params get the rules' specs. So does every subtree of the state with the
    params' structure and leaf shapes (the optimizer's moments, say), so an
    optimizer state is sharded like the params it tracks. Everything else (step,
    key, scalars, a model's running statistics) is replicated.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf, optax
        >>> from nnfun import parallel as P
        >>> params, _ = nf.Dense(4).init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> ts = {"params": params, "opt_state": optax.adam(1e-3).init(params)}
        >>> sh = P.state_shardings(ts, P.make_mesh({"data": 1}), {"kernel": ("data",)})
        >>> sh["opt_state"][0].mu["kernel"].spec
        P('data',)
    """
    params = params_of(train_state)
    replicated = NamedSharding(mesh, PartitionSpec())
    if not isinstance(params, Mapping) and rules is None:  # a bare array or scalar state
        return jax.tree.map(lambda _: replicated, train_state)
    specs = param_specs(params, mesh, rules)
    treedef = jax.tree.structure(params)
    shapes = [np.shape(a) for a in jax.tree.leaves(params)]

    def like_params(node: Any) -> bool:
        if not isinstance(node, Mapping):
            return False
        # jaxlib ships no stub for PyTreeDef, so mypy does not know it compares.
        same_structure = jax.tree.structure(node) == treedef  # type: ignore[operator]
        if not same_structure:
            return False
        return [np.shape(a) for a in jax.tree.leaves(node)] == shapes

    def sharding(node: Any) -> Any:
        if like_params(node) and shapes:
            return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
        return replicated

    return jax.tree.map(sharding, train_state, is_leaf=like_params)
