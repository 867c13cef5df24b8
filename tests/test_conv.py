"""Conv and ConvTranspose against loop-and-einsum NumPy references."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _same_pads(sizes, windows, strides):
    """TensorFlow's SAME: output ceil(n / s), the odd padding element at the end."""
    pads = []
    for n, w, s in zip(sizes, windows, strides):
        total = max((math.ceil(n / s) - 1) * s + w - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _numpy_conv(x, kernel, strides, pads, dilation, groups):
    """Cross-correlation by explicit loops over output positions and an einsum per patch."""
    rank = kernel.ndim - 2
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    windows = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    out_sizes = [(xp.shape[1 + a] - windows[a]) // strides[a] + 1 for a in range(rank)]
    cin, features = kernel.shape[-2], kernel.shape[-1]
    fout = features // groups
    y = np.zeros((x.shape[0], *out_sizes, features), np.float64)
    for pos in itertools.product(*[range(n) for n in out_sizes]):
        index = tuple(
            slice(p * s, p * s + w, d) for p, s, w, d in zip(pos, strides, windows, dilation)
        )
        patch = xp[(slice(None), *index)]  # (batch, *kernel_size, channels)
        for g in range(groups):
            part = patch[..., g * cin : (g + 1) * cin]
            k = kernel[..., g * fout : (g + 1) * fout]
            y[(slice(None), *pos, slice(g * fout, (g + 1) * fout))] = np.tensordot(
                part, k, axes=(list(range(1, rank + 2)), list(range(rank + 1)))
            )
    return y


def _numpy_conv_transpose(x, kernel, strides, dilation, crops, groups=1):
    """The scatter-add definition: x[i] @ kernel[j] lands at stride * i + dilation * j
    (per channel group: input group g through kernel group g into output group g)."""
    rank = kernel.ndim - 2
    sizes = x.shape[1:-1]
    windows = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    full = [(n - 1) * s + w for n, s, w in zip(sizes, strides, windows)]
    cin, fout = kernel.shape[-2], kernel.shape[-1] // groups
    y = np.zeros((x.shape[0], *full, kernel.shape[-1]), np.float64)
    for i in itertools.product(*[range(n) for n in sizes]):
        for j in itertools.product(*[range(k) for k in kernel.shape[:rank]]):
            o = tuple(a * s + b * d for a, b, s, d in zip(i, j, strides, dilation))
            for g in range(groups):
                part = x[(slice(None), *i, slice(g * cin, (g + 1) * cin))]
                k = kernel[(*j, slice(None), slice(g * fout, (g + 1) * fout))]
                y[(slice(None), *o, slice(g * fout, (g + 1) * fout))] += part @ k
    index = tuple(slice(lo, n - hi) for (lo, hi), n in zip(crops, full) if True)
    if any(lo < 0 or hi < 0 for lo, hi in crops):
        y = np.pad(y, [(0, 0), *[(max(-lo, 0), max(-hi, 0)) for lo, hi in crops], (0, 0)])
        index = tuple(
            slice(max(lo, 0), y.shape[1 + a] - max(hi, 0)) for a, (lo, hi) in enumerate(crops)
        )
    return y[(slice(None), *index)]


def _random_params(layer, x, key):
    params, state = layer.init(key, x)
    return {k: _random(v.shape, seed=3 + i) for i, (k, v) in enumerate(params.items())}, state


CONV_CASES = [
    # (x shape, Conv kwargs)
    ((2, 9, 3), dict(features=4, kernel_size=(3,), strides=2, padding="VALID")),
    ((2, 8, 2), dict(features=3, kernel_size=(3,), padding="CAUSAL", kernel_dilation=2)),
    ((2, 7, 6, 3), dict(features=4, kernel_size=(3, 2), strides=(2, 1))),
    (
        (1, 6, 6, 2),
        dict(features=2, kernel_size=(2, 3), padding=((1, 2), (0, 1)), kernel_dilation=2),
    ),
    ((2, 5, 5, 4), dict(features=6, kernel_size=(3, 3), feature_group_count=2)),
    ((1, 5, 5, 3), dict(features=6, kernel_size=(3, 3), feature_group_count=3, padding="VALID")),
    ((1, 4, 5, 3, 2), dict(features=3, kernel_size=(2, 3, 2), strides=2)),
]


@pytest.mark.parametrize(("shape", "kwargs"), CONV_CASES)
def test_conv_matches_numpy(shape, kwargs, key):
    layer = nf.Conv(**kwargs)
    x = _random(shape)
    params, state = _random_params(layer, x, key)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    rank = len(layer.kernel_size)
    windows = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.kernel_dilation)]
    if layer.padding == "SAME":
        pads = _same_pads(shape[1:-1], windows, layer.strides)
    elif layer.padding == "VALID":
        pads = [(0, 0)] * rank
    elif layer.padding == "CAUSAL":
        pads = [(windows[0] - 1, 0)]
    else:
        pads = list(layer.padding)
    expected = _numpy_conv(
        x, params["kernel"], layer.strides, pads, layer.kernel_dilation, layer.feature_group_count
    )
    expected = expected + params["bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert params["kernel"].shape == (
        *layer.kernel_size,
        shape[-1] // layer.feature_group_count,
        layer.features,
    )


def test_causal_output_ignores_the_future(key):
    layer = nf.Conv(2, (3,), padding="CAUSAL", kernel_dilation=2)
    x = jnp.asarray(_random((1, 10, 2)))
    params, state = layer.init(key, x)
    jac = jax.jacobian(lambda v: layer.apply(params, state, v)[0][0, :, 0])(x)
    for t in range(10):
        assert np.all(np.asarray(jac[t, 0, t + 1 :]) == 0)


TRANSPOSE_CASES = [
    ((2, 4, 3), dict(features=2, kernel_size=(3,), strides=2, padding="VALID")),
    ((1, 3, 4, 2), dict(features=3, kernel_size=(3, 3), strides=2, padding="SAME")),
    ((1, 3, 3, 2), dict(features=2, kernel_size=(4, 2), strides=(2, 1), kernel_dilation=(1, 2))),
    ((2, 4, 1), dict(features=2, kernel_size=(2,), strides=3, padding="SAME")),
    ((1, 3, 2), dict(features=2, kernel_size=(3,), strides=2, padding=((1, -1),))),
    ((2, 4, 4), dict(features=6, kernel_size=(3,), strides=2, feature_group_count=2)),
    ((1, 3, 3, 3), dict(features=3, kernel_size=(2, 3), strides=2, feature_group_count=3)),
]


@pytest.mark.parametrize(("shape", "kwargs"), TRANSPOSE_CASES)
def test_conv_transpose_matches_scatter_add(shape, kwargs, key):
    layer = nf.ConvTranspose(**kwargs)
    x = _random(shape)
    params, state = _random_params(layer, x, key)
    y, _ = layer.apply(params, state, jnp.asarray(x))
    windows = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.kernel_dilation)]
    if layer.padding == "VALID":
        crops = [(0, 0)] * len(windows)
    elif layer.padding == "SAME":
        # Crop full size (n-1)*s + w down to n*s, the odd element at the end; pad when w < s.
        crops = []
        for w, s in zip(windows, layer.strides):
            c = w - s
            crops.append((max(c, 0) // 2, c - max(c, 0) // 2))
        assert y.shape[1:-1] == tuple(n * s for n, s in zip(shape[1:-1], layer.strides))
    else:
        crops = list(layer.padding)
    expected = _numpy_conv_transpose(
        x, params["kernel"], layer.strides, layer.kernel_dilation, crops, layer.feature_group_count
    )
    np.testing.assert_allclose(y, expected + params["bias"], rtol=1e-4, atol=1e-4)
    groups = layer.feature_group_count
    assert params["kernel"].shape == (*layer.kernel_size, shape[-1] // groups, layer.features)


@pytest.mark.parametrize(
    ("n", "k", "s", "groups"),
    [(8, 3, 2, 1), (6, 4, 2, 1), (9, 2, 3, 1), (4, 1, 2, 1), (8, 3, 2, 2)],
)
def test_same_conv_transpose_is_the_transpose_of_same_conv(n, k, s, groups, key):
    x = jnp.asarray(_random((1, n, 2 * groups)))
    conv = nf.Conv(3 * groups, (k,), strides=s, feature_group_count=groups, use_bias=False)
    params, state = conv.init(key, x)
    y, vjp = jax.vjp(lambda v: conv.apply(params, state, v)[0], x)
    cotangent = jnp.asarray(_random(y.shape, seed=1))
    # The transposed layer maps 3 -> 2 channels per group: swap each group's kernel
    # in/out axes, (k, 2, 3 * groups) -> groups x (k, 3, 2) -> (k, 3, 2 * groups).
    kernel = jnp.concatenate(
        [jnp.swapaxes(g, -1, -2) for g in jnp.split(params["kernel"], groups, axis=-1)], axis=-1
    )
    up = nf.ConvTranspose(2 * groups, (k,), strides=s, feature_group_count=groups, use_bias=False)
    assert up.init(key, cotangent)[0]["kernel"].shape == kernel.shape
    np.testing.assert_allclose(
        up.apply({"kernel": kernel}, {}, cotangent)[0], vjp(cotangent)[0], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nf.Conv(3, (3,), padding="CAUSAL"), (2, 5, 2)),
        (nf.Conv(4, (2, 2), strides=2, feature_group_count=2), (1, 4, 4, 2)),
        (nf.Conv(2, (2, 2, 2), use_bias=False), (1, 3, 3, 3, 1)),
        (nf.ConvTranspose(2, (3, 3), strides=2), (1, 3, 3, 2)),
        (nf.ConvTranspose(4, (3,), strides=2, feature_group_count=2), (2, 5, 2)),
    ],
)
def test_conformance(layer, shape, key):
    check_layer(layer, jnp.asarray(_random(shape)), key=key)


def test_fields_are_normalised_and_hashable():
    a = nf.Conv(4, [3, 3], strides=2, padding="same", kernel_dilation=[1, 2])
    assert a.kernel_size == (3, 3) and a.strides == (2, 2) and a.kernel_dilation == (1, 2)
    assert a.padding == "SAME" and hash(a) == hash(nf.Conv(4, (3, 3), 2, "SAME", (1, 2)))
    assert nf.Conv(4, (3,), padding=[[1, 0]]).padding == ((1, 0),)
    assert (
        "bias"
        not in nf.Conv(2, (1,), use_bias=False).init(jax.random.key(0), jnp.zeros((1, 2, 1)))[0]
    )


CONV_FIELDS = (
    ("features", dataclasses.MISSING),
    ("kernel_size", dataclasses.MISSING),
    ("strides", 1),
    ("padding", "SAME"),
    ("kernel_dilation", 1),
    ("feature_group_count", 1),
    ("use_bias", True),
    ("kernel_init", "lecun_normal"),
    ("bias_init", "zeros"),
)


@pytest.mark.parametrize("cls", [nf.Conv, nf.ConvTranspose])
def test_constructor_fields_keep_their_order_and_defaults(cls):
    # The fields live in one shared base; positional calls and configs rely on this order.
    assert tuple((f.name, f.default) for f in dataclasses.fields(cls)) == CONV_FIELDS
    layer = cls(4, (3,), 2, "VALID", 1, 2, False, "zeros", "ones")
    assert (layer.strides, layer.feature_group_count, layer.bias_init) == ((2,), 2, "ones")
    assert nf.from_config(nf.to_config(layer)) == layer


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match=r"got the int 3. Fix: pass \(3,\) for 1-D or \(3, 3\)"):
        nf.Conv(4, 3)
    with pytest.raises(ValueError, match="CAUSAL' is for 1-D"):
        nf.Conv(4, (3, 3), padding="CAUSAL")
    with pytest.raises(ValueError, match="padding must be one of"):
        nf.Conv(4, (3,), padding="FULL")
    with pytest.raises(ValueError, match="padding must be one of"):
        nf.ConvTranspose(4, (3,), padding="CAUSAL")
    with pytest.raises(ValueError, match="padding pairs must be 2"):
        nf.Conv(4, (3, 3), padding=((1, 1),))
    with pytest.raises(ValueError, match="strides must be a positive int or a tuple of 2"):
        nf.Conv(4, (3, 3), strides=(1, 1, 1))
    with pytest.raises(ValueError, match="feature_group_count"):
        nf.Conv(4, (3,), feature_group_count=0)
    with pytest.raises(ValueError, match="ConvTranspose feature_group_count must be a positive"):
        nf.ConvTranspose(4, (3,), feature_group_count=True)
    with pytest.raises(ValueError, match="features must be a positive int"):
        nf.ConvTranspose(0, (3,))
    with pytest.raises(ValueError, match="tuple of positive ints"):
        nf.Conv(4, (0, 3))


def test_wrong_spatial_rank_names_path(key):
    model = nf.Sequential({"features": nf.Sequential([nf.Conv(4, (3, 3))])})
    with pytest.raises(
        nf.LayerError, match=r"Conv at 'features/0'.*4 axes, got shape \(2, 8, 8, 8, 1\)"
    ):
        model.init(key, jnp.zeros((2, 8, 8, 8, 1)))
    with pytest.raises(nf.LayerError, match=r"ConvTranspose.*3 axes, got shape \(2, 8, 8, 1\)"):
        nf.ConvTranspose(2, (3,)).init(key, jnp.zeros((2, 8, 8, 1)))


def test_channel_mismatch_at_apply_names_path(key):
    model = nf.Sequential({"stem": nf.Conv(4, (3, 3)), "head": nf.Conv(2, (1, 1))})
    params, state = model.init(key, jnp.zeros((1, 5, 5, 3)))
    with pytest.raises(nf.LayerError, match=r"Conv at 'stem'.*expected 3 input channels.*got 1"):
        model.apply(params, state, jnp.zeros((1, 5, 5, 1)))
    up = nf.ConvTranspose(2, (2,))
    up_params, _ = up.init(key, jnp.zeros((1, 4, 3)))
    with pytest.raises(nf.LayerError, match="expected 3 input channels.*got 5"):
        up.apply(up_params, {}, jnp.zeros((1, 4, 5)))


def test_kernel_larger_than_input_under_valid(key):
    model = nf.Sequential({"c": nf.Conv(2, (5, 3), padding="VALID")})
    with pytest.raises(
        nf.LayerError, match=r"Conv at 'c'.*window \(5 along spatial axis 0.*\(4 \+ 0 \+ 0\)"
    ):
        model.init(key, jnp.zeros((1, 4, 4, 1)))
    with pytest.raises(nf.LayerError, match="window .7 along spatial axis 0, after dilation"):
        nf.Conv(2, (4,), padding="VALID", kernel_dilation=2).init(key, jnp.zeros((1, 6, 1)))
    nf.Conv(2, (5, 3), padding="SAME").init(key, jnp.zeros((1, 4, 4, 1)))
    with pytest.raises(nf.LayerError, match=r"cropping \(3, 3\) along spatial axis 0 leaves no"):
        nf.ConvTranspose(2, (2,), padding=((3, 3),)).init(key, jnp.zeros((1, 2, 1)))


def test_groups_must_divide_channels(key):
    model = nf.Sequential({"dw": nf.Conv(6, (3,), feature_group_count=4)})
    with pytest.raises(
        nf.LayerError,
        match=r"Conv at 'dw'.*feature_group_count=4 must divide.*\(6\) and features \(6\)",
    ):
        model.init(key, jnp.zeros((1, 5, 6)))
    up = nf.Sequential({"up": nf.ConvTranspose(6, (3,), feature_group_count=4)})
    with pytest.raises(
        nf.LayerError,
        match=r"ConvTranspose at 'up'.*feature_group_count=4 must divide.*\(4\) and features \(6\)",
    ):
        up.init(key, jnp.zeros((1, 5, 4)))
