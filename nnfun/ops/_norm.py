"""LayerNorm and RMSNorm over the last axis with hand-written backward passes.

Both flatten the leading axes to one (XLA:CPU handles 2-D reductions and
broadcasts better than 3-D ones) and compute statistics in at least float32.
The custom VJP saves the normalized input and the reciprocal standard deviation
and applies the closed-form gradient, so the backward pass is three fused
row-wise passes instead of the chain that autodiff builds through mean, square,
sqrt and division.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# What each forward pass saves for its backward pass (xhat, rstd, the params, x).
_LayerNormResiduals = tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]
_RMSNormResiduals = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def _rows(x: jax.Array) -> jax.Array:
    """(..., d) -> (n, d) in the statistics dtype (float32 or wider)."""
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    return x.reshape(-1, x.shape[-1]).astype(dtype)


def _rowmean(a: jax.Array) -> jax.Array:
    return jnp.mean(a, axis=-1, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
) -> tuple[jax.Array, _LayerNormResiduals]:
    xf = _rows(x)
    centred = xf - _rowmean(xf)
    rstd = jax.lax.rsqrt(_rowmean(jnp.square(centred)) + epsilon)
    xhat = centred * rstd
    y = xhat * scale[None, :].astype(xf.dtype) + bias[None, :].astype(xf.dtype)
    return y.astype(x.dtype).reshape(x.shape), (xhat, rstd, scale, bias, x)


def _layer_norm_bwd(
    epsilon: float, res: _LayerNormResiduals, g: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    xhat, rstd, scale, bias, x = res
    g = _rows(g)
    gs = g * scale[None, :].astype(g.dtype)
    dx = rstd * (gs - _rowmean(gs) - xhat * _rowmean(gs * xhat))
    dscale = jnp.sum(g * xhat, axis=0).astype(scale.dtype)
    dbias = jnp.sum(g, axis=0).astype(bias.dtype)
    return dx.astype(x.dtype).reshape(x.shape), dscale, dbias


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float = 1e-5) -> jax.Array:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` over the last axis.

    The mean and (biased) variance are taken over the last axis in float32 (or
    wider); the result has the dtype of ``x``. Differentiable in all three
    arrays through a closed-form backward pass.

    Args:
        x: ``(..., d)`` input.
        scale: ``(d,)`` multiplier.
        bias: ``(d,)`` offset.
        epsilon: added to the variance.

    Returns:
        ``(..., d)``, the dtype of ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.ops import layer_norm
        >>> y = layer_norm(jnp.array([[1.0, 2.0, 3.0]]), jnp.ones(3), jnp.zeros(3))
        >>> print(y.round(3))
        [[-1.225  0.     1.225]]
    """
    return _layer_norm(x, scale, bias, float(epsilon))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x: jax.Array, scale: jax.Array, epsilon: float) -> jax.Array:
    return _rms_norm_fwd(x, scale, epsilon)[0]


def _rms_norm_fwd(
    x: jax.Array, scale: jax.Array, epsilon: float
) -> tuple[jax.Array, _RMSNormResiduals]:
    xf = _rows(x)
    rstd = jax.lax.rsqrt(_rowmean(jnp.square(xf)) + epsilon)
    xhat = xf * rstd
    y = xhat * scale[None, :].astype(xf.dtype)
    return y.astype(x.dtype).reshape(x.shape), (xhat, rstd, scale, x)


def _rms_norm_bwd(
    epsilon: float, res: _RMSNormResiduals, g: jax.Array
) -> tuple[jax.Array, jax.Array]:
    xhat, rstd, scale, x = res
    g = _rows(g)
    gs = g * scale[None, :].astype(g.dtype)
    dx = rstd * (gs - xhat * _rowmean(gs * xhat))
    dscale = jnp.sum(g * xhat, axis=0).astype(scale.dtype)
    return dx.astype(x.dtype).reshape(x.shape), dscale


_rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


def rms_norm(x: jax.Array, scale: jax.Array, epsilon: float = 1e-6) -> jax.Array:
    """``x / sqrt(mean(x**2) + epsilon) * scale`` over the last axis.

    Statistics in float32 (or wider); the result has the dtype of ``x``.
    Differentiable in ``x`` and ``scale`` through a closed-form backward pass.

    Args:
        x: ``(..., d)`` input.
        scale: ``(d,)`` multiplier.
        epsilon: added to the mean square.

    Returns:
        ``(..., d)``, the dtype of ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.ops import rms_norm
        >>> print(rms_norm(jnp.array([[3.0, -3.0]]), jnp.ones(2)).round(3))
        [[ 1. -1.]]
    """
    return _rms_norm(x, scale, float(epsilon))
