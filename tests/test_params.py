"""Parameter tools: counts, paths, and labels for optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun as nf


@pytest.fixture
def params(key):
    model = nf.Sequential(
        {"encoder": nf.Sequential([nf.Dense(4), nf.Dense(4)]), "head": nf.Dense(2)}
    )
    return model.init(key, jnp.zeros((1, 3)))[0]


def test_count_params_matches_closed_form(params):
    assert nf.count_params(params) == (3 * 4 + 4) + (4 * 4 + 4) + (4 * 2 + 2)
    assert nf.count_params({}) == 0


def test_flatten_and_unflatten_round_trip(params):
    flat = nf.flatten_params(params)
    assert sorted(flat) == sorted(
        f"{layer}/{name}"
        for layer in ("encoder/0", "encoder/1", "head")
        for name in ("kernel", "bias")
    )
    back = nf.unflatten_params(flat)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_flatten_rejects_non_dicts_and_unflatten_conflicts():
    with pytest.raises(TypeError, match="nested dicts"):
        nf.flatten_params([1, 2])
    with pytest.raises(ValueError, match="runs through a leaf"):
        nf.unflatten_params({"a": 1, "a/b": 2})
    with pytest.raises(ValueError, match="clashes with a subtree"):
        nf.unflatten_params({"a/b": 1, "a": 2})


def test_labels_with_globs(params):
    tree = nf.labels(params, {"encoder/**": "frozen", "**/bias": "no_decay"}, default="train")
    assert tree["encoder"]["0"] == {"kernel": "frozen", "bias": "frozen"}
    assert tree["head"] == {"kernel": "train", "bias": "no_decay"}
    star = nf.labels(params, {"encoder/*/kernel": True}, default=False)
    assert star["encoder"]["1"]["kernel"] is True and star["head"]["kernel"] is False


def test_labels_errors(params):
    with pytest.raises(ValueError, match=r"\['decoder/\*\*'\] match no parameter path"):
        nf.labels(params, {"decoder/**": "frozen"}, default="train")
    with pytest.raises(ValueError, match="no label rule matches.*head/kernel"):
        nf.labels(params, {"encoder/**": "frozen", "**/bias": "x"})


def test_labels_freeze_a_subtree_with_multi_transform(params):
    optimizer = optax.multi_transform(
        {"frozen": optax.set_to_zero(), "train": optax.sgd(0.1)},
        nf.labels(params, {"encoder/**": "frozen"}, default="train"),
    )
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["encoder"]["0"]["kernel"], params["encoder"]["0"]["kernel"])
    np.testing.assert_allclose(new["head"]["kernel"], np.asarray(params["head"]["kernel"]) - 0.1)


def test_labels_mask_weight_decay_off_biases(params):
    mask = nf.labels(params, {"**/bias": False}, default=True)
    optimizer = optax.masked(optax.add_decayed_weights(1.0), mask)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    np.testing.assert_array_equal(updates["head"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["head"]["kernel"], params["head"]["kernel"])
