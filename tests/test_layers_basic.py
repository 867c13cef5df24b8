"""Dense, Dropout, Flatten, Reshape, initializers: numbers against NumPy, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nf.Dense(3), (2, 4)),
        (nf.Dense(3, use_bias=False), (2, 5, 4)),
        (nf.Flatten(), (2, 3, 4)),
        (nf.Reshape((2, -1)), (3, 8)),
        (nf.Dropout(0.3), (4, 6)),
        (nf.Sequential([nf.Dense(4), jax.nn.gelu, nf.Residual(nf.Dense(4))]), (3, 5)),
        (nf.Branch([nf.Dense(2), nf.Dense(3)]), (3, 4)),
    ],
)
def test_conformance(layer, shape):
    x = jax.random.normal(jax.random.key(1), shape)
    check_layer(layer, x)


def test_dense_on_3d_input_matches_numpy(key):
    layer = nf.Dense(5)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    params, state = layer.init(key, x)
    y, _ = layer.apply(params, state, x)
    p = jax.tree.map(np.asarray, params)
    np.testing.assert_allclose(y, np.einsum("btd,df->btf", x, p["kernel"]) + p["bias"], rtol=1e-5)


def test_dense_initializers_by_name_and_function(key):
    params, _ = nf.Dense(3, kernel_init="ones", bias_init="zeros").init(key, jnp.zeros((1, 2)))
    np.testing.assert_array_equal(params["kernel"], np.ones((2, 3)))
    init = jax.nn.initializers.constant(0.5)
    params, _ = nf.Dense(3, bias_init=init).init(key, jnp.zeros((1, 2)))
    np.testing.assert_array_equal(params["bias"], np.full(3, 0.5))


@pytest.mark.parametrize("name", nf.INITIALIZERS)
def test_every_initializer_name_resolves_to_a_key_shape_dtype_function(name, key):
    values = nf.get_initializer(name)(key, (4, 3), jnp.float32)
    assert values.shape == (4, 3) and values.dtype == jnp.float32


def test_lecun_normal_default_has_the_right_scale(key):
    params, _ = nf.Dense(512).init(key, jnp.zeros((1, 1024)))
    # lecun_normal: truncated normal with variance 1 / fan_in.
    assert np.std(params["kernel"]) == pytest.approx(1 / np.sqrt(1024), rel=0.05)


def test_bad_dense_settings():
    with pytest.raises(ValueError, match="unknown initializer 'glorot'.*glorot_uniform"):
        nf.Dense(3, kernel_init="glorot")
    with pytest.raises(ValueError, match="positive int"):
        nf.Dense(0)


def test_dense_rejects_params_of_another_width(key):
    params, _ = nf.Dense(3).init(key, jnp.zeros((1, 2)))
    with pytest.raises(
        nf.LayerError, match=r"Dense at '<root>'.*kernel \(in, 4\).*got kernel \(2, 3\)"
    ):
        nf.Dense(4).apply(params, {}, jnp.zeros((1, 2)))
    with pytest.raises(nf.LayerError, match=r"bias \(2,\)"):
        nf.Dense(3).apply({**params, "bias": jnp.zeros(2)}, {}, jnp.zeros((1, 2)))


def test_dense_rejects_scalar_input(key):
    with pytest.raises(nf.LayerError, match="feature axis"):
        nf.Dense(3).init(key, jnp.zeros(()))


def test_dropout_statistics_and_scaling(key):
    x = jnp.ones((200, 200))
    y, _ = nf.Dropout(0.25).apply({}, {}, x, key=key, train=True)
    kept = np.asarray(y) != 0
    assert kept.mean() == pytest.approx(0.75, abs=0.01)
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(nf.Dropout(0.25).apply({}, {}, x)[0], x)


def test_dropout_rate_validated():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nf.Dropout(1.0)


def test_reshape_and_flatten_errors(key):
    with pytest.raises(nf.LayerError, match=r"Reshape at '<root>'.*\(3, 4\).*\(5, -1\)"):
        nf.Reshape((5, -1)).init(key, jnp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="at most one -1"):
        nf.Reshape((-1, -1))
    with pytest.raises(nf.LayerError, match="batch axis"):
        nf.Flatten().init(key, jnp.zeros(()))
