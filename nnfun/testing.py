"""Layer conformance checks that any layer, ours or a user's, should pass.

Example:
    >>> import jax, jax.numpy as jnp, nnfun as nf
    >>> from nnfun.testing import check_layer
    >>> check_layer(nf.Dense(3), jnp.ones((2, 4)))
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from .checkpoint import load, save
from .core._layer import Layer, spec_of


def _cast(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def check_shapes(layer: Layer, x: Any, *, key: jax.Array, train: bool = False) -> Any:
    """The output spec declared by ``jax.eval_shape`` equals the actual output. Returns y."""
    params, state = layer.init(key, spec_of(x))
    run = functools.partial(layer.apply, key=key, train=train)
    declared = jax.eval_shape(run, params, state, x)
    y, new_state = run(params, state, x)
    chex.assert_trees_all_equal_shapes_and_dtypes(declared, (y, new_state))
    chex.assert_trees_all_equal_structs(new_state, state)
    return y


def check_jit(
    layer: Layer, x: Any, *, key: jax.Array, train: bool = False, atol: float = 1e-5
) -> None:
    """``jax.jit(apply)`` computes what eager ``apply`` computes."""
    params, state = layer.init(key, x)
    run = functools.partial(layer.apply, key=key, train=train)
    chex.assert_trees_all_close(
        jax.jit(run)(params, state, x), run(params, state, x), atol=atol, rtol=atol
    )


def check_vmap(layer: Layer, x: Any, *, key: jax.Array, atol: float = 1e-5) -> None:
    """``jax.vmap`` over an extra leading axis equals applying per slice (train=False)."""
    params, state = layer.init(key, x)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a[::-1]]), x)
    run = functools.partial(layer.apply, train=False)
    batched, _ = jax.vmap(run, in_axes=(None, None, 0))(params, state, stacked)
    for i in range(2):
        single, _ = run(params, state, jax.tree.map(lambda a, i=i: a[i], stacked))
        chex.assert_trees_all_close(
            jax.tree.map(lambda a, i=i: a[i], batched), single, atol=atol, rtol=atol
        )


def check_gradients(
    layer: Layer,
    x: Any,
    *,
    key: jax.Array,
    train: bool = False,
    wrt_input: bool = True,
    modes: tuple[str, ...] = ("rev",),
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    """Derivatives agree with finite differences, in float64.

    float64 because in float32 finite differences miss a 0.1% gradient error.
    ``modes=("rev", "fwd")`` adds forward mode, which a ``jax.custom_vjp`` lacks.
    """
    params, state = layer.init(key, x)
    with jax.enable_x64(True):
        p64, x64 = _cast(params, jnp.float64), _cast(x, jnp.float64)
        s64 = _cast(state, jnp.float64)

        def loss(p: dict[str, Any], xs: Any) -> Any:
            y, _ = layer.apply(p, s64, xs, key=key, train=train)
            leaves = [
                jnp.sum(jnp.sin(leaf))
                for leaf in jax.tree.leaves(y)
                if jnp.issubdtype(leaf.dtype, jnp.floating)
            ]
            return sum(leaves) if leaves else jnp.zeros(())

        differentiable_x = wrt_input and all(
            jnp.issubdtype(a.dtype, jnp.floating) for a in jax.tree.leaves(x64)
        )
        if differentiable_x:
            check_grads(loss, (p64, x64), order=1, modes=modes, atol=atol, rtol=rtol)
        elif jax.tree.leaves(p64):
            check_grads(
                lambda p: loss(p, x64), (p64,), order=1, modes=("rev", "fwd"), atol=atol, rtol=rtol
            )


def check_determinism(layer: Layer, x: Any, *, key: jax.Array, train: bool = True) -> None:
    """Same key, same params and outputs; in training a different key is allowed to differ."""
    params_a, state = layer.init(key, x)
    params_b, _ = layer.init(key, x)
    chex.assert_trees_all_equal(params_a, params_b)
    ya, _ = layer.apply(params_a, state, x, key=key, train=train)
    yb, _ = layer.apply(params_b, state, x, key=key, train=train)
    chex.assert_trees_all_equal(ya, yb)


def check_bfloat16(layer: Layer, x: Any, *, key: jax.Array, rtol: float = 0.1) -> None:
    """bfloat16 params and inputs give outputs near the float32 ones (a coarse check)."""
    params, state = layer.init(key, x)
    y32, _ = layer.apply(params, state, x, train=False)
    y16, _ = layer.apply(
        _cast(params, jnp.bfloat16), _cast(state, jnp.bfloat16), _cast(x, jnp.bfloat16), train=False
    )
    for a, b in zip(jax.tree.leaves(y32), jax.tree.leaves(y16), strict=True):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        scale = max(float(np.max(np.abs(a))), 1.0)
        np.testing.assert_allclose(b, a, atol=rtol * scale, rtol=rtol)


def check_layer(
    layer: Layer,
    x: Any,
    *,
    key: jax.Array | None = None,
    train: bool = False,
    gradients: bool = True,
    wrt_input: bool = True,
    bfloat16: bool = True,
) -> None:
    """Runs every conformance check on ``layer`` with input ``x``; raises on the first failure.

    Args:
        layer: the layer under test.
        x: an example input (a concrete array or pytree of arrays).
        key: PRNG key for init and apply (default ``jax.random.key(0)``).
        train: also pass ``train`` to the shape, jit and gradient checks.
        gradients: run the finite-difference gradient check (float64).
        wrt_input: differentiate with respect to the input as well as the params.
        bfloat16: compare a bfloat16 forward pass with float32.
    """
    key = jax.random.key(0) if key is None else key
    check_shapes(layer, x, key=key, train=train)
    check_jit(layer, x, key=key, train=train)
    check_vmap(layer, x, key=key)
    check_determinism(layer, x, key=key)
    check_serialization(layer, x, key=key)
    if gradients:
        check_gradients(layer, x, key=key, train=train, wrt_input=wrt_input)
    if bfloat16:
        check_bfloat16(layer, x, key=key)


def _bits(leaf: Any) -> tuple:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    array = np.asarray(leaf)
    return array.dtype, array.shape, array.tobytes()


def check_serialization(layer: Layer, x: Any, *, key: jax.Array | None = None) -> None:
    """Params and state (and the params cast to bfloat16) survive ``nf.save``/``nf.load`` bitwise.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> from nnfun.testing import check_serialization
        >>> check_serialization(nf.Dense(3), jnp.ones((2, 4)))
    """
    key = jax.random.key(0) if key is None else key
    params, state = layer.init(key, x)
    tree = {"params": params, "state": state, "params_bfloat16": _cast(params, jnp.bfloat16)}
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "layer.safetensors")
        save(path, tree)
        restored = load(path, like=tree)
    chex.assert_trees_all_equal_structs(restored, tree)
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    for (key_path, a), b in zip(flat, jax.tree.leaves(restored), strict=True):
        if _bits(a) != _bits(b):
            raise AssertionError(
                f"{jax.tree_util.keystr(key_path)} changed in a save/load round trip"
            )
