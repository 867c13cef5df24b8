"""EmbeddingBag against a NumPy loop over bags: padded, flat + lengths, flat + segments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer

RNG = np.random.default_rng(0)


def reference(table, bags, weights=None, combiner="sum"):
    """One output row per bag (a list of id lists), by a plain loop."""
    out = np.zeros((len(bags), table.shape[1]))
    for b, ids in enumerate(bags):
        w = np.ones(len(ids)) if weights is None else np.asarray(weights[b], np.float64)
        total = sum((w_i * table[i] for i, w_i in zip(ids, w)), np.zeros(table.shape[1]))
        denom = w.sum() if combiner == "mean" else 1.0
        out[b] = total / denom if denom != 0 else 0.0
    return out


def ragged(batch=6, size=4, vocab=11):
    lengths = RNG.integers(0, size + 1, batch)
    lengths[0], lengths[1] = 0, size  # an empty bag and a full one, always
    ids = RNG.integers(0, vocab, (batch, size))
    ids[np.arange(size)[None, :] >= lengths[:, None]] = -1  # padding may hold any id
    bags = [list(ids[b, : lengths[b]]) for b in range(batch)]
    return ids.astype(np.int32), lengths.astype(np.int32), bags


def table_of(layer, x, key):
    params, state = layer.init(key, x)
    return params, state, np.asarray(params["embedding"], np.float64)


@pytest.mark.parametrize("combiner", ["sum", "mean"])
def test_padded_with_lengths_matches_numpy(key, combiner):
    ids, lengths, bags = ragged()
    layer = nf.EmbeddingBag(11, 3, combiner=combiner)
    x = {"inputs": jnp.asarray(ids), "lengths": jnp.asarray(lengths)}
    params, state, table = table_of(layer, x, key)
    y, new_state = layer.apply(params, state, x)
    np.testing.assert_allclose(y, reference(table, bags, combiner=combiner), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(y[0], 0.0)  # the empty bag
    assert y.shape == (6, 3) and new_state == {}
    mask = jnp.arange(4)[None, :] < jnp.asarray(lengths)[:, None]
    y_mask, _ = layer.apply(params, state, {"inputs": jnp.asarray(ids), "mask": mask})
    np.testing.assert_array_equal(y_mask, y)


@pytest.mark.parametrize("combiner", ["sum", "mean"])
def test_weighted_bags_match_numpy(key, combiner):
    ids, lengths, bags = ragged()
    weights = RNG.uniform(0.5, 2.0, ids.shape).astype(np.float32)
    layer = nf.EmbeddingBag(11, 3, combiner=combiner)
    x = {"inputs": jnp.asarray(ids), "lengths": jnp.asarray(lengths), "weights": weights}
    params, state, table = table_of(layer, x, key)
    y, _ = layer.apply(params, state, x)
    w = [weights[b, : lengths[b]] for b in range(len(bags))]
    # A weighted mean divides by the sum of the weights (TensorFlow's convention).
    np.testing.assert_allclose(y, reference(table, bags, w, combiner), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("combiner", ["sum", "mean"])
def test_flat_forms_equal_the_padded_form(key, combiner):
    ids, lengths, bags = ragged()
    flat = np.concatenate([np.asarray(b, np.int32) for b in bags])
    weights = RNG.uniform(0.5, 2.0, flat.shape).astype(np.float32)
    segments = np.repeat(np.arange(len(bags)), lengths).astype(np.int32)
    layer = nf.EmbeddingBag(11, 3, combiner=combiner, num_bags=len(bags))
    params, state, table = table_of(layer, {"inputs": flat, "lengths": lengths}, key)
    w = np.split(weights, np.cumsum(lengths)[:-1])
    expected = reference(table, bags, w, combiner)
    for extra in ({"lengths": lengths}, {"segments": segments}):
        x = {"inputs": jnp.asarray(flat), "weights": weights, **extra}
        y, _ = layer.apply(params, state, x)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(jax.jit(layer.apply)(params, state, x)[0], y, rtol=1e-6)
    # Segments may come in any order.
    order = RNG.permutation(len(flat))
    x = {"inputs": flat[order], "segments": segments[order], "weights": weights[order]}
    np.testing.assert_allclose(layer.apply(params, state, x)[0], expected, rtol=1e-5, atol=1e-7)


def test_bag_without_extras_pools_every_position(key):
    ids = np.array([[1, 2], [3, 3]], np.int32)
    layer = nf.EmbeddingBag(5, 2)
    params, state, table = table_of(layer, ids, key)
    y, _ = layer.apply(params, state, jnp.asarray(ids))
    np.testing.assert_allclose(y, table[ids].sum(1), rtol=1e-6)


def test_conformance(key):
    ids, lengths, _ = ragged()
    weights = RNG.uniform(0.5, 2.0, ids.shape).astype(np.float32)
    x = {"inputs": jnp.asarray(ids), "lengths": jnp.asarray(lengths), "weights": weights}
    check_layer(nf.EmbeddingBag(11, 3, combiner="mean"), x, key=key)
    check_layer(nf.EmbeddingBag(11, 3), jnp.asarray(np.abs(ids)), key=key)


def test_gradient_reaches_the_weights(key):
    layer = nf.EmbeddingBag(4, 2)
    ids = jnp.array([[0, 1]])
    params, state = layer.init(key, ids)
    grad = jax.grad(lambda w: jnp.sum(layer.apply(params, state, {"inputs": ids, "weights": w})[0]))
    expected = np.asarray(params["embedding"])[[0, 1]].sum(1)[None, :]
    np.testing.assert_allclose(grad(jnp.ones((1, 2))), expected, rtol=1e-6)


def test_lengths_reach_the_bag_through_sequential(key):
    ids, lengths, bags = ragged()
    model = nf.Sequential({"bag": nf.EmbeddingBag(11, 3), "out": nf.Dense(2)})
    x = {"inputs": jnp.asarray(ids), "lengths": jnp.asarray(lengths)}
    params, state = model.init(key, x)
    y, _ = model.apply(params, state, x)
    table = np.asarray(params["bag"]["embedding"], np.float64)
    out = params["out"]
    expected = reference(table, bags) @ np.asarray(out["kernel"]) + np.asarray(out["bias"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    layer = nf.EmbeddingBag(7, 3, combiner="mean", num_bags=4)
    assert nf.from_config(nf.to_config(layer)) == layer


# --- bad input ------------------------------------------------------------------------------


def bag_model(key, **fields):
    model = nf.Sequential({"bag": nf.EmbeddingBag(5, 2, **fields)})
    params, state = model.init(
        key, {"inputs": jnp.zeros((2, 3), jnp.int32), "lengths": jnp.ones(2, jnp.int32)}
    )
    return model, params, state


def test_out_of_range_ids_raise_eagerly_and_give_nan_under_jit(key):
    model, params, state = bag_model(key)
    ids = jnp.array([[0, 5, -1], [1, -1, -1]])
    bad = {"inputs": ids, "lengths": jnp.array([2, 1])}
    with pytest.raises(nf.LayerError, match=r"'bag'.*ids in \[0, 5\), got ids from 0 to 5"):
        model.apply(params, state, bad)
    y, _ = jax.jit(model.apply)(params, state, bad)
    assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1]))
    # A negative id at a real position is out of range too, not the last row (NumPy's -1).
    negative = {"inputs": ids, "lengths": jnp.array([1, 2])}
    y, _ = jax.jit(model.apply)(params, state, negative)
    assert np.all(np.isfinite(y[0])) and np.all(np.isnan(y[1]))
    # Padding (-1 past the lengths) is never looked up, so it is no error.
    model.apply(params, state, {"inputs": ids, "lengths": jnp.array([1, 1])})


def test_negative_or_too_long_lengths_raise_eagerly(key):
    model, params, state = bag_model(key)
    ids = jnp.zeros((2, 3), jnp.int32)
    for lengths, bad in (([-1, 2], r"\[-1\]"), ([4, 0], r"\[4\]")):
        x = {"inputs": ids, "lengths": jnp.array(lengths)}
        with pytest.raises(nf.LayerError, match=rf"'bag'.*lengths' must lie in \[0, 3\].*{bad}"):
            model.apply(params, state, x)
    # Under jit they cannot be checked: a negative length is an empty bag, a long one full.
    y, _ = jax.jit(model.apply)(params, state, {"inputs": ids, "lengths": jnp.array([-1, 4])})
    row = np.asarray(params["bag"]["embedding"][0])
    np.testing.assert_allclose(y, np.stack([0 * row, 3 * row]), rtol=1e-6)


def test_flat_lengths_must_add_up_eagerly(key):
    layer = nf.EmbeddingBag(5, 2)
    params, state = layer.init(key, jnp.zeros((2, 2), jnp.int32))
    x = {"inputs": jnp.array([1, 2, 3]), "lengths": jnp.array([1, 1])}
    with pytest.raises(nf.LayerError, match=r"add up to the 3 ids.*total 2"):
        layer.apply(params, state, x)
    negative = {"inputs": jnp.array([1, 2, 3]), "lengths": jnp.array([4, -1])}
    with pytest.raises(nf.LayerError, match=r"'lengths' must be >= 0.*\[4, -1\]"):
        layer.apply(params, state, negative)
    y, _ = jax.jit(layer.apply)(params, state, x)  # the id past the total is dropped
    np.testing.assert_allclose(y, np.asarray(params["embedding"])[[1, 2]], rtol=1e-6)


def test_segments_out_of_range_raise_eagerly_and_are_dropped_under_jit(key):
    layer = nf.EmbeddingBag(5, 2, num_bags=2)
    params, state = layer.init(key, jnp.zeros((2, 2), jnp.int32))
    x = {"inputs": jnp.array([1, 2, 3]), "segments": jnp.array([0, 1, 2])}
    with pytest.raises(nf.LayerError, match=r"segments' must lie in \[0, 2\).*0 to 2"):
        layer.apply(params, state, x)
    y, _ = jax.jit(layer.apply)(params, state, x)
    np.testing.assert_allclose(y, np.asarray(params["embedding"])[[1, 2]], rtol=1e-6)
    with pytest.raises(nf.LayerError, match="needs num_bags"):
        nf.EmbeddingBag(5, 2).apply(params, state, x)


@pytest.mark.parametrize(
    "x, message",
    [
        (jnp.zeros((2, 3)), "expected integer ids"),
        (jnp.zeros((2, 3, 1), jnp.int32), r"\(batch, bag\) or flat \(n,\)"),
        (jnp.zeros((3,), jnp.int32), "flat ids .* need exactly one of 'lengths'"),
        ({"inputs": jnp.zeros((2, 3), jnp.int32), "weights": jnp.ones((2, 2))}, "weights"),
        (
            {
                "inputs": jnp.zeros((2, 3), jnp.int32),
                "lengths": jnp.ones(2, jnp.int32),
                "mask": jnp.ones((2, 3), bool),
            },
            "either 'mask' or 'lengths'",
        ),
        (
            {"inputs": jnp.zeros((2, 3), jnp.int32), "lengths": jnp.ones(3, jnp.int32)},
            r"lengths' shaped \(2,\)",
        ),
        (
            {"inputs": jnp.zeros((2, 3), jnp.int32), "lenghts": jnp.ones(2, jnp.int32)},
            "not extras of the contract",
        ),
    ],
)
def test_bad_inputs_name_the_problem(key, x, message):
    layer = nf.EmbeddingBag(5, 2)
    params = {"embedding": jnp.zeros((5, 2))}
    with pytest.raises(nf.LayerError, match=message):
        layer.apply(params, {}, x)


def test_bad_settings():
    with pytest.raises(ValueError, match="combiner must be one of"):
        nf.EmbeddingBag(5, 2, combiner="max")
    with pytest.raises(ValueError, match="num_embeddings must be a positive int"):
        nf.EmbeddingBag(0, 2)


def test_concrete_ids_closed_over_by_jit(key):
    # The ids are constants while the lengths' mask is traced: no check, no error.
    ids, lengths, bags = ragged()
    layer = nf.EmbeddingBag(11, 3)
    x = {"inputs": jnp.asarray(ids), "lengths": jnp.asarray(lengths)}
    params, state, table = table_of(layer, x, key)
    y = jax.jit(lambda p: layer.apply(p, state, x)[0])(params)
    np.testing.assert_allclose(y, reference(table, bags), rtol=1e-5, atol=1e-7)
