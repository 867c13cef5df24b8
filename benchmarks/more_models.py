# Run: .venv/bin/python benchmarks/more_models.py [--quick]
"""Two more models against their naive hand-written JAX step: a 2-D CNN with BatchNorm, an encoder.

The issue behind ``gpt_step.py`` asks that no nnfun model be slower than its
naive JAX version. ``overhead.py`` (MLP), ``cnn_step.py`` (1-D CNN),
``rnn_step.py`` (GRU, LSTM) and ``gpt_step.py`` (causal transformer) cover the
recipes; this script covers the remaining layer families:

- **digits CNN**: the model of ``nnfun.examples.digits`` (two 3x3 convolutions
  with BatchNorm in training mode, ReLU, 2x2 max pooling, dropout 0.3, a linear
  head) on batch 64 of 8x8 images, against ``lax.conv_general_dilated``,
  hand-written batch statistics and running averages, ``lax.reduce_window`` and
  a Bernoulli dropout mask.
- **encoder**: two non-causal ``nf.TransformerBlock`` (d 128, 4 heads, GELU MLP
  4x), a final LayerNorm, mean pooling and a linear head, on batch 16 x 64
  steps, against the textbook block (einsum attention with a full softmax).

Adam everywhere; nnfun runs ``nf.train_step`` under ``jax.jit`` with the state
donated. Interleaved rounds, median ms per step and the ratio to raw JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps import jax_runner, measure, nnfun_runs, own_step, rounds_and_inner

import nnfun as nf
from nnfun.examples.digits import model as digits_model

OPT = optax.adam(1e-3)
CONV_DIMS = ("NHWC", "HWIO", "NHWC")
B_ENC, T_ENC, D_ENC, HEADS, BLOCKS = 16, 64, 128, 4, 2


def nnfun_runner(model, x, y):
    return nnfun_runs(model, OPT, x, y, donate=True)["nnfun train_step"]


def batch_norm(h, scale, bias, mean, var, momentum=0.9, eps=1e-5):
    batch_mean, batch_var = h.mean((0, 1, 2)), h.var((0, 1, 2))
    y = (h - batch_mean) / jnp.sqrt(batch_var + eps) * scale + bias
    new_mean = momentum * mean + (1 - momentum) * batch_mean
    return y, new_mean, momentum * var + (1 - momentum) * batch_var


def digits_raw(x, y):
    k = jax.random.split(jax.random.key(0), 3)
    params = {
        "c1": jax.random.normal(k[0], (3, 3, 1, 32)) / 3,
        "s1": jnp.ones(32),
        "b1": jnp.zeros(32),
        "c2": jax.random.normal(k[1], (3, 3, 32, 64)) / 17,
        "s2": jnp.ones(64),
        "b2": jnp.zeros(64),
        "w": jax.random.normal(k[2], (16 * 64, 10)) / 32,
        "bo": jnp.zeros(10),
    }
    stats = {"m1": jnp.zeros(32), "v1": jnp.ones(32), "m2": jnp.zeros(64), "v2": jnp.ones(64)}

    def forward(p, s, x, key):
        h = jax.lax.conv_general_dilated(x, p["c1"], (1, 1), "SAME", dimension_numbers=CONV_DIMS)
        h, m1, v1 = batch_norm(h, p["s1"], p["b1"], s["m1"], s["v1"])
        h = jax.lax.conv_general_dilated(
            jax.nn.relu(h), p["c2"], (1, 1), "SAME", dimension_numbers=CONV_DIMS
        )
        h, m2, v2 = batch_norm(h, p["s2"], p["b2"], s["m2"], s["v2"])
        window = (1, 2, 2, 1)
        h = jax.lax.reduce_window(jax.nn.relu(h), -jnp.inf, jax.lax.max, window, window, "VALID")
        h = h.reshape(h.shape[0], -1)
        h = jnp.where(jax.random.bernoulli(key, 0.7, h.shape), h / 0.7, 0.0)
        return h @ p["w"] + p["bo"], {"m1": m1, "v1": v1, "m2": m2, "v2": v2}

    @jax.jit
    def step(p, s, opt_state, key, x, y):
        key, sub = jax.random.split(key)

        def loss_fn(p):
            logits, new_s = forward(p, s, x, sub)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_s

        (loss, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, opt_state = OPT.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), s, opt_state, key, loss

    return jax_runner(step, (params, stats, OPT.init(params), jax.random.key(1)), x, y)


def layer_norm(h, scale, bias, eps=1e-5):
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + eps) * scale + bias


def raw_block(p, h):
    b, t, d = h.shape
    a = layer_norm(h, p["ln1_s"], p["ln1_b"])
    q, k, v = ((a @ p[n] + p[n + "_b"]).reshape(b, t, HEADS, d // HEADS) for n in "qkv")
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // HEADS)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v).reshape(b, t, d)
    h = h + out @ p["o"] + p["o_b"]
    a = layer_norm(h, p["ln2_s"], p["ln2_b"])
    return h + jax.nn.gelu(a @ p["fc"] + p["fc_b"]) @ p["proj"] + p["proj_b"]


def encoder_raw(x, y):
    keys = iter(jax.random.split(jax.random.key(0), 8 * BLOCKS + 1))
    d = D_ENC

    def normal(*shape):
        return 0.02 * jax.random.normal(next(keys), shape)

    def block():
        p = {name: jnp.ones(d) for name in ("ln1_s", "ln2_s")}
        p.update({name: jnp.zeros(d) for name in ("ln1_b", "ln2_b")})
        for name, shape in (("q", (d, d)), ("k", (d, d)), ("v", (d, d)), ("o", (d, d)),
                            ("fc", (d, 4 * d)), ("proj", (4 * d, d))):  # fmt: skip
            p[name], p[name + "_b"] = normal(*shape), jnp.zeros(shape[1])
        return p

    params = {"blocks": [block() for _ in range(BLOCKS)], "ln_s": jnp.ones(d),
              "ln_b": jnp.zeros(d), "w": normal(d, 10), "w_b": jnp.zeros(10)}  # fmt: skip

    def forward(p, x):
        h = x
        for block_params in p["blocks"]:
            h = raw_block(block_params, h)
        return layer_norm(h, p["ln_s"], p["ln_b"]).mean(1) @ p["w"] + p["w_b"]

    return jax_runner(own_step(forward, OPT), (params, OPT.init(params)), x, y)


def encoder_model() -> nf.Sequential:
    blocks = [nf.TransformerBlock(num_heads=HEADS, causal=False) for _ in range(BLOCKS)]
    return nf.Sequential(
        {
            "blocks": nf.Sequential(blocks),
            "norm": nf.LayerNorm(),
            "pool": nf.Lambda(lambda h: h.mean(1)),
            "out": nf.Dense(10),
        }
    )


def main():
    rounds, inner = rounds_and_inner(__doc__.splitlines()[0], 15, 20, quick=(2, 3))
    rng = np.random.default_rng(0)
    x_img = jnp.asarray(rng.normal(size=(64, 8, 8, 1)), jnp.float32)
    x_seq = jnp.asarray(rng.normal(size=(B_ENC, T_ENC, D_ENC)), jnp.float32)
    y_img, y_seq = (jnp.asarray(rng.integers(0, 10, n), jnp.int32) for n in (64, B_ENC))
    cases = {
        "digits CNN, batch 64 (BatchNorm, dropout)": (
            digits_raw(x_img, y_img),
            nnfun_runner(digits_model(), x_img, y_img),
        ),
        f"encoder, {BLOCKS} non-causal blocks, batch {B_ENC} x {T_ENC}, d {D_ENC}": (
            encoder_raw(x_seq, y_seq),
            nnfun_runner(encoder_model(), x_seq, y_seq),
        ),
    }
    print(f"\n{jax.default_backend()}, median of {rounds} rounds x {inner} steps\n")
    print("| model | raw JAX (naive), ms | nnfun train_step, ms | nnfun / raw JAX |")
    print("|---|---:|---:|---:|")
    for name, (raw, ours) in cases.items():
        medians = measure({"raw": raw, "nnfun": ours}, rounds, inner)
        raw_ms, ours_ms = 1e3 * medians["raw"], 1e3 * medians["nnfun"]
        print(f"| {name} | {raw_ms:.2f} | {ours_ms:.2f} | {ours_ms / raw_ms:.2f}x |")


if __name__ == "__main__":
    main()
