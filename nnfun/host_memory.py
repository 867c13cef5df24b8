"""Opt-in: keep XLA:CPU's per-step scratch memory in the process instead of the OS.

Why (measured in ``benchmarks/NOTES.md``, phase 3): XLA:CPU allocates one
scratch buffer per execution of a compiled function (134 MB for the GPT
benchmark's training step) and frees it when the execution ends. glibc serves
an allocation that large with ``mmap`` and returns it with ``munmap``, so every
step maps fresh pages, and the kernel faults in and zeroes them all again:
35,000 page faults and about 85 ms of system CPU time per 170 ms step on two
cores. Telling glibc to keep freed memory (no ``mmap`` for large blocks, one
arena, no trimming) makes the next step reuse the same pages: 0 faults, and the
step ran at 0.73x the time.

The settings are process-wide, so nnfun never applies them on its own:
``import nnfun`` changes no process setting and reads no environment variable.
Call :func:`retain_host_memory` first thing in a program that wants them::

    from nnfun.host_memory import retain_host_memory

    retain_host_memory()  # before the first JAX computation

The price: memory freed by anything in the process stays with the process (its
resident size stays at its peak), and all threads share one malloc arena.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import warnings

# mallopt() parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt's int accepts: ~2 GiB of free heap kept

_retained = False


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def retain_host_memory() -> bool:
    """Keeps freed host memory in the process for reuse (Linux with glibc only).

    Call it before JAX runs anything (before the first array or ``jit`` call):
    XLA's threads pick their malloc arenas when they start. Over the first few
    steps the heap grows to what the steps in flight need; after that a step
    maps no fresh pages. On the GPT benchmark's training step on 2 CPU cores it
    cut the step time by a quarter; see the module docstring for how, and for
    what it costs (the process keeps its peak memory). It changes no numbers.

    Returns:
        True if the settings are in effect (now or from an earlier call); False,
        with a ``RuntimeWarning`` saying why, where they cannot be applied: not
        glibc, or JAX has already started its backends.

    Example:
        >>> import warnings
        >>> from nnfun.host_memory import retain_host_memory
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     retained = retain_host_memory()  # False here: the doctests ran JAX already
        >>> retained or "before the first JAX computation" in str(caught[0].message)
        True
    """
    global _retained
    if _retained:
        return True
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        warnings.warn(
            "retain_host_memory: needs Linux with glibc (found "
            f"{sys.platform}, libc {platform.libc_ver()[0] or 'unknown'}); nothing changed",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    if _backend_started():
        warnings.warn(
            "retain_host_memory: JAX has already started its backends, so XLA's threads "
            "keep their own malloc arenas and the setting would not help; nothing changed. "
            "Call it before the first JAX computation.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    libc = ctypes.CDLL("libc.so.6")
    for param, value in (
        (_M_ARENA_MAX, 1),  # XLA's threads allocate in the main arena, which can hold big blocks
        (_M_MMAP_MAX, 0),  # big blocks come from the heap, not from fresh mappings
        (_M_TRIM_THRESHOLD, _NEVER_TRIM),  # and freed ones stay there for the next step
    ):
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"retain_host_memory: glibc refused mallopt({param}, {value})")
    _retained = True
    return True
