"""TransformerBlock against a NumPy pre-norm block; dropout; KV cache; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import nnfun as nf
from nnfun.testing import check_layer


def np_layer_norm(p, x, eps=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def np_dense(p, x):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_causal_attention(p, x, heads):
    q, k, v = (np_dense(p[n], x) for n in ("query", "key", "value"))
    d = q.shape[-1] // heads
    out = np.zeros_like(q)
    causal = np.tril(np.ones((x.shape[1], x.shape[1]), bool))
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        logits = np.einsum("btd,bsd->bts", q[..., cols], k[..., cols]) / np.sqrt(d)
        logits = np.where(causal, logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        out[..., cols] = (w / w.sum(-1, keepdims=True)) @ v[..., cols]
    return np_dense(p["out"], out)


def np_gelu(x):  # jax.nn.gelu's default is the tanh approximation
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_block(p, x, heads):
    x = np.asarray(x, np.float64)
    x = x + np_causal_attention(p["attention"], np_layer_norm(p["attention_norm"], x), heads)
    h = np_layer_norm(p["mlp_norm"], x)
    return x + np_dense(p["mlp"]["out"], np_gelu(np_dense(p["mlp"]["hidden"], h)))


def test_gelu_reference_is_tanh_approximation():
    z = np.linspace(-3, 3, 7)
    exact = 0.5 * z * (1 + erf(z / np.sqrt(2)))
    np.testing.assert_allclose(np_gelu(z), exact, atol=1e-3)
    np.testing.assert_allclose(jax.nn.gelu(z), np_gelu(z), atol=1e-6)


def test_block_matches_numpy(key):
    block = nf.TransformerBlock(num_heads=2, mlp_ratio=2)
    x = jax.random.normal(key, (2, 5, 8))
    params, state = block.init(key, x)
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(key, a.shape), params)
    y, _ = block.apply(params, state, x)
    np.testing.assert_allclose(y, np_block(params, x, 2), atol=1e-4)
    assert params["mlp"]["hidden"]["kernel"].shape == (8, 16)


def test_dropout_needs_key_and_is_deterministic(key):
    block = nf.TransformerBlock(num_heads=2, dropout=0.5)
    x = jax.random.normal(key, (2, 4, 8))
    params, state = block.init(key, x)
    y_eval, _ = block.apply(params, state, x)
    y1, _ = block.apply(params, state, x, key=jax.random.key(1), train=True)
    y2, _ = block.apply(params, state, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(y1, y_eval)
    with pytest.raises(nf.LayerError, match="needs a random key"):
        block.apply(params, state, x, train=True)


def test_kv_cache_decoding_equals_full_pass(key):
    block = nf.TransformerBlock(num_heads=4, num_kv_heads=2, rotary=nf.RotaryPositions())
    x = jax.random.normal(key, (2, 6, 8))
    params, state = block.init(key, x)
    full, _ = block.apply(params, state, x)
    cache = block.init_cache(params, 2, 6)
    y, cache = block.apply(params, cache, x[:, :2])
    outputs = [y]
    for t in range(2, 6):
        y, cache = block.apply(params, cache, x[:, t : t + 1])
        outputs.append(y)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5)


def test_conformance(key):
    check_layer(nf.TransformerBlock(num_heads=2, mlp_ratio=1), jax.random.normal(key, (2, 3, 4)))


def test_errors(key):
    with pytest.raises(nf.LayerError, match="num_heads=3 does not divide the attention width 8"):
        nf.TransformerBlock(num_heads=3).init(key, jnp.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match="mlp_ratio must be >= 1"):
        nf.TransformerBlock(num_heads=2, mlp_ratio=0)
    with pytest.raises(ValueError, match="num_kv_heads=3 must divide"):
        nf.TransformerBlock(num_heads=2, num_kv_heads=3)
    with pytest.raises(ValueError, match="dropout must be in"):
        nf.TransformerBlock(num_heads=2, dropout=-0.1)
    with pytest.raises(nf.LayerError, match=r"expected \(batch, time, features\)"):
        nf.TransformerBlock(num_heads=2).init(key, jnp.zeros((2, 8)))
