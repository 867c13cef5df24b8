"""BatchNorm against NumPy: batch and running statistics, axis_name, ensembles under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def _random(shape, seed=0, loc=0.0):
    return (loc + np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _numpy_batch_norm(x, scale, bias, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _random_affine(params):
    return {k: _random(v.shape, seed=5 + i) for i, (k, v) in enumerate(params.items())}


@pytest.mark.parametrize("shape", [(6, 3), (4, 5, 2), (2, 3, 3, 4)])
def test_train_uses_batch_statistics_and_updates_state(shape, key):
    x = _random(shape, loc=2.0)
    layer = nf.BatchNorm(momentum=0.9)
    params, state = layer.init(key, x)
    params = _random_affine(params)
    y, new_state = layer.apply(params, state, jnp.asarray(x), train=True)
    axes = tuple(range(len(shape) - 1))
    mean, var = x.mean(axes), x.var(axes)
    expected = _numpy_batch_norm(x, params["scale"], params["bias"], mean, var)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new_state["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state["var"], 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)


def test_eval_uses_running_statistics(key):
    x = _random((5, 3))
    layer = nf.BatchNorm(use_bias=False)
    params, _ = layer.init(key, x)
    params = _random_affine(params)
    state = {"mean": jnp.asarray(_random((3,), 1)), "var": jnp.asarray(_random((3,), 2) ** 2)}
    y, same_state = layer.apply(params, state, jnp.asarray(x), train=False)
    mean, var = np.asarray(state["mean"]), np.asarray(state["var"])
    expected = _numpy_batch_norm(x, params["scale"], 0.0, mean, var)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert same_state is state


def test_running_statistics_converge(key):
    layer = nf.BatchNorm(momentum=0.5)
    x = _random((64, 2), loc=3.0)
    params, state = layer.init(key, x)
    step = jax.jit(lambda s: layer.apply(params, s, x, train=True)[1])
    for _ in range(30):
        state = step(state)
    np.testing.assert_allclose(state["mean"], x.mean(0), rtol=1e-4)
    np.testing.assert_allclose(state["var"], x.var(0), rtol=1e-4)


def test_axis_name_averages_across_shards(key):
    x = _random((8, 3), loc=1.0)
    layer = nf.BatchNorm(momentum=0.0, axis_name="batch")
    params, state = layer.init(key, x)
    shards = jnp.asarray(x).reshape(4, 2, 3)
    run = jax.vmap(lambda xs: layer.apply(params, state, xs, train=True), axis_name="batch")
    y, new_state = run(shards)
    expected = _numpy_batch_norm(x, 1.0, 0.0, x.mean(0), x.var(0))
    np.testing.assert_allclose(y.reshape(8, 3), expected, rtol=1e-4, atol=1e-4)
    for i in range(4):
        np.testing.assert_allclose(new_state["mean"][i], x.mean(0), rtol=1e-5)
        np.testing.assert_allclose(new_state["var"][i], x.var(0), rtol=1e-5)


def _ensemble_setup(n_models=4):
    # No conv bias: BatchNorm cancels it, so its gradient is rounding noise that Adam
    # would amplify into lr-sized steps of random sign.
    model = nf.Sequential(
        [
            nf.Conv(4, (3,), use_bias=False),
            nf.BatchNorm(momentum=0.8),
            jax.nn.relu,
            nf.Flatten(),
            nf.Dense(3),
        ]
    )
    optimizer = optax.adam(1e-2)

    def init(key, x):
        params, state = model.init(key, x)
        return params, state, optimizer.init(params)

    def step(params, state, opt_state, x, y):
        def loss(p):
            logits, new_state = model.apply(p, state, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, value

    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(n_models, 3, 8, 6, 2)).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, 3, size=(n_models, 3, 8)))
    keys = jax.random.split(jax.random.key(0), n_models)
    return init, step, xs, ys, keys


def test_ensemble_trained_under_vmap_matches_members_alone():
    init, step, xs, ys, keys = _ensemble_setup()

    def train(key, x, y):
        """Trains one model over the steps in x, y (leading axis) with lax.scan."""
        carry = init(key, x[0])
        carry, _ = jax.lax.scan(lambda c, xy: (step(*c, *xy)[:3], None), carry, (x, y))
        return carry

    stacked = jax.jit(jax.vmap(train))(keys, xs, ys)
    train_one = jax.jit(train)
    for m in range(xs.shape[0]):
        member = jax.tree.map(lambda a, m=m: a[m], stacked)
        chex_close(member, train_one(keys[m], xs[m], ys[m]))
    # The members really differ (own init and data), so the comparison means something.
    assert not np.allclose(stacked[1]["1"]["mean"][0], stacked[1]["1"]["mean"][1])


def chex_close(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-6), a, b)


def test_conformance(key):
    x = jnp.asarray(_random((4, 3, 2), loc=1.0))
    check_layer(nf.BatchNorm(), x, key=key)
    check_layer(nf.BatchNorm(use_scale=False), x, key=key, train=True, bfloat16=False)


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match="momentum must be in"):
        nf.BatchNorm(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        nf.BatchNorm(epsilon=0.0)


def test_missing_running_statistics_names_path(key):
    model = nf.Sequential({"body": nf.Sequential([nf.Dense(3), nf.BatchNorm()])})
    params, state = model.init(key, jnp.zeros((2, 4)))
    with pytest.raises(nf.LayerError, match=r"BatchNorm at 'body/1'.*running statistics.*got \[\]"):
        model.apply(params, {}, jnp.zeros((2, 4)), train=False)
    with pytest.raises(nf.LayerError, match=r"BatchNorm at '<root>'.*got \['mean'\]"):
        nf.BatchNorm().apply({}, {"mean": jnp.zeros(3)}, jnp.zeros((2, 3)))
    model.apply(params, state, jnp.zeros((2, 4)), train=False)


def test_input_errors(key):
    with pytest.raises(nf.LayerError, match=r"expected \(batch, ..., channels\), got shape \(3,\)"):
        nf.BatchNorm().init(key, jnp.zeros((3,)))
    params, state = nf.BatchNorm().init(key, jnp.zeros((2, 3)))
    with pytest.raises(nf.LayerError, match=r"expected 3 channels.*got input shape \(2, 5\)"):
        nf.BatchNorm().apply(params, state, jnp.zeros((2, 5)), train=True)
