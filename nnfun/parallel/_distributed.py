"""Several hosts: a checked entry point over ``jax.distributed.initialize``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import jax


def initialize(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    local_device_ids: Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> None:
    """Joins this process to a multi-process JAX run (JAX's multi-controller runtime).

    Call it first thing, in every process, before any other JAX call. Afterwards
    ``jax.devices()`` lists the devices of all processes, ``jax.local_devices()``
    this process's own; a mesh from :func:`make_mesh` spans them all, and every
    process runs the same program on its own share of each batch
    (:func:`shard_batch`). On CPU, collectives go through gloo
    (``jax_cpu_collectives_implementation="gloo"``, JAX's default); on one machine
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` gives each process N
    devices.

    Process 0 hosts the coordinator at ``coordinator_address``; every process
    then waits up to ``initialization_timeout`` seconds for all
    ``num_processes`` to connect. If fewer ever arrive (a wrong process count, a
    crashed peer, a blocked port), JAX's runtime aborts the process with
    ``DEADLINE_EXCEEDED``: it never hangs, but it cannot raise a Python
    exception, so this function prints one line to stderr first, saying what it
    waits for.

    Args:
        coordinator_address: ``"host:port"`` of process 0, reachable from all.
        num_processes: how many processes take part (all must pass the same).
        process_id: this process's index, ``0 <= process_id < num_processes``.
        local_device_ids: restrict this process to these local devices.
        initialization_timeout: seconds to wait for all processes to connect.

    Raises:
        ValueError: a malformed address, or a process count or id out of range.
        RuntimeError: called twice, called after JAX already ran a computation,
            or the runtime reports a process count other than ``num_processes``.

    Example:
        >>> from nnfun import parallel as P
        >>> P.initialize("127.0.0.1:1234", num_processes=2, process_id=2)
        Traceback (most recent call last):
        ...
        ValueError: process_id=2 is out of range for num_processes=2; ...
    """
    _check_address(coordinator_address)
    _check_counts(num_processes, process_id, initialization_timeout)
    if jax.distributed.is_initialized():
        raise RuntimeError("nnfun.parallel.initialize was already called in this process")
    if _backends_started():
        raise RuntimeError(
            "nnfun.parallel.initialize must be called before any JAX call that starts the "
            "XLA backend (a computation, jax.devices(), jax.device_put, ...). Fix: call it "
            "first thing in every process, right after importing jax."
        )
    print(
        f"nnfun.parallel.initialize: process {process_id} of {num_processes} joining "
        f"{coordinator_address}; waiting up to {initialization_timeout} s for all "
        f"{num_processes} processes (an abort with DEADLINE_EXCEEDED means fewer than "
        f"num_processes={num_processes} connected: check the count and the address)",
        file=sys.stderr,
        flush=True,
    )
    jax.distributed.initialize(
        coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    if jax.process_count() != num_processes:
        raise RuntimeError(
            f"asked for num_processes={num_processes}, but the runtime reports "
            f"{jax.process_count()} processes; every process must pass the same count"
        )


def _backends_started() -> bool:
    # JAX checks this too, but only after we print the waiting hint; its check is private.
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(
            f"coordinator_address must be 'host:port' (e.g. '10.0.0.1:1234'), got {address!r}"
        )


def _check_counts(num_processes: int, process_id: int, timeout: int) -> None:
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id={process_id} is out of range for num_processes={num_processes}; "
            f"process ids run from 0 to {num_processes - 1}, one per process"
        )
    if not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"initialization_timeout must be a positive int (s), got {timeout!r}")
