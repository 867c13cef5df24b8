"""Initializers by name or as functions of ``jax.nn.initializers``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

# Names of ``jax.nn.initializers`` accepted as strings. Most are factories:
# ``get_initializer`` calls them with no arguments to get the
# ``(key, shape, dtype) -> array`` function. The names in ``_READY_MADE`` are
# that function already and are returned as they are.
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
_READY_MADE = frozenset({"ones", "zeros"})


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
        return fn if init in _READY_MADE else fn()
    raise ValueError(
        f"{owner}: unknown initializer {init!r}; valid names: {', '.join(INITIALIZERS)}, "
        "or pass any function of jax.nn.initializers"
    )
