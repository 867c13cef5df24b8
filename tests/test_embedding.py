"""Embedding lookup and its tied projection against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def test_lookup_matches_numpy_indexing(key):
    layer = nf.Embedding(7, 3)
    ids = np.array([[0, 6, 2], [2, 2, 5]], np.int32)
    params, state = layer.init(key, ids)
    assert params["embedding"].shape == (7, 3)
    y, new_state = layer.apply(params, state, jnp.asarray(ids))
    table = np.asarray(params["embedding"])
    np.testing.assert_array_equal(y, table[ids])
    assert y.shape == (2, 3, 3) and new_state == {}


def test_attend_matches_numpy(key):
    layer = nf.Embedding(5, 4)
    params, _ = layer.init(key, jnp.zeros((1,), jnp.int32))
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    logits = layer.attend(params, jnp.asarray(x))
    expected = np.einsum("btf,vf->btv", x, np.asarray(params["embedding"]))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_tied_gradient_collects_both_uses(key):
    layer = nf.Embedding(4, 2)
    ids = jnp.array([1, 3])
    params, state = layer.init(key, ids)

    def loss(p):
        h, _ = layer.apply(p, state, ids)
        return jnp.sum(layer.attend(p, h))

    grad = np.asarray(jax.grad(loss)(params)["embedding"])
    table = np.asarray(params["embedding"])
    # loss = sum_i sum_v <E[ids_i], E[v]>: d/dE[v] = sum_i E[ids_i] + count_v * sum_w E[w].
    expected = np.tile(table[[1, 3]].sum(0), (4, 1))
    counts = np.bincount([1, 3], minlength=4)[:, None]
    expected = expected + counts * table.sum(0)[None, :]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_out_of_range_ids_raise_eagerly_and_give_nan_under_jit(key):
    layer = nf.Sequential({"emb": nf.Embedding(3, 2)})
    params, state = layer.init(key, jnp.zeros((1,), jnp.int32))
    for bad, low, high in ((jnp.array([0, 3]), 0, 3), (np.array([[-1, 2]]), -1, 2)):
        with pytest.raises(
            nf.LayerError, match=rf"'emb'.*ids in \[0, 3\), got ids from {low} to {high}"
        ):
            layer.apply(params, state, bad)
    y, _ = jax.jit(layer.apply)(params, state, jnp.array([0, 3, -1]))  # no values to check
    assert np.all(np.isfinite(y[0])) and np.all(np.isnan(y[1:]))  # -1 is no last row
    y, _ = layer.apply(params, state, jnp.array([0, 2]))  # the edges are fine
    assert np.all(np.isfinite(y))


def test_custom_initializer(key):
    layer = nf.Embedding(3, 2, embedding_init=jax.nn.initializers.ones)
    params, _ = layer.init(key, jnp.zeros((1,), jnp.int32))
    np.testing.assert_array_equal(params["embedding"], np.ones((3, 2)))


def test_conformance(key):
    check_layer(nf.Embedding(6, 3), jnp.array([[0, 1, 5], [4, 4, 2]]), key=key)


def test_errors(key):
    with pytest.raises(ValueError, match="num_embeddings must be a positive int"):
        nf.Embedding(0, 3)
    with pytest.raises(ValueError, match="unknown initializer"):
        nf.Embedding(3, 3, embedding_init="nope")
    model = nf.Sequential({"tok": nf.Embedding(4, 2)})
    with pytest.raises(nf.LayerError, match="Embedding at 'tok'.*integer ids, got dtype float32"):
        model.init(key, jnp.zeros((2, 3)))
    params, _ = nf.Embedding(4, 2).init(key, jnp.zeros((1,), jnp.int32))
    with pytest.raises(nf.LayerError, match=r"attend expected \(..., 2\).*got \(3, 5\)"):
        nf.Embedding(4, 2).attend(params, jnp.zeros((3, 5)))
