"""The several-inputs convention: extras reach every layer that reads them, and only those."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.models.gpt import GPT


def _padding(lengths, time):
    return jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]


def test_a_mask_given_once_reaches_every_block_of_a_sequential(key):
    blocks = [nf.TransformerBlock(num_heads=2, causal=False) for _ in range(2)]
    model = nf.Sequential({"embed": nf.Dense(8), "b0": blocks[0], "b1": blocks[1]})
    x = jax.random.normal(key, (2, 5, 3))
    mask = _padding([5, 3], 5)
    params, state = model.init(key, {"inputs": x, "mask": mask})
    y, _ = model.apply(params, state, {"inputs": x, "mask": mask})
    # The same as running each block by hand with the mask.
    h = x @ params["embed"]["kernel"] + params["embed"]["bias"][None, None, :]
    for name, block in (("b0", blocks[0]), ("b1", blocks[1])):
        h, _ = block.apply(params[name], {}, {"inputs": h, "mask": mask})
    np.testing.assert_allclose(y, h, atol=1e-5)
    # Non-causal blocks: padded steps would leak into real rows if any block missed the mask.
    y2, _ = model.apply(params, state, {"inputs": x.at[1, 3:].set(7.0), "mask": mask})
    np.testing.assert_allclose(y2[1, :3], y[1, :3], atol=1e-5)
    unmasked, _ = model.apply(params, state, x.at[1, 3:].set(7.0))
    assert not np.allclose(unmasked[1, :3], y[1, :3], atol=1e-3)


def test_lengths_reach_every_copy_of_a_stack(key):
    block = nf.TransformerBlock(num_heads=2, causal=False)
    stack = nf.Stack(3, block)
    x = jax.random.normal(key, (2, 6, 8))
    inputs = {"inputs": x, "lengths": jnp.array([6, 2])}
    params, state = stack.init(key, inputs)
    y, _ = jax.jit(stack.apply)(params, state, inputs)
    h = x
    for i in range(3):
        h, _ = block.apply(
            stack.unstack(params)[str(i)], {}, {"inputs": h, "lengths": inputs["lengths"]}
        )
    np.testing.assert_allclose(y, h, atol=1e-5)
    changed = {**inputs, "inputs": x.at[1, 2:].set(-3.0)}
    np.testing.assert_allclose(stack.apply(params, state, changed)[0][1, :2], y[1, :2], atol=1e-5)


def test_gpt_padding_reaches_every_block(key):
    model = GPT(vocab_size=13, d_model=16, num_heads=2, num_layers=2, max_length=8)
    ids = jax.random.randint(key, (1, 6), 0, 13)
    params, state = model.init(key, ids)
    hole = jnp.ones((1, 6), bool).at[0, 1].set(False)  # step 1 is padding
    y, _ = model.apply(params, state, {"inputs": ids, "mask": hole})
    other = ids.at[0, 1].set((ids[0, 1] + 1) % 13)
    y2, _ = model.apply(params, state, {"inputs": other, "mask": hole})
    np.testing.assert_allclose(y2[0, 2:], y[0, 2:], atol=1e-5)  # step 1 reaches no later step
    y3, _ = model.apply(params, state, other)
    assert not np.allclose(y3[0, 2:], y[0, 2:], atol=1e-4)


def test_rnn_lengths_through_a_sequential(key):
    model = nf.Sequential([nf.RNN(nf.GRU(4), return_sequences=False), nf.Dense(2)])
    x = jax.random.normal(key, (2, 5, 3))
    inputs = {"inputs": x, "lengths": jnp.array([5, 2])}
    params, state = model.init(key, inputs)
    y, _ = model.apply(params, state, inputs)
    # Sequence 1 has 2 real steps: the same as running it on those 2 steps alone.
    short, _ = model.apply(params, state, x[1:, :2])
    np.testing.assert_allclose(y[1], short[0], atol=1e-5)


def test_a_users_own_layer_declares_the_extras_it_reads(key):
    class MaskedMean(nf.Layer):
        extras = frozenset({"mask"})

        def init(self, key, x):
            return {}, {}

        def apply(self, params, state, x, *, key=None, train=False):
            h, mask = x["inputs"], x["mask"]
            total = jnp.sum(jnp.where(mask[..., None], h, 0.0), axis=1)
            return total / jnp.sum(mask, axis=1, keepdims=True), state

    model = nf.Sequential([nf.Dense(4), MaskedMean(), nf.Dense(1)])
    assert model.extras == {"mask"}
    x = jax.random.normal(key, (2, 5, 3))
    mask = _padding([5, 2], 5)
    params, state = model.init(key, {"inputs": x, "mask": mask})
    y, _ = model.apply(params, state, {"inputs": x, "mask": mask})
    h = x @ params["0"]["kernel"] + params["0"]["bias"][None, None, :]
    pooled = np.stack([h[0].mean(0), h[1, :2].mean(0)])
    np.testing.assert_allclose(
        y, pooled @ params["2"]["kernel"] + params["2"]["bias"][None, :], atol=1e-5
    )


def test_layers_without_extras_are_unchanged_and_typos_are_refused(key):
    model = nf.Sequential([nf.Dense(3), nf.Dense(2)])
    assert model.extras == frozenset()
    x = jnp.ones((2, 4))
    params, state = model.init(key, x)
    with pytest.raises(nf.LayerError, match=r"extra inputs \['mask'\].*read here are none"):
        model.apply(params, state, {"inputs": x, "mask": jnp.ones((2, 4), bool)})
    rnn = nf.Sequential([nf.RNN(nf.GRU(2))])
    with pytest.raises(nf.LayerError, match=r"\['lenghts'\] are not extras of the contract"):
        rnn.init(key, {"inputs": jnp.ones((1, 3, 2)), "lenghts": jnp.array([2])})


def test_extras_are_never_named_key():
    assert "key" not in nf.core.EXTRAS
    assert all(
        "key" not in layer.extras
        for layer in (
            nf.MultiHeadAttention(2),
            nf.RNN(nf.GRU(2)),
            nf.TransformerBlock(2),
            nf.LearnedPositions(4),
            GPT(vocab_size=3, d_model=4, num_heads=1, num_layers=1),
        )
    )


class _ReturnsBareY(nf.Layer):
    def init(self, key, x):
        return {}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        return x * 2.0  # forgot the state


def test_apply_that_does_not_return_a_pair_names_the_child(key):
    model = nf.Sequential({"dense": nf.Dense(3), "double": _ReturnsBareY()})
    x = jnp.ones((2, 4))  # batch 2: y[0], y[1] would have passed for (y, state)
    with pytest.raises(TypeError, match=r"_ReturnsBareY at 'double'.*pair \(y, state\)"):
        model.init(key, x)
    with pytest.raises(TypeError, match=r"_ReturnsBareY at 'layer'.*pair \(y, state\)"):
        nf.Stack(2, _ReturnsBareY()).init(key, x)


def test_unknown_or_missing_param_keys_raise_with_the_path(key):
    model = nf.Sequential({"hidden": nf.Dense(4), "out": nf.Dense(2)})
    x = jnp.ones((3, 5))
    params, state = model.init(key, x)
    bad = {**params, "out": {**params["out"], "scale": jnp.ones(2)}}
    with pytest.raises(nf.LayerError, match=r"Dense at 'out'.*unknown: \['scale'\]"):
        model.apply(bad, state, x)
    missing = {**params, "out": {"kernel": params["out"]["kernel"]}}
    with pytest.raises(nf.LayerError, match=r"Dense at 'out'.*missing: \['bias'\]"):
        jax.jit(model.apply)(missing, state, x)
    with pytest.raises(nf.LayerError, match=r"params have keys \['head'\] that name no child"):
        model.apply({**params, "head": params["out"]}, state, x)
    with pytest.raises(nf.LayerError, match=r"state have keys \['oops'\]"):
        model.apply(params, {"oops": {"n": jnp.zeros(())}}, x)
    stack = nf.Stack(2, nf.Dense(5))
    sp, ss = stack.init(key, x)
    sp = {"layer": {**sp["layer"], "extra": jnp.ones((2, 5))}}
    with pytest.raises(nf.LayerError, match=r"Dense at 'layer'.*unknown: \['extra'\]"):
        stack.apply(sp, ss, x)


def test_a_layer_class_in_a_sequential_says_to_instantiate_it():
    with pytest.raises(TypeError, match=r"layer class Dense, not a layer.*Dense\(\.\.\.\)"):
        nf.Sequential([nf.Dense, jax.nn.relu])


def test_an_int_seed_is_a_key(key):
    model = nf.Sequential([nf.Dense(8), nf.Dropout(0.5)])
    x = jnp.ones((4, 3))
    params, state = model.init(0, x)
    chex.assert_trees_all_equal(params, model.init(jax.random.key(0), x)[0])
    y_int, _ = model.apply(params, state, x, key=3, train=True)
    y_key, _ = model.apply(params, state, x, key=jax.random.key(3), train=True)
    np.testing.assert_array_equal(y_int, y_key)
    y_drop, _ = nf.Dropout(0.5).apply({}, {}, x, key=3, train=True)
    np.testing.assert_array_equal(
        y_drop, nf.Dropout(0.5).apply({}, {}, x, key=jax.random.key(3), train=True)[0]
    )
    with pytest.raises(
        TypeError, match=r"expected a PRNG key.*or an int seed.*jax.random.key\(0\)"
    ):
        model.apply(params, state, x, key="seed", train=True)
