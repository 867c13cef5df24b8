"""Sinusoidal, learned and rotary positions against NumPy formulas; offsets; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def np_sinusoidal(length, features, base=10000.0, offset=0):
    table = np.zeros((length, features))
    for t in range(length):
        for j in range(features):
            angle = (t + offset) / base ** (2 * (j // 2) / features)
            table[t, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return table


def np_rotary(x, base=10000.0, offset=0):
    """Rotates each pair (x[i], x[i + d/2]) by the angle p * base**(-2i/d), one at a time."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    half = x.shape[-1] // 2
    for t in range(x.shape[1]):
        for i in range(half):
            angle = (t + offset) * base ** (-2 * i / x.shape[-1])
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            pair = np.stack([x[:, t, :, i], x[:, t, :, i + half]], axis=-1)
            rotated = pair @ rotation.T
            out[:, t, :, i], out[:, t, :, i + half] = rotated[..., 0], rotated[..., 1]
    return out


@pytest.mark.parametrize("features", [6, 7])
def test_sinusoidal_matches_formula(key, features):
    x = jax.random.normal(key, (2, 5, features))
    y, _ = nf.SinusoidalPositions(max_length=16).apply({}, {}, x)
    np.testing.assert_allclose(y, np.asarray(x) + np_sinusoidal(5, features)[None], atol=1e-5)
    y, _ = nf.SinusoidalPositions(16).apply({}, {}, {"inputs": x, "offset": jnp.int32(3)})
    np.testing.assert_allclose(
        y, np.asarray(x) + np_sinusoidal(5, features, offset=3)[None], atol=1e-5
    )


def test_learned_adds_table_rows(key):
    pos = nf.LearnedPositions(max_length=8)
    x = jax.random.normal(key, (2, 3, 4))
    params, state = pos.init(key, x)
    table = np.asarray(params["embedding"])
    assert table.shape == (8, 4)
    y, _ = pos.apply(params, state, x)
    np.testing.assert_allclose(y, np.asarray(x) + table[None, :3], atol=1e-6)
    offset_step = jax.jit(pos.apply)
    y, _ = offset_step(params, state, {"inputs": x[:, :1], "offset": jnp.int32(5)})
    np.testing.assert_allclose(y, np.asarray(x[:, :1]) + table[None, 5:6], atol=1e-6)


def test_rotary_matches_pairwise_rotation(key):
    x = jax.random.normal(key, (2, 5, 3, 8))
    y, _ = nf.RotaryPositions().apply({}, {}, x)
    np.testing.assert_allclose(y, np_rotary(x), atol=1e-5)
    y, _ = nf.RotaryPositions(base=100.0).apply({}, {}, {"inputs": x, "offset": 4})
    np.testing.assert_allclose(y, np_rotary(x, base=100.0, offset=4), atol=1e-5)


def test_rotary_scores_depend_on_relative_position(key):
    rope = nf.RotaryPositions()
    q, k = jax.random.normal(key, (2, 1, 1, 1, 8))
    scores = []
    for start in (0, 5):
        rq = rope.rotate(q, jnp.array([start + 3]))
        rk = rope.rotate(k, jnp.array([start + 1]))
        scores.append(float(jnp.sum(rq * rk)))
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5)


@pytest.mark.parametrize(
    "layer,x",
    [
        (nf.SinusoidalPositions(8), (2, 3, 4)),
        (nf.LearnedPositions(8), (2, 3, 4)),
        (nf.RotaryPositions(), (2, 3, 2, 4)),
    ],
    ids=["sinusoidal", "learned", "rotary"],
)
def test_conformance(key, layer, x):
    check_layer(layer, jax.random.normal(key, x))


def test_sequence_longer_than_table(key):
    with pytest.raises(nf.LayerError, match="positions up to 9 requested.*max_length=8"):
        nf.LearnedPositions(8).init(key, jnp.zeros((1, 9, 4)))
    params, state = nf.LearnedPositions(8).init(key, jnp.zeros((1, 8, 4)))
    with pytest.raises(nf.LayerError, match="LearnedPositions at '<root>': positions up to 9"):
        nf.LearnedPositions(8).apply(params, state, jnp.zeros((1, 9, 4)))
    with pytest.raises(nf.LayerError, match="positions up to 10"):
        nf.LearnedPositions(8).apply(params, state, {"inputs": jnp.zeros((1, 2, 4)), "offset": 8})
    with pytest.raises(nf.LayerError, match="max_length=4"):
        nf.SinusoidalPositions(4).apply({}, {}, jnp.zeros((1, 5, 2)))
    with pytest.raises(nf.LayerError, match="max_length=4"):
        nf.RotaryPositions(max_length=4).apply({}, {}, jnp.zeros((1, 5, 1, 2)))


def test_bad_inputs(key):
    with pytest.raises(nf.LayerError, match="even head_dim"):
        nf.RotaryPositions().init(key, jnp.zeros((1, 2, 1, 3)))
    with pytest.raises(nf.LayerError, match="even head_dim"):
        nf.RotaryPositions().apply({}, {}, jnp.zeros((1, 2, 4)))
    with pytest.raises(nf.LayerError, match=r"expected inputs \(batch, time, features\)"):
        nf.SinusoidalPositions().apply({}, {}, jnp.zeros((2, 4)))
    with pytest.raises(nf.LayerError, match=r"extra inputs \['mask'\].*read here are \['offset'\]"):
        nf.SinusoidalPositions().apply({}, {}, {"inputs": jnp.zeros((1, 2, 4)), "mask": 1})
    params, state = nf.LearnedPositions(8).init(key, jnp.zeros((1, 2, 4)))
    with pytest.raises(nf.LayerError, match="expected features 4"):
        nf.LearnedPositions(8).apply(params, state, jnp.zeros((1, 2, 5)))
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        nf.LearnedPositions(0)
