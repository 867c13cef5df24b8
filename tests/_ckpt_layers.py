"""A user-defined layer and function for the load_model tests, importable as ``_ckpt_layers``.

The tests put this directory on ``sys.path`` (and on ``PYTHONPATH`` for subprocesses), as
a user's own package would be importable.
"""

import jax.numpy as jnp

import nnfun as nf


class Scale(nf.Layer):
    """Multiplies by a learned per-feature scale and counts its training calls in its state."""

    init_value: float = 1.0

    def init(self, key, x):
        return {"scale": jnp.full(x.shape[-1:], self.init_value)}, {
            "calls": jnp.zeros((), jnp.int32)
        }

    def apply(self, params, state, x, *, key=None, train=False):
        calls = state["calls"] + 1 if train else state["calls"]
        return x * params["scale"][None, :], {"calls": calls}


def swap(pair):
    """Swaps a pair; a module-level function, so a Lambda of it can be written to a config."""
    return pair[1], pair[0]
