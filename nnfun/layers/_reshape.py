"""Shape layers: Flatten and Reshape (the batch axis is kept)."""

from __future__ import annotations

import math
from typing import Any

import jax

from ..core._layer import Layer, Params, State, layer_error


class Flatten(Layer):
    """Flattens all axes but the leading batch axis.

    Shapes: ``(batch, d1, ..., dk) -> (batch, d1 * ... * dk)``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> nf.Flatten().apply({}, {}, jnp.zeros((2, 3, 4)))[0].shape
        (2, 12)
    """

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        if len(x.shape) < 1:
            raise layer_error(self, f"expected a batch axis, got a scalar of shape {x.shape}")
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
        return x.reshape(x.shape[0], -1), state


class Reshape(Layer):
    """Reshapes each example to ``shape`` (one entry may be ``-1``).

    Shapes: ``(batch, ...) -> (batch, *shape)``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> nf.Reshape((4, 3)).apply({}, {}, jnp.zeros((2, 12)))[0].shape
        (2, 4, 3)
    """

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if sum(d == -1 for d in self.shape) > 1:
            raise ValueError(f"Reshape allows at most one -1, got {self.shape}")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        size = math.prod(x.shape[1:])
        known = math.prod(d for d in self.shape if d != -1)
        fits = size % known == 0 if -1 in self.shape else size == known
        if len(x.shape) < 1 or not fits:
            raise layer_error(
                self,
                f"cannot reshape examples of shape {tuple(x.shape[1:])} ({size} elements) "
                f"to {self.shape}",
            )
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
        return x.reshape(x.shape[0], *self.shape), state
