"""Eager calls of layers that loop with ``lax.scan`` run through one cached ``jax.jit``.

Outside ``jit``, every ``lax.scan`` call traces its body anew and compiles a new
program: JAX caches the compiled loop by the identity of the traced body,
which is new each call. A notebook calling a ``Stack`` or an ``RNN`` a few
hundred times eagerly thus compiled a few hundred programs, held them all, and
ran out of memory for code (LLVM: "Cannot allocate memory", then a crash).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from ._layer import Layer


def is_eager(*trees: Any) -> bool:
    """True when no leaf of ``trees`` is being traced (a plain, eager call)."""
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(trees))


@functools.lru_cache(maxsize=256)
def _compiled(layer: Layer, train: bool) -> Callable[..., Any]:
    def run(params: Any, state: Any, x: Any, key: Any) -> Any:
        return layer.apply(params, state, x, key=key, train=train)

    return jax.jit(run)


def compiled(layer: Layer, train: bool) -> Callable[..., Any] | None:
    """``layer.apply`` under one cached ``jax.jit`` (None if the layer is unhashable)."""
    try:
        return _compiled(layer, train)
    except TypeError:
        return None
