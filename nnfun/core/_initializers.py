"""Initializers by name or as functions of ``jax.nn.initializers``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

# Names that are ready-made initializers ``(key, shape, dtype) -> array``.
INITIALIZERS = (
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
)
# Factories: calling them with no arguments gives an initializer.
_FACTORIES = {
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
}


def get_initializer(init: str | Callable[..., Any], owner: str = "layer") -> Callable:
    """Resolves an initializer given by name or as a ``(key, shape, dtype)`` function.

    Example:
        >>> import jax, nnfun as nf
        >>> nf.get_initializer("zeros")(jax.random.key(0), (2,)).tolist()
        [0.0, 0.0]
    """
    if callable(init):
        return init
    if isinstance(init, str) and init in INITIALIZERS:
        fn = getattr(jax.nn.initializers, init)
        return fn() if init in _FACTORIES else fn
    raise ValueError(
        f"{owner}: unknown initializer {init!r}; valid names: {', '.join(INITIALIZERS)}, "
        "or pass any function of jax.nn.initializers"
    )
