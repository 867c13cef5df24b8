"""Placing a train state and batches on a mesh, and a data-parallel jitted step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ._mesh import axis_size
from ._rules import state_shardings


def place_state(train_state: Any, mesh: Any, rules: Any = None) -> Any:
    """Puts a train state (or a params tree) on ``mesh``: replicated, or sharded by ``rules``.

    Args:
        train_state: a pytree with the params under ``.params`` or ``["params"]``
            (a ``TrainState``, a dict), or a params tree itself.
        mesh: the device mesh (see :func:`make_mesh`).
        rules: ``{glob on "a/b/c" param paths: PartitionSpec}``; the optimizer
            state leaves that mirror a parameter are sharded like it. ``None``
            replicates everything (plain data parallelism).

    Returns:
        The same pytree with every array placed on the mesh.

    Raises:
        ValueError: see :func:`param_specs` (unmatched rules, unknown axes, ...).

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> from jax.sharding import PartitionSpec
        >>> from nnfun import parallel as P
        >>> mesh = P.make_mesh({"data": -1})
        >>> params, _ = nf.Dense(4).init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> placed = P.place_state({"params": params}, mesh, {"**/kernel": PartitionSpec("data")})
        >>> placed["params"]["kernel"].sharding.spec
        P('data',)
    """
    return jax.device_put(train_state, state_shardings(train_state, mesh, rules))


def batch_sharding(
    mesh: Any, axis: str | Sequence[str] = "data", batch_dim: int = 0
) -> NamedSharding:
    """The ``NamedSharding`` that splits dimension ``batch_dim`` of a batch over ``axis``.

    Example:
        >>> from nnfun import parallel as P
        >>> P.batch_sharding(P.make_mesh({"data": -1})).spec
        P('data',)
    """
    axis_size(mesh, axis)  # raises on an unknown axis name
    entry = axis if isinstance(axis, str) else tuple(axis)
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_dim), entry))


def shard_batch(
    batch: Any, mesh: Any, axis: str | Sequence[str] = "data", *, batch_dim: int = 0
) -> Any:
    """Splits every array of ``batch`` along ``batch_dim`` over the mesh axis ``axis``.

    With one process, ``batch`` is the global batch. With several (after
    :func:`initialize`), each process passes its own share, the rows for its
    local devices; the global batch is their concatenation in process order.

    Args:
        batch: a pytree of arrays, e.g. ``{"x": (B, 40), "y": (B,)}``.
        mesh: the device mesh.
        axis: the data-parallel mesh axis (or a tuple of axes, e.g. ``("data", "fsdp")``).
        batch_dim: which dimension is the batch (1 for ``(steps, B, ...)`` stacks).

    Returns:
        The batch as global ``jax.Array`` s sharded over ``axis``.

    Raises:
        ValueError: an unknown axis, or a batch size the data-parallel size does not divide.

    Example:
        >>> import numpy as np
        >>> from nnfun import parallel as P
        >>> mesh = P.make_mesh({"data": -1})
        >>> P.shard_batch({"x": np.zeros((8, 3))}, mesh)["x"].shape
        (8, 3)
    """
    sharding = batch_sharding(mesh, axis, batch_dim)
    shards, processes = axis_size(mesh, axis), jax.process_count()
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        _check_divisible(jax.tree_util.keystr(path), np.shape(leaf), batch_dim, shards, processes)
    if processes == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)


def _check_divisible(
    where: str, shape: tuple[int, ...], batch_dim: int, shards: int, processes: int
) -> None:
    if len(shape) <= batch_dim:
        raise ValueError(
            f"batch leaf {where or '<root>'} has shape {shape}, no dimension {batch_dim} to split "
            "over the data-parallel devices"
        )
    size = shape[batch_dim] * processes
    if size % shards:
        local = f" ({processes} processes x {shape[batch_dim]} rows)" if processes > 1 else ""
        raise ValueError(
            f"batch leaf {where or '<root>'} has batch size {size}{local}, which the "
            f"data-parallel size {shards} does not divide. Fix: use a batch size that is a "
            f"multiple of {shards}, or drop the last partial batch."
        )


def data_parallel_step(
    step_fn: Callable[[Any, Any], tuple[Any, Any]],
    mesh: Any,
    train_state: Any,
    *,
    rules: Any = None,
    axis: str | Sequence[str] = "data",
    batch_dim: int = 0,
    donate: bool = False,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``jax.jit`` of ``step_fn(train_state, batch) -> (train_state, metrics)`` with shardings.

    The state keeps the layout :func:`place_state` gives it (replicated, or by
    ``rules``), the batch is split over ``axis``, and the metrics come back
    replicated. Gradients are averaged across devices by the compiler's
    collectives: the step itself is the single-device code, unchanged.

    Args:
        step_fn: a pure step function.
        mesh: the device mesh.
        train_state: an example state (placed or not) that fixes the structure.
        rules: sharding rules for the params, as in :func:`place_state`.
        axis: the data-parallel mesh axis.
        batch_dim: the batch dimension of every batch array.
        donate: donate the input state's buffers (saves memory; the input is consumed).

    Returns:
        The compiled step: a plain ``jax.jit`` function.

    On host CPU devices (``--xla_force_host_platform_device_count``), wait for
    each step's result (fetch a metric, or ``jax.block_until_ready``) before
    dispatching many more: with a few dozen steps queued, XLA:CPU's in-process
    all-reduce deadlocks and aborts after 40 s (jax 0.10.2). ``nf.fit`` fetches
    the metrics of every call, so it is not affected.

    Example:
        >>> import numpy as np
        >>> from nnfun import parallel as P
        >>> mesh = P.make_mesh({"data": -1})
        >>> def step(ts, batch):
        ...     mean = batch["x"].mean()
        ...     return {"params": {"w": ts["params"]["w"] - mean}}, {"mean": mean}
        >>> ts = P.place_state({"params": {"w": np.float32(1.0)}}, mesh)
        >>> run = P.data_parallel_step(step, mesh, ts)
        >>> ts, metrics = run(ts, {"x": np.ones((4,), np.float32)})
        >>> float(ts["params"]["w"]), float(metrics["mean"])
        (0.0, 1.0)
    """
    state_sh = state_shardings(train_state, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        step_fn,
        in_shardings=(state_sh, batch_sharding(mesh, axis, batch_dim)),
        out_shardings=(state_sh, replicated),
        donate_argnums=(0,) if donate else (),
    )
