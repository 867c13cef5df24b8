"""CrossNetwork (DCN-v2) and FactorizationMachine against NumPy."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("rank", [None, 2])
def test_cross_network_matches_numpy(key, rank):
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    layer = nf.CrossNetwork(num_layers=3, rank=rank)
    params, state = layer.init(key, x)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    x0 = out = x.astype(np.float64)
    for i in range(3):
        p = {k: np.asarray(v, np.float64) for k, v in params[str(i)].items()}
        kernel = p["kernel"] if rank is None else p["down"] @ p["up"]
        out = x0 * (out @ kernel + p["bias"]) + out
    np.testing.assert_allclose(y, out, rtol=1e-4, atol=1e-5)
    if rank is not None:
        assert params["0"]["down"].shape == (5, 2) and params["0"]["up"].shape == (2, 5)


def test_cross_network_conformance(key):
    check_layer(nf.CrossNetwork(2), jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32), key=key)
    check_layer(
        nf.CrossNetwork(1, rank=2), jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32), key=key
    )


def test_cross_network_bad_input(key):
    layer = nf.Sequential({"cross": nf.CrossNetwork(2)})
    with pytest.raises(
        nf.LayerError, match=r"'cross'.*\(batch, features\), got float32 \(2, 3, 4\)"
    ):
        layer.init(key, jnp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        nf.CrossNetwork(0)
    with pytest.raises(ValueError, match="rank must be None or a positive int"):
        nf.CrossNetwork(1, rank=0)


def test_factorization_machine_equals_the_pairwise_sum(key):
    v = RNG.normal(size=(3, 5, 4))
    layer = nf.FactorizationMachine()
    y, _ = layer.apply({}, {}, jnp.asarray(v, jnp.float32))
    pairs = [
        sum(v[b, i] @ v[b, j] for i, j in itertools.combinations(range(5), 2)) for b in range(3)
    ]
    np.testing.assert_allclose(y[:, 0], pairs, rtol=1e-4, atol=1e-5)
    y, _ = nf.FactorizationMachine(reduce=False).apply({}, {}, jnp.asarray(v, jnp.float32))
    per_k = [
        sum(v[b, i] * v[b, j] for i, j in itertools.combinations(range(5), 2)) for b in range(3)
    ]
    np.testing.assert_allclose(y, per_k, rtol=1e-4, atol=1e-5)


def test_factorization_machine_conformance_and_errors(key):
    check_layer(
        nf.FactorizationMachine(), jnp.asarray(RNG.normal(size=(2, 3, 4)), jnp.float32), key=key
    )
    with pytest.raises(nf.LayerError, match=r"\(batch, fields, k\)"):
        nf.FactorizationMachine().init(key, jnp.zeros((2, 3)))
