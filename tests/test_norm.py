"""LayerNorm, RMSNorm and GroupNorm against NumPy references."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _init_random_affine(layer, x, key):
    """Init, then replace scale/bias by random values so the affine part is tested too."""
    params, state = layer.init(key, x)
    params = {k: _random(v.shape, seed=i + 7) for i, (k, v) in enumerate(params.items())}
    return params, state


def _numpy_layer_norm(x, scale, bias, eps, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


@pytest.mark.parametrize(("shape", "axis"), [((3, 5), -1), ((2, 4, 6), -1), ((2, 3, 4), (-2, -1))])
def test_layer_norm_matches_numpy(shape, axis, key):
    x = _random(shape)
    layer = nf.LayerNorm(axis=axis)
    params, state = _init_random_affine(layer, x, key)
    y, new_state = layer.apply(params, state, x)
    axes = (axis,) if isinstance(axis, int) else axis
    bshape = tuple(shape[a] if a - len(shape) in axes else 1 for a in range(len(shape)))
    expected = _numpy_layer_norm(
        x, params["scale"].reshape(bshape), params["bias"].reshape(bshape), 1e-5, axes
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert new_state == {}


def test_layer_norm_options(key):
    x = _random((2, 3))
    params, _ = nf.LayerNorm(use_scale=False, use_bias=False).init(key, x)
    assert params == {}
    y, _ = nf.LayerNorm(use_scale=False, use_bias=False).apply(params, {}, x)
    np.testing.assert_allclose(y, _numpy_layer_norm(x, 1.0, 0.0, 1e-5, (-1,)), rtol=1e-5, atol=1e-5)
    assert set(nf.LayerNorm().init(key, x)[0]) == {"scale", "bias"}


def test_rms_norm_matches_numpy(key):
    x = _random((4, 6))
    layer = nf.RMSNorm(use_bias=True)
    params, state = _init_random_affine(layer, x, key)
    y, _ = layer.apply(params, state, x)
    rms = np.sqrt((x**2).mean(axis=-1, keepdims=True) + 1e-6)
    expected = x / rms * params["scale"][None, :] + params["bias"][None, :]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert set(nf.RMSNorm().init(key, x)[0]) == {"scale"}


@pytest.mark.parametrize(("shape", "groups"), [((2, 6), 3), ((2, 5, 4), 2), ((2, 3, 3, 6), 6)])
def test_group_norm_matches_numpy(shape, groups, key):
    x = _random(shape)
    layer = nf.GroupNorm(groups)
    params, state = _init_random_affine(layer, x, key)
    y, _ = layer.apply(params, state, x)
    expected = np.empty_like(x)
    size = shape[-1] // groups
    for b in range(shape[0]):
        for g in range(groups):
            block = x[b, ..., g * size : (g + 1) * size]
            normed = (block - block.mean()) / np.sqrt(block.var() + 1e-5)
            expected[b, ..., g * size : (g + 1) * size] = normed
    expected = expected * params["scale"] + params["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nf.LayerNorm(), (3, 4)),
        (nf.LayerNorm(axis=(-2, -1)), (2, 3, 4)),
        (nf.RMSNorm(), (3, 4)),
        (nf.GroupNorm(2), (2, 3, 4)),
    ],
)
def test_conformance(layer, shape, key):
    check_layer(layer, jnp.asarray(_random(shape)), key=key)


def test_bfloat16_keeps_dtype(key):
    x = jnp.asarray(_random((2, 8)), jnp.bfloat16)
    params, state = nf.LayerNorm().init(key, x)
    assert nf.LayerNorm().apply(params, state, x)[0].dtype == jnp.bfloat16


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match="negative int"):
        nf.LayerNorm(axis=1)
    with pytest.raises(ValueError, match="distinct"):
        nf.RMSNorm(axis=(-1, -1))
    with pytest.raises(ValueError, match="epsilon"):
        nf.LayerNorm(epsilon=0.0)
    with pytest.raises(ValueError, match="num_groups"):
        nf.GroupNorm(0)
    assert hash(nf.LayerNorm(axis=[-1, -2])) == hash(nf.LayerNorm(axis=(-2, -1)))


@pytest.mark.parametrize(
    "cls, epsilon, use_bias", [(nf.LayerNorm, 1e-5, True), (nf.RMSNorm, 1e-6, False)]
)
def test_constructor_fields_keep_their_order_and_defaults(cls, epsilon, use_bias):
    # The fields live in one shared base (RMSNorm overrides two defaults); positional
    # calls and configs rely on this order.
    fields = tuple((f.name, f.default) for f in dataclasses.fields(cls))
    assert fields == (
        ("epsilon", epsilon),
        ("use_scale", True),
        ("use_bias", use_bias),
        ("axis", -1),
        ("fused", True),
    )
    layer = cls(1e-3, False, True, (-2, -1), False)
    assert (layer.epsilon, layer.use_bias, layer.axis, layer.fused) == (1e-3, True, (-2, -1), False)
    assert nf.from_config(nf.to_config(layer)) == layer
    with pytest.raises(ValueError, match=f"{cls.__name__} epsilon must be > 0"):
        cls(epsilon=-1.0)


def test_group_norm_groups_must_divide_channels(key):
    model = nf.Sequential({"block": nf.Sequential([nf.GroupNorm(4)])})
    with pytest.raises(nf.LayerError, match=r"block/0.*num_groups=4 must divide.*got 6 channels"):
        model.init(key, jnp.zeros((2, 3, 6)))
    params, _ = nf.GroupNorm(4).init(key, jnp.zeros((2, 8)))
    with pytest.raises(nf.LayerError, match="GroupNorm at '<root>'.*must divide"):
        nf.GroupNorm(4).apply(params, {}, jnp.zeros((2, 6)))
    with pytest.raises(nf.LayerError, match="expected \\(batch, ..., channels\\)"):
        nf.GroupNorm(1).init(key, jnp.zeros((6,)))


def test_feature_mismatch_at_apply_names_path(key):
    model = nf.Sequential({"norm": nf.LayerNorm()})
    params, state = model.init(key, jnp.zeros((2, 4)))
    with pytest.raises(nf.LayerError, match=r"LayerNorm at 'norm'.*sizes \(4,\).*\(2, 5\)"):
        model.apply(params, state, jnp.zeros((2, 5)))
    with pytest.raises(nf.LayerError, match="only 1 axes"):
        nf.LayerNorm(axis=(-2, -1)).init(key, jnp.zeros((4,)))
    params, _ = nf.GroupNorm(2).init(key, jnp.zeros((2, 4)))
    with pytest.raises(nf.LayerError, match="expected 4 channels"):
        nf.GroupNorm(2).apply(params, {}, jnp.zeros((2, 6)))


def test_jit_and_grad_compose(key):
    x = jnp.asarray(_random((3, 4)))
    params, state = nf.LayerNorm().init(key, x)

    def loss(p):
        return jnp.sum(nf.LayerNorm().apply(p, state, x)[0] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    # sum(y^2) with y = n * scale + bias, scale = 1, bias = 0 at init:
    # d/dbias = 2 * sum_rows(n), d/dscale = 2 * sum_rows(n^2).
    n = _numpy_layer_norm(np.asarray(x), 1.0, 0.0, 1e-5, (-1,))
    np.testing.assert_allclose(grads["bias"], 2 * n.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["scale"], 2 * (n**2).sum(0), rtol=1e-4, atol=1e-4)


def _numpy_input_grad(f, x, w, eps=1e-4):
    """Central finite differences of sum(f(x) * w) in float64."""
    x = x.astype(np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        grad[i] = ((f(x + d) - f(x - d)) * w).sum() / (2 * eps)
    return grad


@pytest.mark.parametrize(
    "layer", [nf.LayerNorm(), nf.LayerNorm(use_scale=False), nf.RMSNorm(use_bias=True)]
)
def test_fused_path_gradients_match_finite_differences(layer, key):
    x = _random((2, 3, 5))
    w = _random((2, 3, 5), seed=3)
    params, state = _init_random_affine(layer, x, key)
    scale = params.get("scale", np.ones(5, np.float32))
    bias = params.get("bias", np.zeros(5, np.float32))
    if isinstance(layer, nf.RMSNorm):
        ref = lambda a: a / np.sqrt((a**2).mean(-1, keepdims=True) + 1e-6) * scale + bias  # noqa: E731
    else:
        ref = lambda a: _numpy_layer_norm(a, scale, bias, 1e-5, (-1,))  # noqa: E731
    expected = _numpy_input_grad(ref, x, w)
    for fused in (True, False):
        variant = dataclasses.replace(layer, fused=fused)
        grad = jax.jit(jax.grad(lambda a, v=variant: jnp.sum(v.apply(params, state, a)[0] * w)))(x)
        np.testing.assert_allclose(grad, expected, rtol=1e-3, atol=1e-3)


def test_forward_mode_needs_unfused_path(key):
    x = jnp.asarray(_random((2, 4)))
    params, state = nf.LayerNorm().init(key, x)
    f = lambda layer: lambda a: layer.apply(params, state, a)[0]  # noqa: E731
    _, tangent = jax.jvp(f(nf.LayerNorm(fused=False)), (x,), (jnp.ones_like(x),))
    # Adding a constant to every feature leaves the normalized output unchanged.
    np.testing.assert_allclose(tangent, 0.0, atol=1e-5)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(f(nf.LayerNorm()), (x,), (jnp.ones_like(x),))
