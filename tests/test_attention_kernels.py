"""The attention kernels (auto, cpu, xla, cudnn): each forced on CPU against a NumPy
reference of the outputs and gradients; the layers and the GPT equal across kernels;
what "auto" picks per backend; the errors for a kernel the backend or inputs lack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.layers._attention_kernels import attend, resolve
from nnfun.models.gpt import GPT


def np_attention_and_grads(q, k, v, allowed, g):
    """Output and (dq, dk, dv) of sum(out * g), from the softmax formulas, in float64."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, g))
    groups = q.shape[2] // k.shape[2]
    out, dq = np.zeros_like(q), np.zeros_like(q)
    dk, dv = np.zeros_like(k), np.zeros_like(v)
    scale = 1 / np.sqrt(q.shape[-1])
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            kh, vh, qh, gh = k[b, :, h // groups], v[b, :, h // groups], q[b, :, h], g[b, :, h]
            s = np.where(allowed[b, h], scale * qh @ kh.T, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[b, :, h] = p @ vh
            dp = gh @ vh.T
            ds = p * (dp - (dp * p).sum(-1, keepdims=True))
            dq[b, :, h] = scale * ds @ kh
            dk[b, :, h // groups] += scale * ds.T @ qh
            dv[b, :, h // groups] += p.T @ gh
    return out, (dq, dk, dv)


# (query heads, kv heads, query length, key length, causal, padding of keys, attention_mask)
CASES = {
    "causal, padded": (4, 4, 6, 6, True, True, False),
    "grouped-query, causal (the blocked path on cpu)": (4, 2, 6, 6, True, False, False),
    "attention_mask": (2, 2, 5, 5, False, False, True),
    "cross, padded, multi-query": (4, 1, 3, 7, False, True, False),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kernel", ["cpu", "xla"])  # "auto" is "cpu" here
def test_kernel_matches_numpy(key, kernel, case):
    heads, kv_heads, t, s, causal, padded, extra = CASES[case]
    ks = jax.random.split(key, 5)
    q = jax.random.normal(ks[0], (2, t, heads, 8))
    k, v = (jax.random.normal(kk, (2, s, kv_heads, 8)) for kk in ks[1:3])
    g = jax.random.normal(ks[3], q.shape)
    allowed = np.ones((2, heads, t, s), bool)
    mask = None
    if padded:  # the second sequence's last two keys are padding
        mask = jnp.asarray(np.arange(s)[None] < np.array([[s], [s - 2]]))[:, None, None, :]
        allowed &= np.asarray(mask)
    if extra:
        mask = (
            jax.random.bernoulli(ks[4], 0.7, (2, 1, t, s)) | jnp.eye(t, s, dtype=bool)[None, None]
        )
        allowed &= np.asarray(mask)
    if causal:
        allowed &= np.tril(np.ones((t, s), bool))
    layer = nf.MultiHeadAttention(heads)

    def loss(q, k, v):
        out = attend(layer, kernel, q, k, v, mask, causal, 0.0, None)
        return jnp.sum(out * g), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    want_out, want_grads = np_attention_and_grads(q, k, v, allowed, g)
    np.testing.assert_allclose(out, want_out, atol=2e-5, rtol=1e-4)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, atol=5e-5, rtol=1e-4)


def test_auto_picks_by_backend():
    bf16, f32 = jnp.bfloat16, jnp.float32
    assert resolve("auto", "cpu", bf16, 64, 128, 128, False) == "cpu"
    assert resolve("auto", "tpu", bf16, 64, 128, 128, False) == "xla"
    assert resolve("auto", "gpu", bf16, 64, 128, 128, False) == "cudnn"
    assert resolve("auto", "gpu", jnp.float16, 128, 1, 64, False) == "cudnn"
    assert resolve("auto", "gpu", f32, 64, 128, 128, False) == "xla"  # cuDNN: half types only
    assert resolve("auto", "gpu", bf16, 12, 128, 128, False) == "xla"  # head size not 8k
    assert resolve("auto", "gpu", bf16, 256, 128, 128, False) == "xla"
    assert resolve("auto", "gpu", bf16, 64, 1, 64, True) == "xla"  # a mask needs even lengths
    assert resolve("xla", "gpu", bf16, 64, 128, 128, False) == "xla"
    assert resolve("cudnn", "cpu", f32, 64, 128, 128, False) == "cudnn"  # then attend raises


def gpt(kernel):
    return GPT(
        13,
        d_model=16,
        num_heads=4,
        num_kv_heads=2,
        num_layers=1,
        max_length=8,
        attention_kernel=kernel,
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpt_loss_and_grads_equal_across_kernels(key, dtype):
    """Plain causal attention: ops.causal_attention ("cpu") against XLA's (masks: above)."""
    ids = jax.random.randint(key, (2, 8), 0, 13)
    params, _ = gpt("cpu").init(key, ids)
    params = jax.tree.map(lambda a: a.astype(dtype), params)

    @jax.jit
    def losses_and_grads(params):
        def loss(params, kernel):
            logits, _ = gpt(kernel).apply(params, {}, ids)
            logp = jax.nn.log_softmax(logits.astype(jnp.float32))
            return -jnp.mean(jnp.take_along_axis(logp, ids[..., None], -1))

        return [jax.value_and_grad(loss)(params, k) for k in ("cpu", "xla")]

    (loss_cpu, grads_cpu), (loss_xla, grads_xla) = losses_and_grads(params)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(loss_xla, loss_cpu, rtol=tol)
    for a, b in zip(jax.tree.leaves(grads_xla), jax.tree.leaves(grads_cpu)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol)


def test_kv_cache_decoding_equals_the_full_pass_across_kernels(key):
    """Decoding with "xla" (prompt of 4, then one token at a time) equals the "cpu" full pass."""
    ids = jax.random.randint(key, (2, 7), 0, 13)
    params, _ = gpt("cpu").init(key, ids)

    @jax.jit
    def decode_and_full(params):
        model = gpt("xla")
        logits, cache = model.apply(params, model.init_cache(params, 2), ids[:, :4])
        steps = [logits]
        for t in range(4, 7):
            logits, cache = model.apply(params, cache, ids[:, t : t + 1])
            steps.append(logits)
        return jnp.concatenate(steps, 1), gpt("cpu").apply(params, {}, ids)[0]

    decoded, full = decode_and_full(params)
    np.testing.assert_allclose(decoded, full, atol=2e-5)


def test_cudnn_errors_name_what_is_missing(key):
    x = jax.random.normal(key, (1, 4, 16))
    layer = nf.MultiHeadAttention(2, causal=True, attention_kernel="cudnn")
    params, _ = layer.init(key, x)
    with pytest.raises(ValueError, match="MultiHeadAttention.*float16 or bfloat16, got float32"):
        layer.apply(params, {}, x)
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match="GPU only and JAX's backend is 'cpu'.*auto"):
        layer.apply(bf16, {}, x.astype(jnp.bfloat16))
    odd = nf.MultiHeadAttention(4, attention_kernel="cudnn")  # head size 16 / 4 = 4
    with pytest.raises(ValueError, match="multiple of 8 .* got 4"):
        odd.apply(bf16, {}, x.astype(jnp.bfloat16))
    dropout = nf.MultiHeadAttention(2, dropout=0.1, attention_kernel="cudnn")
    with pytest.raises(ValueError, match="no dropout"):
        dropout.apply(bf16, {}, x.astype(jnp.bfloat16), key=key, train=True)


@pytest.mark.parametrize(
    "build",
    [
        lambda: nf.MultiHeadAttention(2, attention_kernel="flash"),
        lambda: nf.TransformerBlock(2, attention_kernel="CUDNN"),
        lambda: gpt("nnfun"),
    ],
)
def test_unknown_kernel_is_refused(build):
    with pytest.raises(ValueError, match="attention_kernel must be one of .*'auto', 'cpu'"):
        build()
