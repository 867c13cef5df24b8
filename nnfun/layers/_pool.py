"""Pooling: MaxPool, AvgPool (1-D, 2-D, 3-D by the length of ``window``) and global pools.

Inputs are channels-last ``(batch, *spatial, channels)``; pooling never mixes
channels or examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from ..core._layer import Layer, Params, State, layer_error
from ._conv import (
    check_rank,
    check_window_fits,
    explicit_padding,
    normalise_padding,
    per_axis,
    window_tuple,
)


class _WindowPool(Layer):
    """Shared fields and checks of MaxPool and AvgPool (fields documented on each)."""

    window: tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str | tuple[tuple[int, int], ...] = "VALID"

    def _normalise(self, owner: str) -> None:
        object.__setattr__(self, "window", window_tuple(self.window, owner, "window"))
        rank = len(self.window)
        strides = self.window if self.strides is None else self.strides
        object.__setattr__(self, "strides", per_axis(strides, rank, owner, "strides"))
        object.__setattr__(self, "padding", normalise_padding(self.padding, rank, owner, False))

    @property
    def _strides(self) -> tuple[int, ...]:
        # _normalise stores the strides as a tuple, one entry per spatial axis.
        return cast(tuple[int, ...], self.strides)

    def _pads(self, x: Any) -> tuple[tuple[int, int], ...]:
        check_rank(self, x, len(self.window), "pool")
        pads = explicit_padding(self.padding, x.shape[1:-1], self.window, self._strides)
        check_window_fits(self, x, self.window, pads, "pooling")
        return pads

    def _reduce(
        self,
        x: jax.Array,
        init: Any,
        op: Callable[[Any, Any], Any],
        pads: tuple[tuple[int, int], ...],
    ) -> jax.Array:
        # A NumPy init value stays concrete under jit, so JAX recognises max/add with
        # their identity as a differentiable monoid reduction (a traced init is not).
        return jax.lax.reduce_window(
            x,
            np.array(init, x.dtype),
            op,
            window_dimensions=(1, *self.window, 1),
            window_strides=(1, *self._strides, 1),
            padding=((0, 0), *pads, (0, 0)),
        )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._pads(x)
        return {}, {}


class MaxPool(_WindowPool):
    """The maximum over each window; padded positions never win (they count as ``-inf``).

    Args:
        window: tuple of window sizes, one per spatial axis (a bare int is an
            error: ``(2,)`` is 1-D, ``(2, 2)`` 2-D).
        strides: int or tuple; defaults to ``window`` (non-overlapping windows).
        padding: ``"VALID"`` (default), ``"SAME"`` or ``(low, high)`` pairs.

    Shapes: ``(batch, *spatial, channels) -> (batch, *spatial_out, channels)``,
    ``spatial_out = floor((n + low + high - window) / stride) + 1``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> x = jnp.arange(8.0).reshape(1, 8, 1)
        >>> nf.MaxPool((2,)).apply({}, {}, x)[0][0, :, 0].tolist()
        [1.0, 3.0, 5.0, 7.0]
    """

    def __post_init__(self) -> None:
        self._normalise("MaxPool")

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        pads = self._pads(x)
        lowest = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        return self._reduce(x, lowest, jax.lax.max, pads), state


class AvgPool(_WindowPool):
    """The mean over each window; padded positions are left out of the mean.

    With padding, a border window averages only the input elements it covers
    (TensorFlow's SAME behaviour; PyTorch's ``count_include_pad=False``), so a
    constant input stays constant.

    Args:
        window: tuple of window sizes, one per spatial axis (a bare int is an error).
        strides: int or tuple; defaults to ``window``.
        padding: ``"VALID"`` (default), ``"SAME"`` or ``(low, high)`` pairs.

    Shapes: ``(batch, *spatial, channels) -> (batch, *spatial_out, channels)``, as MaxPool.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> x = jnp.arange(6.0).reshape(1, 6, 1)
        >>> nf.AvgPool((2,)).apply({}, {}, x)[0][0, :, 0].tolist()
        [0.5, 2.5, 4.5]
    """

    def __post_init__(self) -> None:
        self._normalise("AvgPool")

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        pads = self._pads(x)
        total = self._reduce(x, 0, jax.lax.add, pads)
        if all(p == (0, 0) for p in pads):
            count = jnp.asarray(math.prod(self.window), x.dtype)
            return total / count, state
        # Count the real elements under each window: pool a ones array with the same padding.
        ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
        count = self._reduce(ones, 0, jax.lax.add, pads)
        return total / count, state


class _GlobalPool(Layer):
    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check(x)
        return {}, {}

    def _check(self, x: Any) -> None:
        if len(x.shape) < 3:
            raise layer_error(
                self,
                f"expected (batch, *spatial, channels) with at least one spatial axis, got "
                f"shape {tuple(x.shape)}. Fix: the input is already pooled; drop this layer.",
            )


class GlobalAvgPool(_GlobalPool):
    """The mean over all spatial axes.

    Shapes: ``(batch, *spatial, channels) -> (batch, channels)``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> nf.GlobalAvgPool().apply({}, {}, jnp.ones((2, 5, 5, 3)))[0].shape
        (2, 3)
    """

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        self._check(x)
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1))), state


class GlobalMaxPool(_GlobalPool):
    """The maximum over all spatial axes.

    Shapes: ``(batch, *spatial, channels) -> (batch, channels)``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> x = jnp.arange(6.0).reshape(1, 3, 2)
        >>> nf.GlobalMaxPool().apply({}, {}, x)[0].tolist()
        [[4.0, 5.0]]
    """

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        self._check(x)
        return jnp.max(x, axis=tuple(range(1, x.ndim - 1))), state
