"""Dropout."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core._layer import Layer, Params, State, require_key


class Dropout(Layer):
    """Zeroes each element with probability ``rate`` in training and rescales the rest.

    Identity when ``train=False``. With ``train=True`` a ``key`` is required.

    Args:
        rate: drop probability in ``[0, 1)``.

    Shapes: any, unchanged.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> y, _ = nf.Dropout(0.5).apply({}, {}, jnp.ones(4), key=jax.random.key(0), train=True)
        >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
        True
    """

    rate: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {self.rate!r}")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        return {}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        if not train or self.rate == 0.0:
            return x, state
        keep = jax.random.bernoulli(require_key(self, key), 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x)), state
