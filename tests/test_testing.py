"""The conformance helper catches broken layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun import testing


class WrongGradient(nf.Layer):
    """Forward is x * w, but the custom VJP returns a gradient 0.1% off."""

    def init(self, key, x):
        return {"w": jnp.ones(x.shape[-1:])}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        @jax.custom_vjp
        def mul(x, w):
            return x * w[None, :]

        def fwd(x, w):
            return mul(x, w), (x, w)

        def bwd(res, g):
            x, w = res
            return g * w[None, :] * 1.001, jnp.sum(g * x, axis=0)

        mul.defvjp(fwd, bwd)
        return mul(x, params["w"]), state


class NumpyInside(nf.Layer):
    """Calls NumPy on its input: fine eagerly, fails under jax.jit."""

    def init(self, key, x):
        return {}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        return jnp.asarray(np.tanh(np.asarray(x))), state


def test_check_gradients_catches_a_small_gradient_error():
    x = jax.random.normal(jax.random.key(0), (3, 4))
    with pytest.raises(AssertionError):
        testing.check_gradients(WrongGradient(), x, key=jax.random.key(0))


def test_check_jit_catches_a_layer_that_only_works_eagerly():
    x = jnp.ones((2, 3))
    with pytest.raises(jax.errors.TracerArrayConversionError):
        testing.check_jit(NumpyInside(), x, key=jax.random.key(0))


def test_check_layer_passes_a_correct_layer():
    testing.check_layer(nf.Dense(2), jnp.ones((3, 4)))


def test_check_shapes_catches_a_lying_state():
    class GrowsState(nf.Layer):
        def init(self, key, x):
            return {}, {}

        def apply(self, params, state, x, *, key=None, train=False):
            return x, {"extra": jnp.zeros(())}

    with pytest.raises(AssertionError):
        testing.check_shapes(GrowsState(), jnp.ones((2, 2)), key=jax.random.key(0))
