"""nnfun.ops against NumPy references, finite differences (float64) and their error paths."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nnfun import ops

# Custom VJPs have no forward mode, so gradients are checked in reverse mode.
GRAD = dict(order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def _np_layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_rms_norm(x, scale, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


def _np_causal_attention(q, k, v):
    b, t, h, d = q.shape
    out = np.zeros_like(q)
    for i in range(t):  # query i sees keys 0..i
        s = np.einsum("bhd,bkhd->bhk", q[:, i], k[:, : i + 1]) / np.sqrt(d)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, i] = np.einsum("bhk,bkhd->bhd", p, v[:, : i + 1])
    return out


def _normal(seed, shape, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 8)])
def test_layer_norm_matches_numpy(shape):
    x, scale, bias = _normal(0, shape), _normal(1, (8,)), _normal(2, (8,))
    y = jax.jit(ops.layer_norm)(x, scale, bias)
    np.testing.assert_allclose(y, _np_layer_norm(x, scale, bias, 1e-5), atol=1e-5, rtol=1e-5)
    assert y.shape == shape and y.dtype == jnp.float32


def test_rms_norm_matches_numpy():
    x, scale = _normal(0, (2, 3, 8)), _normal(1, (8,))
    y = jax.jit(ops.rms_norm)(x, scale)
    np.testing.assert_allclose(y, _np_rms_norm(x, scale, 1e-6), atol=1e-5, rtol=1e-5)


def test_norm_gradients_match_finite_differences():
    with jax.enable_x64(True):
        x = _normal(0, (2, 3, 6), np.float64)
        scale, bias = _normal(1, (6,), np.float64), _normal(2, (6,), np.float64)
        check_grads(lambda *a: ops.layer_norm(*a, epsilon=0.1), (x, scale, bias), **GRAD)
        check_grads(lambda *a: ops.rms_norm(*a, epsilon=0.1), (x, scale), **GRAD)


def test_norms_keep_low_precision_dtype():
    x = jnp.asarray(_normal(0, (4, 8)), jnp.bfloat16)
    ones = jnp.ones((8,))
    assert ops.layer_norm(x, ones, jnp.zeros((8,))).dtype == jnp.bfloat16
    assert ops.rms_norm(x, ones).dtype == jnp.bfloat16
    grad = jax.grad(lambda a: ops.layer_norm(a, ones, ones).astype(jnp.float32).sum())(x)
    assert grad.dtype == jnp.bfloat16


def test_causal_attention_matches_numpy_and_jax():
    q, k, v = (_normal(i, (2, 6, 3, 4)) for i in range(3))
    out = jax.jit(ops.causal_attention)(q, k, v)
    np.testing.assert_allclose(out, _np_causal_attention(q, k, v), atol=1e-5, rtol=1e-5)
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", [1, 2, 3, 64])
def test_causal_attention_query_blocks_match_numpy(block):
    # t = 9: one row per block, five blocks of 1-2 rows, three of 3, and one block.
    q, k, v = (_normal(i, (2, 9, 3, 4)) for i in range(3))
    out = ops.causal_attention(q, k, v, block=block)
    np.testing.assert_allclose(out, _np_causal_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_causal_attention_default_blocks_at_128_steps_match_numpy():
    # 128 steps is two query blocks with the default BLOCK of 64.
    q, k, v = (_normal(i, (1, 128, 2, 8)) for i in range(3))
    out = jax.jit(ops.causal_attention)(q, k, v)
    np.testing.assert_allclose(out, _np_causal_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", [2, 64])
def test_causal_attention_gradient_matches_finite_differences(block):
    with jax.enable_x64(True):
        q, k, v = (_normal(i, (2, 5, 2, 3), np.float64) for i in range(3))
        check_grads(lambda *a: ops.causal_attention(*a, block=block), (q, k, v), **GRAD)


def _plain_causal_attention(q, k, v):
    """Another formulation (einsum, -inf mask, (batch, heads, q, k) scores) for autodiff."""
    t, d = q.shape[1], q.shape[3]
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    s = jnp.where(jnp.tril(jnp.ones((t, t), bool))[None, None], s, -jnp.inf)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)


@pytest.mark.parametrize("block", [1, 3, 64])
def test_causal_attention_gradient_matches_autodiff_of_reference(block):
    # jax.nn.dot_product_attention's own float64 gradient is off by ~1e-7, so the
    # reference is autodiff of a plain einsum formulation.
    with jax.enable_x64(True):
        q, k, v = (_normal(i, (2, 7, 2, 4), np.float64) for i in range(3))
        w = _normal(3, (2, 7, 2, 4), np.float64)

        def loss(fn):
            return lambda *a: jnp.sum(fn(*a) * w)

        blocked = functools.partial(ops.causal_attention, block=block)
        ours = jax.jit(jax.grad(loss(blocked), argnums=(0, 1, 2)))(q, k, v)
        ref = jax.grad(loss(_plain_causal_attention), argnums=(0, 1, 2))(q, k, v)
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_causal_attention_dtype_and_bad_shapes():
    x = jnp.ones((1, 3, 2, 4), jnp.bfloat16)
    assert ops.causal_attention(x, x, x).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="expected q, k and v of one shape"):
        ops.causal_attention(x, x, jnp.ones((1, 4, 2, 4)))
    with pytest.raises(ValueError, match=r"\(batch, time, heads, head_dim\)"):
        ops.causal_attention(x[0], x[0], x[0])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="expected block to be a positive int"):
            ops.causal_attention(x, x, x, block=bad)
