# Run: .venv/bin/python benchmarks/mixed_precision.py [--quick]
"""bfloat16 compute vs float32 on the MNIST-1D MLP recipe: test accuracy and step time.

The model and hyperparameters are ``nnfun.models.mnist1d.mlp()`` (40-100-100-10
ReLU MLP, residual around the second layer, dropout 0.2, Adam with cosine decay,
6000 steps of 100). Contenders:

- ``raw JAX float32`` / ``raw JAX bfloat16``: the same network hand-written in
  ``jnp``; the bfloat16 one casts params and inputs to bfloat16 itself.
- ``nnfun float32``: the recipe's model.
- ``nnfun bfloat16``: ``nf.MixedPrecision(model, nf.Policy("float32", "bfloat16",
  "float32"))``: params and Adam state stay float32.

Each run fuses 500 steps per compiled call (``lax.scan``), the data order and
dropout keys depend only on the seed, and accuracy is on the 1000 test signals
(standard error about 1.5 points, so compare means over seeds). Time per step
is the median over each run's chunks after the first (which compiles). bfloat16
is emulated on most CPUs, so expect it to be slower here, not faster.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnfun as nf
from nnfun.data import mnist1d
from nnfun.models.mnist1d import mlp

CHUNK = 500
BF16 = nf.Policy("float32", "bfloat16", "float32")


def raw_model(dtype):
    def init(key, x):
        keys = jax.random.split(key, 3)
        sizes = ((40, 100), (100, 100), (100, 10))
        params = {}
        for i, (k, (n_in, n_out)) in enumerate(zip(keys, sizes)):
            params[f"w{i}"] = jax.random.normal(k, (n_in, n_out)) / np.sqrt(n_in)
            params[f"b{i}"] = jnp.zeros((n_out,))
        return params, {}

    def apply(params, state, x, *, key=None, train=False):
        p = jax.tree.map(lambda a: a.astype(dtype), params)
        h = jax.nn.relu(x.astype(dtype) @ p["w0"] + p["b0"][None, :])
        h = h + jax.nn.relu(h @ p["w1"] + p["b1"][None, :])
        if train:
            keep = jax.random.bernoulli(key, 0.8, h.shape)
            h = jnp.where(keep, h / 0.8, jnp.zeros_like(h))
        return (h @ p["w2"] + p["b2"][None, :]).astype(jnp.float32), state

    return init, apply


def nnfun_model(model):
    return model.init, model.apply


def run(init, apply, recipe, data, seed, steps):
    train, test = data
    xs, ys = jnp.asarray(train["x"]), jnp.asarray(train["y"])
    optimizer = recipe.optimizer(steps=steps)
    params, state = init(jax.random.key(seed), jnp.zeros((1, 40)))

    def one(carry, inputs):
        params, opt_state = carry
        rows, key = inputs

        def loss(p):
            logits, _ = apply(p, state, xs[rows], key=key, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, ys[rows]).mean()

        updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    chunk = jax.jit(lambda carry, rows, keys: jax.lax.scan(one, carry, (rows, keys))[0])
    rows = np.random.default_rng(seed).integers(0, len(xs), size=(steps, recipe.batch_size))
    keys = jax.random.split(jax.random.key(seed + 1000), steps)
    carry, times = (params, optimizer.init(params)), []
    for start in range(0, steps, CHUNK):
        begin = time.perf_counter()
        carry = chunk(carry, rows[start : start + CHUNK], keys[start : start + CHUNK])
        jax.block_until_ready(carry)
        times.append((time.perf_counter() - begin) / CHUNK)
    logits, _ = apply(carry[0], state, jnp.asarray(test["x"]))
    accuracy = float(np.mean(np.argmax(logits, -1) == test["y"]))
    return accuracy, statistics.median(times[1:] or times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 1000 steps")
    args = parser.parse_args()
    seeds, steps = ((0,), 1000) if args.quick else ((0, 1, 2), 6000)
    recipe, data = mlp(), mnist1d(seed=0)
    contenders = {
        "raw JAX float32": raw_model(jnp.float32),
        "raw JAX bfloat16": raw_model(jnp.bfloat16),
        "nnfun float32": nnfun_model(recipe.model),
        "nnfun bfloat16 (MixedPrecision)": nnfun_model(nf.MixedPrecision(recipe.model, BF16)),
    }
    results = {name: [] for name in contenders}
    for seed in seeds:  # interleaved: every contender once per seed
        for name, (init, apply) in contenders.items():
            results[name].append(run(init, apply, recipe, data, seed, steps))
    base = statistics.median(t for _, t in results["raw JAX float32"])
    print(f"MNIST-1D MLP, {steps} steps, seeds {list(seeds)}, backend {jax.default_backend()}\n")
    print("| contender | test accuracy per seed | mean | ms/step | vs raw JAX float32 |")
    print("|---|---|---:|---:|---:|")
    for name, rows in results.items():
        accs = [a for a, _ in rows]
        step = statistics.median(t for _, t in rows)
        per_seed = ", ".join(f"{a:.3f}" for a in accs)
        print(
            f"| {name} | {per_seed} | {np.mean(accs):.3f} | {step * 1e3:.3f} | {step / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
