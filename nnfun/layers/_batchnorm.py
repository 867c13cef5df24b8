"""BatchNorm: normalization by batch statistics, with running statistics kept in ``state``."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp

from ..core._layer import Layer, Params, State, layer_error


class BatchNorm(Layer):
    """Normalizes each channel (last axis) over the batch and spatial axes.

    With ``train=True`` the layer normalizes with the mean and (biased)
    variance of the current batch and returns a new state whose running
    statistics moved towards them:
    ``running = momentum * running + (1 - momentum) * batch``.
    With ``train=False`` it normalizes with the running statistics and returns
    the state unchanged. Either way ``y = (x - mean) / sqrt(var + epsilon) *
    scale + bias``.

    The running statistics live in ``state = {"mean": (C,), "var": (C,)}``
    (zeros and ones at init), never in ``params``, so an optimizer never
    touches them and ``jax.vmap`` over a stack of models keeps one set per
    model.

    Args:
        momentum: weight of the old running statistics in each update.
        epsilon: added to the variance.
        use_scale: learn a per-channel ``scale`` (ones).
        use_bias: learn a per-channel ``bias`` (zeros).
        axis_name: a mapped axis name (of ``jax.vmap``, ``jax.pmap`` or
            ``shard_map``) over which batch statistics are averaged, so shards
            of one batch normalize as the whole batch would. Shards must be of
            equal size.

    Shapes: ``(batch, ..., channels) -> (batch, ..., channels)``; params and
    state entries of shape ``(channels,)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> bn = nf.BatchNorm()
        >>> x = jnp.array([[1.0, 10.0], [3.0, 30.0]])
        >>> params, state = bn.init(jax.random.key(0), x)
        >>> y, state = bn.apply(params, state, x, train=True)
        >>> y.round(3).tolist()
        [[-1.0, -1.0], [1.0, 1.0]]
        >>> bool(jnp.allclose(state["mean"], jnp.array([0.02, 0.2])))  # 0.01 * batch mean
        True
    """

    momentum: float = 0.99
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axis_name: Hashable | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"BatchNorm momentum must be in [0, 1], got {self.momentum!r}")
        if not self.epsilon > 0:
            raise ValueError(f"BatchNorm epsilon must be > 0, got {self.epsilon!r}")

    def _check_input(self, x: Any) -> None:
        if len(x.shape) < 2:
            raise layer_error(
                self,
                f"expected (batch, ..., channels), got shape {tuple(x.shape)}. "
                "Fix: add a batch axis (BatchNorm needs one to take statistics over).",
            )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check_input(x)
        channels = (x.shape[-1],)
        params = {}
        if self.use_scale:
            params["scale"] = jnp.ones(channels, jnp.float32)
        if self.use_bias:
            params["bias"] = jnp.zeros(channels, jnp.float32)
        state = {"mean": jnp.zeros(channels, jnp.float32), "var": jnp.ones(channels, jnp.float32)}
        return params, state

    def _check_state(self, state: State, x: Any) -> None:
        if not isinstance(state, dict) or "mean" not in state or "var" not in state:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise layer_error(
                self,
                f"expected running statistics state={{'mean', 'var'}}, got {keys}. Fix: pass "
                "the state returned by model.init (and by apply with train=True), not {}.",
            )
        if state["mean"].shape != (x.shape[-1],):
            raise layer_error(
                self,
                f"expected {state['mean'].shape[0]} channels (the running mean's shape), got "
                f"input shape {tuple(x.shape)}. Fix: re-run init with this input shape.",
            )

    def _batch_stats(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and biased variance per channel, averaged across ``axis_name`` if set."""
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        if self.axis_name is not None:
            mean = jax.lax.pmean(mean, self.axis_name)
        # Two passes (centre, then square) instead of E[x^2] - E[x]^2, which cancels badly.
        var = jnp.mean(jnp.square(x - mean.reshape((1,) * (x.ndim - 1) + (-1,))), axis=axes)
        if self.axis_name is not None:
            var = jax.lax.pmean(var, self.axis_name)
        return mean, var

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        self._check_input(x)
        self._check_state(state, x)
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        if train:
            mean, var = self._batch_stats(xf)
            state = {
                "mean": self._update(state["mean"], mean),
                "var": self._update(state["var"], var),
            }
        else:
            mean, var = state["mean"].astype(xf.dtype), state["var"].astype(xf.dtype)
        shape = (1,) * (x.ndim - 1) + (-1,)
        inv = jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        if self.use_scale:
            inv = inv * params["scale"].astype(xf.dtype)
        y = (xf - mean.reshape(shape)) * inv.reshape(shape)
        if self.use_bias:
            y = y + params["bias"].astype(xf.dtype).reshape(shape)
        return y.astype(x.dtype), state

    def _update(self, running: jax.Array, batch: jax.Array) -> jax.Array:
        batch = jax.lax.stop_gradient(batch).astype(running.dtype)
        return self.momentum * running + (1.0 - self.momentum) * batch
