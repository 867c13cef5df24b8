"""Pooling layers against NumPy window loops."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _same_pads(sizes, window, strides):
    pads = []
    for n, w, s in zip(sizes, window, strides):
        total = max((math.ceil(n / s) - 1) * s + w - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _numpy_pool(x, window, strides, pads, reduce):
    """Applies ``reduce`` to the real (unpadded) elements of every window."""
    sizes = x.shape[1:-1]
    out = [(n + lo + hi - w) // s + 1 for n, (lo, hi), w, s in zip(sizes, pads, window, strides)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]), np.float64)
    for pos in itertools.product(*[range(n) for n in out]):
        index = []
        for p, s, w, (lo, _), n in zip(pos, strides, window, pads, sizes):
            start = p * s - lo
            index.append(slice(max(start, 0), min(start + w, n)))
        block = x[(slice(None), *index)]
        y[(slice(None), *pos)] = reduce(block.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
    return y


CASES = [
    ((2, 9, 3), dict(window=(3,))),
    ((2, 9, 3), dict(window=(3,), strides=2, padding="SAME")),
    ((2, 6, 7, 2), dict(window=(2, 2))),
    ((1, 5, 6, 2), dict(window=(3, 2), strides=(1, 2), padding="SAME")),
    ((1, 4, 4, 1), dict(window=(2, 3), strides=1, padding=((1, 0), (1, 1)))),
    ((1, 4, 5, 4, 2), dict(window=(2, 2, 2), strides=(2, 1, 2))),
]


@pytest.mark.parametrize(("shape", "kwargs"), CASES)
@pytest.mark.parametrize(("cls", "reduce"), [(nf.MaxPool, np.max), (nf.AvgPool, np.mean)])
def test_pool_matches_numpy(cls, reduce, shape, kwargs, key):
    layer = cls(**kwargs)
    x = _random(shape)
    y, state = layer.apply({}, {}, jnp.asarray(x))
    if layer.padding == "SAME":
        pads = _same_pads(shape[1:-1], layer.window, layer.strides)
    elif layer.padding == "VALID":
        pads = [(0, 0)] * len(layer.window)
    else:
        pads = list(layer.padding)
    expected = _numpy_pool(x, layer.window, layer.strides, pads, reduce)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert state == {} and layer.init(key, x) == ({}, {})


def test_avg_pool_keeps_a_constant_input_constant():
    y, _ = nf.AvgPool((3, 3), strides=1, padding="SAME").apply({}, {}, jnp.full((1, 4, 4, 2), 2.5))
    np.testing.assert_allclose(y, np.full((1, 4, 4, 2), 2.5), rtol=1e-6)


def test_global_pools_match_numpy():
    x = _random((2, 3, 4, 5))
    np.testing.assert_allclose(nf.GlobalAvgPool().apply({}, {}, x)[0], x.mean((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(nf.GlobalMaxPool().apply({}, {}, x)[0], x.max((1, 2)), rtol=1e-6)
    x1 = _random((2, 7, 3))
    assert nf.GlobalAvgPool().apply({}, {}, x1)[0].shape == (2, 3)


def test_max_pool_of_integers():
    x = jnp.array([[[-5], [-7], [3], [2]]], jnp.int32)
    y, _ = nf.MaxPool((2,), padding="SAME", strides=1).apply({}, {}, x)
    assert y[0, :, 0].tolist() == [-5, 3, 3, 2]


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nf.MaxPool((2, 2)), (1, 4, 4, 2)),
        (nf.AvgPool((3,), strides=1, padding="SAME"), (2, 5, 2)),
        (nf.GlobalAvgPool(), (2, 3, 3, 2)),
        (nf.GlobalMaxPool(), (2, 4, 3)),
    ],
)
def test_conformance(layer, shape, key):
    # Distinct values so max has a unique winner and finite differences are well defined.
    x = jnp.asarray(np.random.default_rng(0).permutation(math.prod(shape)).reshape(shape) / 10.0)
    check_layer(layer, x.astype(jnp.float32), key=key)


@pytest.mark.parametrize(
    "layer", [nf.MaxPool((2,)), nf.AvgPool((2,)), nf.AvgPool((3,), strides=1, padding="SAME")]
)
def test_gradient_under_jit(layer):
    x = jnp.asarray(_random((1, 6, 2)))
    grad = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply({}, {}, v)[0] ** 2)))(x)
    eager = jax.grad(lambda v: jnp.sum(layer.apply({}, {}, v)[0] ** 2))(x)
    np.testing.assert_allclose(grad, eager, rtol=1e-6)


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match=r"int 2. Fix: pass \(2,\) for 1-D or \(2, 2\)"):
        nf.MaxPool(2)
    with pytest.raises(ValueError, match="padding must be one of"):
        nf.AvgPool((2,), padding="CAUSAL")
    with pytest.raises(ValueError, match="strides must be a positive int or a tuple of 2"):
        nf.MaxPool((2, 2), strides=(1, 2, 3))
    pool = nf.MaxPool([2, 2])
    assert (
        pool.window == (2, 2) and pool.strides == (2, 2) and hash(pool) == hash(nf.MaxPool((2, 2)))
    )


def test_wrong_spatial_rank_names_path(key):
    model = nf.Sequential({"pool": nf.MaxPool((2, 2))})
    with pytest.raises(nf.LayerError, match=r"MaxPool at 'pool'.*4 axes, got shape \(2, 8, 3\)"):
        model.init(key, jnp.zeros((2, 8, 3)))
    with pytest.raises(nf.LayerError, match=r"GlobalAvgPool.*at least one spatial axis.*\(2, 3\)"):
        nf.GlobalAvgPool().init(key, jnp.zeros((2, 3)))
    with pytest.raises(nf.LayerError, match=r"GlobalMaxPool.*\(2, 3\)"):
        nf.GlobalMaxPool().apply({}, {}, jnp.zeros((2, 3)))


def test_window_larger_than_input_under_valid(key):
    model = nf.Sequential({"p": nf.AvgPool((4, 4))})
    with pytest.raises(
        nf.LayerError, match=r"AvgPool at 'p'.*pooling window \(4 along spatial axis 1"
    ):
        model.init(key, jnp.zeros((1, 5, 3, 1)))
    assert nf.AvgPool((4, 4), padding="SAME").apply({}, {}, jnp.ones((1, 5, 3, 1)))[0].shape == (
        1,
        2,
        1,
        1,
    )
