"""Device meshes with automatic (compiler-propagated) sharding, and axis-name checks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import AxisType, PartitionSpec


def make_mesh(
    axes: Mapping[str, int] | Sequence[int],
    names: Sequence[str] | None = None,
    *,
    devices: Sequence[Any] | None = None,
) -> jax.sharding.Mesh:
    """A device mesh whose axes all have ``AxisType.Auto``.

    ``jax.make_mesh`` now defaults to ``AxisType.Explicit``, under which sharding
    is part of every array's type and some ordinary operations (the gather in an
    integer-label cross-entropy over tensor-parallel logits, for one) raise a
    ``ShardingTypeError`` unless the user annotates them. With ``Auto`` axes the
    compiler propagates shardings from the inputs, so an unmodified training step
    runs data- or tensor-parallel.

    Args:
        axes: ``{"data": 8}`` or ``{"data": -1, "model": 2}`` (one axis may be
            ``-1``: "all remaining devices"), or a tuple of sizes with ``names``.
        names: axis names when ``axes`` is a tuple of sizes.
        devices: the devices to use (default ``jax.devices()``); when the mesh
            needs fewer, the first ones are used.

    Returns:
        A ``jax.sharding.Mesh``.

    Example:
        >>> from nnfun import parallel as P
        >>> mesh = P.make_mesh({"data": -1})
        >>> mesh.axis_names, mesh.axis_types
        (('data',), (Auto,))
    """
    names, sizes = _axes(axes, names)
    devices = list(jax.devices() if devices is None else devices)
    sizes = _resolve_sizes(names, sizes, len(devices))
    total = math.prod(sizes)
    if total > len(devices):
        raise ValueError(
            f"a mesh of shape {dict(zip(names, sizes))} needs {total} devices, but only "
            f"{len(devices)} are available. Fix: shrink an axis, or on CPU start Python with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={total}."
        )
    return jax.make_mesh(
        tuple(sizes),
        tuple(names),
        axis_types=(AxisType.Auto,) * len(names),
        devices=devices[:total],
    )


def _axes(axes: Any, names: Sequence[str] | None) -> tuple[list[str], list[int]]:
    if isinstance(axes, Mapping):
        if names is not None:
            raise ValueError("pass axis names either as dict keys or as names=, not both")
        names, sizes = list(axes), list(axes.values())
    else:
        if names is None:
            raise ValueError("make_mesh(sizes) needs names=, e.g. make_mesh((8,), ('data',))")
        names, sizes = list(names), list(axes)
        if len(names) != len(sizes):
            raise ValueError(f"{len(sizes)} axis sizes {sizes} but {len(names)} names {names}")
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"mesh axis names must be distinct strings, got {names}")
    if not all(isinstance(s, int) and (s >= 1 or s == -1) for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive ints (or one -1), got {sizes}")
    return names, sizes


def _resolve_sizes(names: list[str], sizes: list[int], n_devices: int) -> list[int]:
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(names, sizes))}")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if n_devices % known:
            raise ValueError(
                f"cannot fill axis {names[sizes.index(-1)]!r}: {n_devices} devices are not a "
                f"multiple of the other axes' product {known}"
            )
        sizes = [n_devices // known if s == -1 else s for s in sizes]
    return sizes


def axis_size(mesh: Any, axis: str | Sequence[str]) -> int:
    """The number of shards along ``axis`` (a name or a tuple of names) of ``mesh``.

    Example:
        >>> from nnfun import parallel as P
        >>> P.axis_size(P.make_mesh({"data": 1}), "data")
        1
    """
    names = (axis,) if isinstance(axis, str) else tuple(axis)
    check_axes(mesh, names, "axis")
    return math.prod(mesh.shape[n] for n in names)


def check_axes(mesh: Any, names: Sequence[str], where: str) -> None:
    """Raises a ``ValueError`` naming ``where`` if a name is not an axis of ``mesh``."""
    unknown = [n for n in names if n not in mesh.axis_names]
    if unknown:
        raise ValueError(
            f"{where} names mesh axis {unknown[0]!r}, but the mesh has axes "
            f"{tuple(mesh.axis_names)}. Fix: use one of those names, or build the mesh with "
            f"that axis, e.g. make_mesh({{{unknown[0]!r}: -1}})."
        )


def spec_axes(spec: PartitionSpec) -> list[str]:
    """Every mesh axis name a ``PartitionSpec`` uses."""
    names: list[str] = []
    for entry in spec:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, tuple):
            names.extend(entry)
    return names
