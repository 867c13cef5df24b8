"""Normalization without running statistics: LayerNorm, RMSNorm, GroupNorm.

Statistics are computed in at least float32 (a bfloat16 input is upcast for the
mean and variance and the result cast back), because a variance summed in
bfloat16 loses most of its digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp

from .. import ops
from ..core._layer import Layer, Params, State, layer_error


def _stat_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def _normalise_axes(axis: int | Sequence[int], owner: str) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if (
        not axes
        or any(not isinstance(a, int) or a >= 0 for a in axes)
        or len(set(axes)) != len(axes)
    ):
        raise ValueError(
            f"{owner} axis must be a negative int or a tuple of distinct negative ints "
            f"(counted from the end, so the layer works with or without a batch axis), "
            f"got {axis!r}"
        )
    return tuple(sorted(axes))


def _affine(
    params: Params, y: jax.Array, shape: tuple[int, ...], use_scale: bool, use_bias: bool
) -> jax.Array:
    """Applies ``scale`` and ``bias`` of shape ``shape`` broadcast explicitly to ``y``."""
    if use_scale:
        y = y * params["scale"].reshape(shape).astype(y.dtype)
    if use_bias:
        y = y + params["bias"].reshape(shape).astype(y.dtype)
    return y


def _affine_params(features_shape: tuple[int, ...], use_scale: bool, use_bias: bool) -> Params:
    params = {}
    if use_scale:
        params["scale"] = jnp.ones(features_shape, jnp.float32)
    if use_bias:
        params["bias"] = jnp.zeros(features_shape, jnp.float32)
    return params


def _scale_and_bias(
    params: Params, x: jax.Array, use_scale: bool, use_bias: bool
) -> tuple[jax.Array, jax.Array]:
    """The ``(features,)`` scale and bias for the fused ops: ones/zeros when not learned."""
    ones = jnp.ones((x.shape[-1],), _stat_dtype(x.dtype))
    scale = params["scale"] if use_scale else ones
    bias = params["bias"] if use_bias else jnp.zeros_like(ones)
    return scale, bias


class _AxesNorm(Layer):
    """Fields and checks shared by LayerNorm and RMSNorm: ``axis`` counted from the end.

    The fields are documented on each subclass; RMSNorm overrides the defaults
    of ``epsilon`` and ``use_bias`` (a redeclared field keeps its position).
    """

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axis: int | tuple[int, ...] = -1
    fused: bool = True

    def __post_init__(self) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "axis", _normalise_axes(self.axis, owner))
        if not self.epsilon > 0:
            raise ValueError(f"{owner} epsilon must be > 0, got {self.epsilon!r}")

    @property
    def _axes(self) -> tuple[int, ...]:
        # __post_init__ stores axis as a sorted tuple of negative ints.
        return cast(tuple[int, ...], self.axis)

    def _check_rank(self, x: Any) -> None:
        if len(x.shape) < -self._axes[0]:
            raise layer_error(
                self,
                f"normalizes over axes {self.axis} but got an input of shape "
                f"{tuple(x.shape)} with only {len(x.shape)} axes. Fix: pass an input with "
                f"at least {-self._axes[0]} axes or choose a smaller axis.",
            )

    def _features_shape(self, x: Any) -> tuple[int, ...]:
        return tuple(x.shape[a] for a in self._axes)

    def _broadcast_shape(self, x: Any) -> tuple[int, ...]:
        shape = [1] * x.ndim
        for a in self._axes:
            shape[a] = x.shape[a]
        return tuple(shape)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check_rank(x)
        return _affine_params(self._features_shape(x), self.use_scale, self.use_bias), {}

    def _check_params(self, params: Params, x: Any) -> None:
        self._check_rank(x)
        expected = self._features_shape(x)
        for name in ("scale", "bias"):
            if name in params and tuple(params[name].shape) != expected:
                raise layer_error(
                    self,
                    f"expected an input whose axes {self._axes} have sizes "
                    f"{tuple(params[name].shape)} (the {name} shape), got input shape "
                    f"{tuple(x.shape)}. Fix: re-run init with this input shape.",
                )


class LayerNorm(_AxesNorm):
    """Normalizes each example over ``axis`` (the last axis by default).

    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias``, with the mean and
    the (biased) variance taken over ``axis``; ``scale`` and ``bias`` have the
    shape of those axes.

    Args:
        epsilon: added to the variance.
        use_scale: learn a ``scale`` (initialised to ones).
        use_bias: learn a ``bias`` (initialised to zeros).
        axis: a negative int or tuple of negative ints: the normalized axes,
            counted from the end.
        fused: over the last axis, use the custom-VJP :func:`nnfun.ops.layer_norm`.

    Shapes: ``(..., features) -> (..., features)``; params ``scale``, ``bias``
    of shape ``(features,)`` (with the default axis).

    With ``fused=True`` (the default) and the default last axis this calls
    :func:`nnfun.ops.layer_norm`, whose hand-written backward pass is faster on
    XLA:CPU (``benchmarks/NOTES.md``). It is a ``jax.custom_vjp``: reverse mode
    (``jax.grad``, also nested) works, forward mode (``jax.jvp``,
    ``jax.jacfwd``, ``jax.hessian``) raises; ``fused=False`` keeps plain
    autodiff, which supports both. The numbers are the same either way.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> x = jnp.arange(6.0).reshape(2, 3)
        >>> params, state = nf.LayerNorm().init(jax.random.key(0), x)
        >>> y, _ = nf.LayerNorm().apply(params, state, x)
        >>> y.mean(axis=-1).round(5).tolist(), params["scale"].shape
        ([0.0, 0.0], (3,))
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
        self._check_params(params, x)
        if self.fused and self._axes == (-1,):
            scale, bias = _scale_and_bias(params, x, self.use_scale, self.use_bias)
            return ops.layer_norm(x, scale, bias, self.epsilon), state
        xf = x.astype(_stat_dtype(x.dtype))
        mean = jnp.mean(xf, axis=self._axes, keepdims=True)
        centred = xf - mean
        var = jnp.mean(jnp.square(centred), axis=self._axes, keepdims=True)
        y = centred * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        y = _affine(params, y, self._broadcast_shape(x), self.use_scale, self.use_bias)
        return y.astype(x.dtype), state


class RMSNorm(_AxesNorm):
    """Divides each example by its root mean square over ``axis`` (no centring).

    ``y = x / sqrt(mean(x**2) + epsilon) * scale (+ bias)``, the mean taken
    over ``axis`` (the last axis by default).

    Args:
        epsilon: added to the mean square.
        use_scale: learn a ``scale`` (initialised to ones).
        use_bias: learn a ``bias`` (initialised to zeros); off by default.
        axis: a negative int or tuple of negative ints: the normalized axes.
        fused: over the last axis, use the custom-VJP :func:`nnfun.ops.rms_norm`
            (reverse mode only, as for :class:`LayerNorm`).

    Shapes: ``(..., features) -> (..., features)``; params ``scale`` (and
    ``bias``) of shape ``(features,)`` with the default axis.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> x = jnp.array([[2.0, -2.0]])
        >>> params, state = nf.RMSNorm().init(jax.random.key(0), x)
        >>> nf.RMSNorm().apply(params, state, x)[0].round(3).tolist()
        [[1.0, -1.0]]
    """

    epsilon: float = 1e-6
    use_bias: bool = False

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        self._check_params(params, x)
        if self.fused and self._axes == (-1,):
            scale, _ = _scale_and_bias(params, x, self.use_scale, False)
            y = ops.rms_norm(x, scale, self.epsilon)
            if self.use_bias:
                y = y + params["bias"].reshape((1,) * (x.ndim - 1) + (-1,)).astype(y.dtype)
            return y, state
        xf = x.astype(_stat_dtype(x.dtype))
        mean_square = jnp.mean(jnp.square(xf), axis=self._axes, keepdims=True)
        y = xf * jnp.reciprocal(jnp.sqrt(mean_square + self.epsilon))
        y = _affine(params, y, self._broadcast_shape(x), self.use_scale, self.use_bias)
        return y.astype(x.dtype), state


class GroupNorm(Layer):
    """Splits the channels (last axis) into ``num_groups`` groups and normalizes each.

    For every example and group, the mean and (biased) variance are taken over
    all axes but the batch axis: the spatial axes and the channels of the
    group. ``scale`` and ``bias`` are per channel. ``num_groups=1`` normalizes
    over everything but the batch; ``num_groups=channels`` is instance norm.

    Args:
        num_groups: number of groups; must divide the channel count.
        epsilon: added to the variance.
        use_scale: learn a per-channel ``scale`` (ones).
        use_bias: learn a per-channel ``bias`` (zeros).

    Shapes: ``(batch, ..., channels) -> (batch, ..., channels)``; params of
    shape ``(channels,)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> x = jax.random.normal(jax.random.key(0), (2, 5, 4))
        >>> params, state = nf.GroupNorm(2).init(jax.random.key(1), x)
        >>> nf.GroupNorm(2).apply(params, state, x)[0].shape
        (2, 5, 4)
    """

    num_groups: int
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.num_groups, int) or self.num_groups < 1:
            raise ValueError(
                f"GroupNorm num_groups must be a positive int, got {self.num_groups!r}"
            )
        if not self.epsilon > 0:
            raise ValueError(f"GroupNorm epsilon must be > 0, got {self.epsilon!r}")

    def _check(self, x: Any) -> None:
        if len(x.shape) < 2:
            raise layer_error(
                self,
                f"expected (batch, ..., channels), got shape {tuple(x.shape)}. "
                "Fix: add a batch axis.",
            )
        channels = x.shape[-1]
        if channels % self.num_groups:
            raise layer_error(
                self,
                f"num_groups={self.num_groups} must divide the channel count, got "
                f"{channels} channels (input shape {tuple(x.shape)}). Fix: choose "
                f"num_groups among the divisors of {channels}.",
            )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check(x)
        return _affine_params((x.shape[-1],), self.use_scale, self.use_bias), {}

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
        if "scale" in params and params["scale"].shape != (x.shape[-1],):
            raise layer_error(
                self,
                f"expected {params['scale'].shape[0]} channels (the scale shape), got "
                f"input shape {tuple(x.shape)}. Fix: re-run init with this input shape.",
            )
        channels = x.shape[-1]
        grouped = x.astype(_stat_dtype(x.dtype)).reshape(
            *x.shape[:-1], self.num_groups, channels // self.num_groups
        )
        # Reduce over every axis but batch and group: spatial axes and in-group channels.
        axes = (*range(1, x.ndim - 1), x.ndim)
        mean = jnp.mean(grouped, axis=axes, keepdims=True)
        centred = grouped - mean
        var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
        y = (centred * jnp.reciprocal(jnp.sqrt(var + self.epsilon))).reshape(x.shape)
        shape = (1,) * (x.ndim - 1) + (channels,)
        y = _affine(params, y, shape, self.use_scale, self.use_bias)
        return y.astype(x.dtype), state
