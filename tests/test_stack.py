"""Stack: stacked params, scan, remat, per-copy keys, and the unstacked Sequential form."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def block():
    return nf.Residual(nf.Sequential([nf.Dense(6), jnp.tanh, nf.Dropout(0.3)]))


class Counter(nf.Layer):
    """Adds a learned offset and counts its calls in its state."""

    def init(self, key, x):
        return {"offset": jax.random.normal(key, x.shape[-1:])}, {"calls": jnp.zeros((), jnp.int32)}

    def apply(self, params, state, x, *, key=None, train=False):
        return x + params["offset"][None, :], {"calls": state["calls"] + 1}


def test_init_matches_sequential_params(key):
    x = jnp.ones((2, 6))
    stack = nf.Stack(4, block())
    params, _ = stack.init(key, x)
    seq_params, _ = nf.Sequential([block()] * 4).init(key, x)
    chex.assert_trees_all_equal(stack.unstack(params), seq_params)
    assert params["layer"]["layer"]["0"]["kernel"].shape == (4, 6, 6)


@pytest.mark.parametrize("train", [False, True])
def test_outputs_match_sequential(key, train):
    x = jax.random.normal(key, (3, 6))
    stack, seq = nf.Stack(3, block()), nf.Sequential([block()] * 3)
    params, state = stack.init(key, x)
    dropout_key = jax.random.key(7)
    y, _ = stack.apply(params, state, x, key=dropout_key, train=train)
    y_seq, _ = seq.apply(stack.unstack(params), {}, x, key=dropout_key, train=train)
    chex.assert_trees_all_close(y, y_seq, atol=1e-6)
    if train:  # dropout really differs between copies and from evaluation
        assert not np.allclose(y, stack.apply(params, state, x)[0])


@pytest.mark.parametrize("unroll", [2, True, False])
def test_unroll_gives_the_same_outputs_and_gradients(key, unroll):
    x = jax.random.normal(key, (3, 6))
    stack, seq = nf.Stack(3, block(), unroll=unroll), nf.Sequential([block()] * 3)
    params, state = stack.init(key, x)
    dropout_key = jax.random.key(7)

    def loss(p, layer, s):
        return jnp.sum(jnp.sin(layer.apply(p, s, x, key=dropout_key, train=True)[0]))

    value, grads = jax.value_and_grad(loss)(params, stack, state)
    seq_value, seq_grads = jax.value_and_grad(loss)(stack.unstack(params), seq, {})
    np.testing.assert_allclose(value, seq_value, rtol=1e-6)
    chex.assert_trees_all_close(stack.unstack(grads), seq_grads, atol=1e-6)


def test_stack_unstack_round_trip(key):
    stack = nf.Stack(3, block())
    params, _ = stack.init(key, jnp.ones((1, 6)))
    chex.assert_trees_all_equal(stack.stack(stack.unstack(params)), params)
    assert stack.unstack({}) == {} and stack.stack({}) == {}


def test_state_is_stacked(key):
    stack = nf.Stack(3, Counter())
    x = jnp.zeros((2, 4))
    params, state = stack.init(key, x)
    assert state["layer"]["calls"].shape == (3,)
    y, state = stack.apply(params, state, x)
    np.testing.assert_array_equal(state["layer"]["calls"], [1, 1, 1])
    offsets = np.asarray(params["layer"]["offset"])
    np.testing.assert_allclose(y, np.broadcast_to(offsets.sum(0), (2, 4)), rtol=1e-6)


@pytest.mark.parametrize("policy", [None, "dots_saveable", "nothing_saveable"])
def test_remat_same_gradients(key, policy):
    x = jax.random.normal(key, (2, 6))
    plain, remat = nf.Stack(3, block()), nf.Stack(3, block(), remat=True, remat_policy=policy)
    params, state = plain.init(key, x)

    def grads(model):
        loss = lambda p: jnp.sum(model.apply(p, state, x, key=key, train=True)[0] ** 2)  # noqa: E731
        return jax.grad(loss)(params)

    chex.assert_trees_all_close(grads(remat), grads(plain), atol=1e-5)


def test_program_size_does_not_grow_with_depth(key):
    x = jnp.ones((2, 6))

    def equations(n):
        stack = nf.Stack(n, block())
        params, state = stack.init(key, x)
        return len(jax.make_jaxpr(lambda p: stack.apply(p, state, x)[0])(params).eqns)

    assert equations(2) == equations(16)


def test_conformance(key):
    check_layer(nf.Stack(2, nf.Residual(nf.Dense(4))), jax.random.normal(key, (3, 4)))


def test_bad_settings():
    with pytest.raises(ValueError, match="positive int"):
        nf.Stack(0, nf.Dense(3))
    with pytest.raises(ValueError, match="checkpoint_policies"):
        nf.Stack(2, nf.Dense(3), remat=True, remat_policy="save_everything_please")
    for bad in (0, -1, 1.5, "all"):
        with pytest.raises(ValueError, match="unroll must be True, False or an int >= 1"):
            nf.Stack(2, nf.Dense(3), unroll=bad)


def test_shape_changing_layer_is_rejected(key):
    with pytest.raises(nf.LayerError, match="Stack at '<root>'.*must match"):
        nf.Stack(2, nf.Dense(3)).init(key, jnp.ones((1, 4)))


def test_stack_needs_every_copy(key):
    stack = nf.Stack(2, nf.Dense(3))
    params, _ = stack.init(key, jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"lack the copies \['1'\]"):
        stack.stack({"0": stack.unstack(params)["0"]})


def test_eager_calls_compile_once(key):
    # Eager lax.scan compiles a new program per call; hundreds of calls exhausted the
    # memory for code (an LLVM allocation failure, then a crash). Eager Stack and RNN
    # calls go through one cached jit instead.
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *_, **__: compiles.append(event) if "backend_compile" in event else None
    )
    x = jax.random.normal(key, (2, 3, 8))
    for layer in (nf.Stack(2, nf.TransformerBlock(num_heads=2)), nf.RNN(nf.GRU(4))):
        params, state = layer.init(key, x)
        layer.apply(params, state, x)
        before = len(compiles)
        for _ in range(3):
            layer.apply(params, state, x)
        assert len(compiles) == before, type(layer).__name__
