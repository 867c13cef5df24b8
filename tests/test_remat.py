"""Rematerialisation: the Remat wrapper over jax.checkpoint."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def block(width=16):
    return nf.Residual(
        nf.Sequential([nf.LayerNorm(), nf.Dense(4 * width), jax.nn.gelu, nf.Dense(width)])
    )


class Counter(nf.Layer):
    """A stateful layer: counts how many rows it has seen."""

    def init(self, key, x):
        return {}, {"seen": jnp.zeros((), jnp.int32)}

    def apply(self, params, state, x, *, key=None, train=False):
        return 2.0 * x, {"seen": state["seen"] + x.shape[0]}


def loss_and_grads(model, params, state, x, **kwargs):
    return jax.value_and_grad(lambda p: jnp.sum(jnp.sin(model.apply(p, state, x, **kwargs)[0])))(
        params
    )


def test_params_and_outputs_are_the_wrapped_layers(key):
    model = nf.Sequential([block(), block()])
    x = jax.random.normal(key, (4, 16))
    params, state = model.init(key, x)
    wrapped = nf.Remat(model)
    chex.assert_trees_all_equal(wrapped.init(key, x), (params, state))
    chex.assert_trees_all_close(
        loss_and_grads(wrapped, params, state, x),
        loss_and_grads(model, params, state, x),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "policy",
    [None, "dots_saveable", "nothing_saveable", jax.checkpoint_policies.everything_saveable],
)
def test_gradients_equal_without_remat_for_every_policy(key, policy):
    model = nf.Sequential([nf.Remat(block(), policy=policy), nf.Remat(block(), policy=policy)])
    plain = nf.Sequential([block(), block()])
    x = jax.random.normal(key, (4, 16))
    params, state = plain.init(key, x)
    chex.assert_trees_all_close(
        loss_and_grads(model, params, state, x), loss_and_grads(plain, params, state, x), rtol=1e-6
    )


def test_gradient_program_contains_a_checkpoint(key):
    model = nf.Remat(nf.Dense(3))
    x = jnp.ones((2, 4))
    params, state = model.init(key, x)
    jaxpr = str(jax.make_jaxpr(lambda p: loss_and_grads(model, p, state, x))(params))
    assert "checkpoint" in jaxpr or "remat" in jaxpr
    plain = str(jax.make_jaxpr(lambda p: loss_and_grads(nf.Dense(3), p, state, x))(params))
    assert "checkpoint" not in plain and "remat" not in plain


def test_dropout_key_and_train_flag_pass_through(key):
    inner = nf.Sequential([nf.Dense(8), nf.Dropout(0.5)])
    x = jnp.ones((3, 4))
    params, state = inner.init(key, x)
    ours, _ = nf.Remat(inner).apply(params, state, x, key=key, train=True)
    ref, _ = inner.apply(params, state, x, key=key, train=True)
    np.testing.assert_array_equal(ours, ref)
    assert np.any(np.asarray(ours) == 0)
    with pytest.raises(nf.LayerError, match="Dropout at '1'.*needs a random key"):
        nf.Remat(inner).apply(params, state, x, train=True)


def test_state_passes_through():
    model = nf.Remat(Counter())
    params, state = model.init(jax.random.key(0), jnp.ones((3, 2)))
    y, state = model.apply(params, state, jnp.ones((3, 2)))
    assert int(state["seen"]) == 3
    np.testing.assert_array_equal(y, np.full((3, 2), 2.0))


def test_conformance(key):
    check_layer(nf.Remat(nf.Dense(3)), jax.random.normal(key, (2, 4)))


def test_config_round_trip():
    model = nf.Remat(nf.Sequential([nf.Dense(4), jax.nn.relu]), policy="dots_saveable")
    assert nf.from_config(nf.to_config(model)) == model


def test_policy_errors():
    with pytest.raises(ValueError, match="unknown remat policy 'dots'; names: .*dots_saveable"):
        nf.Remat(nf.Dense(2), policy="dots")
    with pytest.raises(TypeError, match="must be None, a name or a callable"):
        nf.Remat(nf.Dense(2), policy=3)


def scanned_grad_temp_bytes(layer, depth=8, width=32, batch=64):
    """Compiled temp memory of the gradient of ``depth`` copies of ``layer`` under lax.scan."""
    x = jax.ShapeDtypeStruct((batch, width), jnp.float32)
    one, state = nf.init_shapes(layer, x)
    stacked = jax.tree.map(lambda s: jax.ShapeDtypeStruct((depth, *s.shape), s.dtype), one)

    def loss(params, x):
        def body(h, p):
            return layer.apply(p, state, h)[0], None

        return jnp.sum(jax.lax.scan(body, x, params)[0])

    compiled = jax.jit(jax.grad(loss)).lower(stacked, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_remat_inside_scan_cuts_peak_memory():
    # Inside lax.scan each block's activations are recomputed in its own backward
    # iteration, so only the block inputs are stored (XLA:CPU does not delay
    # recomputation in unrolled code; see benchmarks/remat_memory.py).
    plain = scanned_grad_temp_bytes(block(32))
    remat = scanned_grad_temp_bytes(nf.Remat(block(32)))
    assert remat < 0.5 * plain, (remat, plain)
