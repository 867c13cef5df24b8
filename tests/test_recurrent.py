"""Recurrent cells, RNN and Bidirectional against a NumPy reference; padding; errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_step(cell, p, carry, x):
    """One step of each cell, written from the equations in their docstrings."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    pre = x @ p["input_kernel"] + p["bias"]
    if isinstance(cell, nf.SimpleRNN):
        h = np.tanh(pre + carry @ p["recurrent_kernel"])
        return h, h
    if isinstance(cell, nf.LSTM):
        h, c = carry
        i, f, g, o = np.split(pre + h @ p["recurrent_kernel"], 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        return (h, c), h
    hid = carry @ p["recurrent_kernel"] + p["recurrent_bias"]
    xr, xz, xn = np.split(pre, 3, axis=-1)
    hr, hz, hn = np.split(hid, 3, axis=-1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    h = (1 - z) * np.tanh(xn + r * hn) + z * carry
    return h, h


def np_rnn(cell, p, x, carry, reverse=False):
    steps = range(x.shape[1])[::-1] if reverse else range(x.shape[1])
    ys = [None] * x.shape[1]
    for t in steps:
        carry, ys[t] = np_step(cell, p, carry, np.asarray(x[:, t], np.float64))
    return np.stack(ys, axis=1), carry


def np_zero_carry(cell, batch):
    zeros = np.zeros((batch, cell.features))
    return (zeros, zeros) if isinstance(cell, nf.LSTM) else zeros


CELLS = [nf.SimpleRNN(5), nf.LSTM(5), nf.GRU(5)]


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_matches_numpy(key, cell, reverse):
    x = jax.random.normal(key, (3, 6, 4))
    rnn = nf.RNN(cell, return_carry=True, reverse=reverse)
    params, state = rnn.init(key, x)
    # Random biases so every term of the equations matters.
    bias_key = jax.random.key(3)
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(bias_key, a.shape), params)
    (y, carry), _ = rnn.apply(params, state, x)
    y_ref, carry_ref = np_rnn(cell, params["cell"], x, np_zero_carry(cell, 3), reverse)
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    chex.assert_trees_all_close(carry, carry_ref, atol=1e-5)


def test_inputs_are_projected_inside_the_scan(key):
    # The layout that measured fastest on XLA:CPU (benchmarks/rnn_step.py): no
    # (time, batch, gates * F) projection of all steps outside the loop.
    rnn = nf.RNN(nf.GRU(8))
    x = jnp.zeros((2, 5, 3))
    params, state = rnn.init(key, x)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: rnn.apply(p, state, x)[0].sum()))(params)
    shapes = {tuple(v.aval.shape) for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars}
    assert not shapes & {(2, 5, 24), (5, 2, 24), (10, 24)}
    assert any(eqn.primitive.name == "scan" for eqn in jaxpr.jaxpr.eqns)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: type(c).__name__)
def test_initial_carry_is_used(key, cell):
    x = jax.random.normal(key, (2, 3, 4))
    rnn = nf.RNN(cell, return_sequences=False)
    params, state = rnn.init(key, x)
    carry = jax.tree.map(lambda a: a + 0.5, cell.initial_carry(2))
    y, _ = rnn.apply(params, state, {"inputs": x, "carry": carry})
    y_ref, _ = np_rnn(cell, params["cell"], x, jax.tree.map(np.asarray, carry))
    np.testing.assert_allclose(y, y_ref[:, -1], atol=1e-5)


def test_lstm_forget_bias(key):
    params, _ = nf.LSTM(3, forget_bias=2.5).init(key, jnp.zeros((1, 2)))
    bias = np.asarray(params["bias"]).reshape(4, 3)
    np.testing.assert_array_equal(bias[1], [2.5] * 3)
    np.testing.assert_array_equal(bias[[0, 2, 3]], 0.0)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("by", ["lengths", "mask"])
def test_padding_does_not_change_results(key, cell, reverse, by):
    lengths = [6, 2, 4]
    x = jax.random.normal(key, (3, 6, 4))
    x = jnp.where(jnp.arange(6)[None, :, None] < jnp.array(lengths)[:, None, None], x, 9.0)
    rnn = nf.RNN(cell, return_carry=True, reverse=reverse)
    last = nf.RNN(cell, return_sequences=False, reverse=reverse)
    params, state = rnn.init(key, x)
    pad = (
        jnp.array(lengths)
        if by == "lengths"
        else jnp.arange(6)[None, :] < jnp.array(lengths)[:, None]
    )
    (y, carry), _ = rnn.apply(params, state, {"inputs": x, by: pad})
    y_last, _ = last.apply(params, state, {"inputs": x, by: pad})
    for b, n in enumerate(lengths):
        (y_b, carry_b), _ = rnn.apply(params, state, x[b : b + 1, :n])
        np.testing.assert_allclose(y[b, :n], y_b[0], atol=1e-6)
        np.testing.assert_array_equal(y[b, n:], 0.0)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, b=b: a[b], carry),
            jax.tree.map(lambda a: a[0], carry_b),
            atol=1e-6,
        )
        np.testing.assert_allclose(y_last[b], y_b[0, 0 if reverse else n - 1], atol=1e-6)


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional(key, merge):
    x = jax.random.normal(key, (2, 5, 3))
    bi = nf.Bidirectional(nf.RNN(nf.GRU(4)), merge=merge)
    params, state = bi.init(key, x)
    y, _ = bi.apply(params, state, x)
    zero = np_zero_carry(nf.GRU(4), 2)
    forward, _ = np_rnn(nf.GRU(4), params["forward"]["cell"], x, zero)
    backward, _ = np_rnn(nf.GRU(4), params["backward"]["cell"], x[:, ::-1], zero)
    backward = backward[:, ::-1]
    want = np.concatenate([forward, backward], -1) if merge == "concat" else forward + backward
    np.testing.assert_allclose(y, want, atol=1e-5)
    assert not np.allclose(
        params["forward"]["cell"]["input_kernel"], params["backward"]["cell"]["input_kernel"]
    )


def test_bidirectional_carry_and_lengths(key):
    x = jax.random.normal(key, (2, 5, 3))
    bi = nf.Bidirectional(nf.RNN(nf.LSTM(4), return_carry=True))
    params, state = bi.init(key, x)
    carry = (nf.LSTM(4).initial_carry(2), nf.LSTM(4).initial_carry(2))
    (y, (cf, cb)), _ = bi.apply(
        params, state, {"inputs": x, "carry": carry, "lengths": jnp.array([5, 3])}
    )
    (y_short, _), _ = bi.apply(params, state, x[1:, :3])
    np.testing.assert_allclose(y[1, :3], y_short[0], atol=1e-6)
    assert y.shape == (2, 5, 8) and cf[0].shape == cb[1].shape == (2, 4)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: type(c).__name__)
def test_cell_conformance(key, cell):
    x = (cell.initial_carry(2), jax.random.normal(key, (2, 3)))
    x = (jax.tree.map(lambda a: a + 0.1, x[0]), x[1])
    check_layer(cell, x)


@pytest.mark.parametrize(
    "layer",
    [
        nf.RNN(nf.GRU(3)),
        nf.RNN(nf.LSTM(3), return_sequences=False, return_carry=True),
        nf.Bidirectional(nf.RNN(nf.SimpleRNN(3))),
    ],
    ids=["gru", "lstm-carry", "bidirectional"],
)
def test_rnn_conformance(key, layer):
    check_layer(layer, jax.random.normal(key, (2, 4, 2)))


def test_rnn_conformance_with_lengths(key):
    x = {"inputs": jax.random.normal(key, (2, 4, 2)), "lengths": jnp.array([4, 2])}
    check_layer(nf.RNN(nf.GRU(3)), x, bfloat16=False)


def test_carry_of_wrong_shape(key):
    cell = nf.GRU(4)
    params, state = cell.init(key, jnp.zeros((2, 3)))
    with pytest.raises(
        nf.LayerError, match=r"GRU at '<root>'.*carry shaped \(2, 4\).*got \(2, 5\)"
    ):
        cell.apply(params, state, (jnp.zeros((2, 5)), jnp.zeros((2, 3))))
    rnn = nf.RNN(nf.LSTM(4))
    x = jnp.zeros((2, 5, 3))
    params, state = rnn.init(key, x)
    with pytest.raises(nf.LayerError, match=r"LSTM at 'cell'.*carry shaped"):
        rnn.apply(params, state, {"inputs": x, "carry": jnp.zeros((2, 4))})
    with pytest.raises(nf.LayerError, match="carry shaped"):
        rnn.init(key, {"inputs": x, "carry": (jnp.zeros((3, 4)), jnp.zeros((3, 4)))})


def test_bad_inputs(key):
    rnn = nf.RNN(nf.GRU(4))
    x = jnp.zeros((2, 5, 3))
    params, state = rnn.init(key, x)
    with pytest.raises(nf.LayerError, match=r"expected inputs \(batch, time, in\)"):
        rnn.init(key, jnp.zeros((2, 5)))
    with pytest.raises(nf.LayerError, match=r"'lengths' of ints shaped \(2,\)"):
        rnn.apply(params, state, {"inputs": x, "lengths": jnp.array([1, 2, 3])})
    with pytest.raises(nf.LayerError, match=r"'mask' of bools shaped \(2, 5\)"):
        rnn.apply(params, state, {"inputs": x, "mask": jnp.ones((2, 4), bool)})
    with pytest.raises(nf.LayerError, match="'mask' of bools"):
        rnn.apply(params, state, {"inputs": x, "mask": jnp.ones((2, 5))})
    # Lengths outside [1, time] are refused when they are known (eagerly).
    for bad in ([9, 3], [0, 3]):
        with pytest.raises(nf.LayerError, match=r"'lengths' must lie in \[1, 5\]"):
            rnn.apply(params, state, {"inputs": x, "lengths": jnp.array(bad)})
    with pytest.raises(nf.LayerError, match=r"no layer here reads the extra inputs \['lenghts'\]"):
        rnn.apply(params, state, {"inputs": x, "lenghts": jnp.array([1, 2])})
    with pytest.raises(nf.LayerError, match="either 'mask' or 'lengths'"):
        rnn.apply(
            params,
            state,
            {"inputs": x, "mask": jnp.ones((2, 5), bool), "lengths": jnp.array([1, 2])},
        )
    with pytest.raises(nf.LayerError, match=r"extra inputs \[.length.\]"):
        rnn.apply(params, state, {"inputs": x, "length": jnp.array([1, 2])})
    with pytest.raises(nf.LayerError, match=r"one time step \(batch, in\).*nf.RNN"):
        nf.GRU(4).init(key, x)
    with pytest.raises(nf.LayerError, match=r"tuple \(carry, x_t\)"):
        nf.GRU(4).apply(params["cell"], {}, jnp.zeros((2, 3)))
    with pytest.raises(nf.LayerError, match=r"inputs \(\.\.\., 3\)"):
        rnn.apply(params, state, jnp.zeros((2, 5, 7)))


def test_bad_settings():
    with pytest.raises(ValueError, match="positive int"):
        nf.LSTM(0)
    with pytest.raises(ValueError, match="unknown initializer"):
        nf.GRU(3, kernel_init="nope")
    with pytest.raises(TypeError, match="RecurrentCell"):
        nf.RNN(nf.Dense(3))
    with pytest.raises(ValueError, match="the other way"):
        nf.Bidirectional(nf.RNN(nf.GRU(3)), nf.RNN(nf.GRU(3)))
    with pytest.raises(ValueError, match="agree on"):
        nf.Bidirectional(nf.RNN(nf.GRU(3)), nf.RNN(nf.GRU(3), return_carry=True, reverse=True))
    with pytest.raises(ValueError, match="merge must be one of"):
        nf.Bidirectional(nf.RNN(nf.GRU(3)), merge="mean")
    with pytest.raises(TypeError, match="must be an RNN"):
        nf.Bidirectional(nf.GRU(3))
