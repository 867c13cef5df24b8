"""MultiHeadAttention against a NumPy implementation; masks, GQA, dropout, KV cache, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.testing import check_layer


def np_dense(p, x):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_attention(
    params, q_in, kv_in, num_heads, kv_heads, mask=None, causal=False, keep=None, rate=0.0
):
    """Multi-head attention written out with loops over heads (float64)."""
    q_in, kv_in = np.asarray(q_in, np.float64), np.asarray(kv_in, np.float64)
    q, k, v = (
        np_dense(params["query"], q_in),
        np_dense(params["key"], kv_in),
        np_dense(params["value"], kv_in),
    )
    batch, q_len, width = q.shape
    k_len, head_dim = kv_in.shape[1], width // num_heads
    allowed = np.ones((batch, num_heads, q_len, k_len), bool)
    if mask is not None:
        allowed &= np.broadcast_to(mask, allowed.shape)
    if causal:
        allowed &= np.tril(np.ones((q_len, k_len), bool))
    out = np.zeros((batch, q_len, width))
    for h in range(num_heads):
        g = h // (num_heads // kv_heads)  # the key/value head this query head shares
        qh = q[..., h * head_dim : (h + 1) * head_dim]
        kh = k[..., g * head_dim : (g + 1) * head_dim]
        vh = v[..., g * head_dim : (g + 1) * head_dim]
        logits = np.einsum("btd,bsd->bts", qh, kh) / np.sqrt(head_dim)
        logits = np.where(allowed[:, h], logits, -1e30)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        if keep is not None:
            weights = np.where(keep[:, h], weights / (1 - rate), 0.0)
        out[..., h * head_dim : (h + 1) * head_dim] = weights @ vh
    return np_dense(params["out"], out)


def setup(layer, key, *shapes):
    xs = [jax.random.normal(jax.random.fold_in(key, i), s) for i, s in enumerate(shapes)]
    spec = xs[0] if len(xs) == 1 else {"inputs": xs[0], "memory": xs[1]}
    params, state = layer.init(key, spec)
    # Random biases so the reference checks them too.
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(key, a.shape), params)
    return params, state, xs


@pytest.mark.parametrize("heads,kv_heads", [(4, None), (4, 2), (4, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_numpy(key, heads, kv_heads, causal):
    attn = nf.MultiHeadAttention(heads, num_kv_heads=kv_heads, causal=causal)
    params, state, (x,) = setup(attn, key, (2, 5, 8))
    y, _ = attn.apply(params, state, x)
    want = np_attention(params, x, x, heads, kv_heads or heads, causal=causal)
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_cross_attention_with_padding_mask(key):
    attn = nf.MultiHeadAttention(2, qkv_features=12, out_features=3)
    params, state, (q, kv) = setup(attn, key, (2, 4, 8), (2, 6, 5))
    mask = jnp.arange(6)[None, :] < jnp.array([6, 3])[:, None]  # (batch, memory_time)
    y, _ = attn.apply(params, state, {"inputs": q, "memory": kv, "memory_mask": mask})
    want = np_attention(params, q, kv, 2, 2, mask=np.asarray(mask)[:, None, None, :])
    assert y.shape == (2, 4, 3)
    np.testing.assert_allclose(y, want, atol=1e-5)
    # Padded keys have no influence: changing them changes nothing.
    kv2 = kv.at[1, 3:].set(100.0)
    y2, _ = attn.apply(params, state, {"inputs": q, "memory": kv2, "memory_mask": mask})
    np.testing.assert_allclose(y2, y, atol=1e-5)
    # memory_lengths is the same padding.
    lengths = {"inputs": q, "memory": kv, "memory_lengths": jnp.array([6, 3])}
    np.testing.assert_allclose(attn.apply(params, state, lengths)[0], y, atol=1e-6)


def test_four_dimensional_mask_and_causal(key):
    attn = nf.MultiHeadAttention(2, causal=True)
    params, state, (x,) = setup(attn, key, (2, 5, 8))
    mask = jax.random.bernoulli(key, 0.7, (2, 1, 5, 5)).at[:, :, :, 0].set(True)
    y, _ = attn.apply(params, state, {"inputs": x, "attention_mask": mask})
    np.testing.assert_allclose(
        y, np_attention(params, x, x, 2, 2, np.asarray(mask), True), atol=1e-5
    )


def test_self_attention_padding_by_mask_or_lengths(key):
    attn = nf.MultiHeadAttention(2, causal=True)
    params, state, (x,) = setup(attn, key, (2, 5, 8))
    mask = jnp.arange(5)[None, :] < jnp.array([5, 3])[:, None]
    y, _ = attn.apply(params, state, {"inputs": x, "mask": mask})
    want = np_attention(params, x, x, 2, 2, np.asarray(mask)[:, None, None, :], True)
    np.testing.assert_allclose(y, want, atol=1e-5)
    y2, _ = attn.apply(params, state, {"inputs": x, "lengths": jnp.array([5, 3])})
    np.testing.assert_allclose(y2, y, atol=1e-6)
    # The padded steps of sequence 1 change none of its real rows.
    y3, _ = attn.apply(params, state, {"inputs": x.at[1, 3:].set(9.0), "mask": mask})
    np.testing.assert_allclose(y3[1, :3], y[1, :3], atol=1e-5)
    with pytest.raises(nf.LayerError, match=r"'lengths' must lie in \[1, 5\].*\[0, 6\]"):
        attn.apply(params, state, {"inputs": x, "lengths": jnp.array([0, 6])})
    with pytest.raises(nf.LayerError, match="either 'mask' or 'lengths'"):
        attn.apply(params, state, {"inputs": x, "lengths": jnp.array([5, 3]), "mask": mask})


def test_dropout_on_weights(key):
    attn = nf.MultiHeadAttention(2, dropout=0.4, causal=True)
    params, state, (x,) = setup(attn, key, (2, 5, 8))
    dropout_key = jax.random.key(5)
    y, _ = attn.apply(params, state, x, key=dropout_key, train=True)
    # The layer draws its keep mask from the key it is given, over (batch, heads, q, k).
    keep = np.asarray(jax.random.bernoulli(dropout_key, 0.6, (2, 2, 5, 5)))
    want = np_attention(params, x, x, 2, 2, causal=True, keep=keep, rate=0.4)
    np.testing.assert_allclose(y, want, atol=1e-5)
    y_eval, _ = attn.apply(params, state, x)
    np.testing.assert_allclose(y_eval, np_attention(params, x, x, 2, 2, causal=True), atol=1e-5)
    with pytest.raises(nf.LayerError, match="needs a random key"):
        attn.apply(params, state, x, train=True)


@pytest.mark.parametrize("rotary", [None, nf.RotaryPositions()])
def test_kv_cache_decoding_equals_full_pass(key, rotary):
    attn = nf.MultiHeadAttention(4, num_kv_heads=2, causal=True, rotary=rotary)
    params, state, (x,) = setup(attn, key, (2, 7, 8))
    full, _ = attn.apply(params, state, x)
    cache = attn.init_cache(params, 2, 10)
    step = jax.jit(attn.apply)
    y, cache = step(params, cache, x[:, :3])  # prefill a prompt of 3
    outputs = [y]
    for t in range(3, 7):
        y, cache = step(params, cache, x[:, t : t + 1])
        outputs.append(y)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5)
    assert int(cache["index"]) == 7


def test_conformance(key):
    attn = nf.MultiHeadAttention(4, num_kv_heads=2, causal=True, rotary=nf.RotaryPositions())
    check_layer(attn, jax.random.normal(key, (2, 4, 8)))


def test_conformance_with_mask(key):
    x = jax.random.normal(key, (2, 4, 8))
    mask = jnp.array([[True, True, True, False], [True, True, False, False]])
    check_layer(nf.MultiHeadAttention(2), {"inputs": x, "mask": mask}, bfloat16=False)


def test_full_kv_cache(key):
    attn = nf.MultiHeadAttention(2, causal=True)
    params, _ = attn.init(key, jnp.zeros((1, 4, 8)))
    cache = attn.init_cache(params, 1, 4)
    _, cache = attn.apply(params, cache, jnp.ones((1, 3, 8)))
    with pytest.raises(nf.LayerError, match="KV cache is full: it holds 4 positions, 3 are used"):
        attn.apply(params, cache, jnp.ones((1, 2, 8)))
    # Under jit the index is traced: the overflowing step gives NaN rather than a wrong answer.
    y, _ = jax.jit(attn.apply)(params, cache, jnp.ones((1, 2, 8)))
    assert np.isnan(np.asarray(y)).all()


def test_mask_of_wrong_shape(key):
    attn = nf.MultiHeadAttention(2)
    x = jnp.zeros((2, 5, 8))
    params, state = attn.init(key, x)
    for bad in (jnp.ones((2, 4), bool), jnp.ones((2, 3, 5, 5), bool), jnp.ones((5, 5), bool)):
        with pytest.raises(nf.LayerError, match=r"not bools broadcastable.*\(2, 2, 5, 5\)"):
            attn.apply(params, state, {"inputs": x, "attention_mask": bad})
    with pytest.raises(nf.LayerError, match="not bools broadcastable"):
        attn.init(key, {"inputs": x, "attention_mask": jnp.ones((2, 1, 1, 4), bool)})
    with pytest.raises(nf.LayerError, match=r"'mask' of bools shaped \(2, 5\)"):
        attn.apply(params, state, {"inputs": x, "mask": jnp.ones((2, 5))})
    with pytest.raises(nf.LayerError, match=r"'mask' of bools shaped \(2, 5\)"):
        attn.apply(params, state, {"inputs": x, "mask": jnp.ones((2, 4), bool)})


def test_heads_must_divide_width(key):
    with pytest.raises(nf.LayerError, match="num_heads=3 does not divide the attention width 8"):
        nf.MultiHeadAttention(3).init(key, jnp.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match="num_heads=3 does not divide qkv_features=8"):
        nf.MultiHeadAttention(3, qkv_features=8)
    with pytest.raises(ValueError, match="num_kv_heads=3 must divide num_heads=4"):
        nf.MultiHeadAttention(4, num_kv_heads=3)


def test_params_of_another_kv_head_count_name_the_projection(key):
    x = jnp.zeros((1, 3, 8))
    params, state = nf.MultiHeadAttention(4, num_kv_heads=2).init(key, x)
    model = nf.Sequential({"attn": nf.MultiHeadAttention(4, num_kv_heads=1)})
    with pytest.raises(nf.LayerError, match=r"Dense at 'attn/key'.*kernel \(in, 2\).*\(8, 4\)"):
        model.apply({"attn": params}, {"attn": state}, x)


def test_bad_settings_and_inputs(key):
    with pytest.raises(ValueError, match="positive int"):
        nf.MultiHeadAttention(0)
    with pytest.raises(ValueError, match="dropout must be in"):
        nf.MultiHeadAttention(2, dropout=1.0)
    with pytest.raises(TypeError, match="RotaryPositions"):
        nf.MultiHeadAttention(2, rotary=nf.SinusoidalPositions())
    attn = nf.MultiHeadAttention(2)
    with pytest.raises(nf.LayerError, match="'inputs' and optional extras"):
        attn.init(key, {"query": jnp.zeros((1, 2, 4))})
    with pytest.raises(nf.LayerError, match=r"got a tuple of 2\. Fix: \{'inputs': q, 'memory'"):
        attn.init(key, (jnp.zeros((1, 2, 4)), jnp.zeros((1, 3, 4))))
    with pytest.raises(nf.LayerError, match=r"inputs of shape \(batch, time, features\)"):
        attn.init(key, jnp.zeros((2, 4)))
    with pytest.raises(nf.LayerError, match=r"no layer here reads the extra inputs \['key'\]"):
        attn.init(key, {"inputs": jnp.zeros((1, 2, 4)), "key": jnp.zeros((1, 3, 4))})
    with pytest.raises(nf.LayerError, match="memory_mask/memory_lengths given without"):
        attn.init(key, {"inputs": jnp.zeros((1, 2, 4)), "memory_lengths": jnp.array([2])})
    cross = {"inputs": jnp.zeros((1, 2, 4)), "memory": jnp.zeros((1, 3, 4))}
    params, _ = attn.init(key, cross)
    cache = attn.init_cache(params, 1, 8)
    with pytest.raises(nf.LayerError, match="needs self-attention"):
        attn.apply(params, cache, cross)


def test_cross_attention_batch_mismatch_is_a_layer_error(key):
    attn = nf.MultiHeadAttention(2)
    bad = {"inputs": jnp.zeros((2, 4, 8)), "memory": jnp.zeros((3, 6, 8))}
    with pytest.raises(nf.LayerError, match="inputs have batch 2 but memory has batch 3"):
        attn.init(key, bad)
    params, state = attn.init(key, {"inputs": jnp.zeros((2, 4, 8)), "memory": jnp.zeros((2, 6, 8))})
    with pytest.raises(nf.LayerError, match="MultiHeadAttention at '<root>'.*batch 3"):
        attn.apply(params, state, bad)


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_fast_causal_path_agrees_with_general_path(key, kv_heads):
    attn = nf.MultiHeadAttention(4, num_kv_heads=kv_heads, causal=True)
    params, state, (x,) = setup(attn, key, (2, 6, 8))
    # An all-True mask sends the same computation down the general (masked) path.
    everything = jnp.ones((2, 6), bool)

    def loss(p, a, masked):
        inputs = {"inputs": a, "mask": everything} if masked else a
        y, _ = attn.apply(p, state, inputs)
        return jnp.sum(jnp.sin(y))

    jaxpr = str(jax.make_jaxpr(lambda p, a: loss(p, a, False))(params, x))
    assert "custom_vjp_call" in jaxpr  # the fast path is the one taken without a mask
    fast, general = (
        jax.jit(jax.value_and_grad(loss, (0, 1)), static_argnums=2)(params, x, m)
        for m in (False, True)
    )
    np.testing.assert_allclose(fast[0], general[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(general[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    y, _ = attn.apply(params, state, x)
    np.testing.assert_allclose(
        y, np_attention(params, x, x, 4, kv_heads or 4, causal=True), atol=1e-5
    )
