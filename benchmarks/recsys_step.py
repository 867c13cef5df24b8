"""Recommendation steps side by side: nnfun vs hand-written JAX (and PyTorch eager if installed).

Rows: a matrix-factorization training step (Adam, batch 512, MovieLens-sized
tables), and an embedding bag over a 1M x 64 table (batch 2048, bags of up to
20 ids, mean): forward + backward to the table, in lookups per second. Ratios
are nnfun's time over the hand-written JAX time (1.00 = same speed).

    python benchmarks/recsys_step.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnfun as nf
from nnfun.models.recsys import MatrixFactorization

BATCH, BAG, ROWS, WIDTH = 2048, 20, 1_000_000, 64


def timed(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def mf_steps(batch):
    model = MatrixFactorization(943, 1682, 128, 3.5)
    params, _ = model.init(jax.random.key(0), batch)
    optimizer = optax.adam(1e-3)

    def nnfun_loss(p, b):
        return jnp.mean(jnp.square(model.apply(p, {}, b)[0] - b["rating"]))

    def naive_loss(p, b):
        u, i = b["user"], b["item"]
        dot = jnp.sum(p["user"]["embedding"][u] * p["item"]["embedding"][i], axis=-1)
        bias = p["user_bias"]["embedding"][u, 0] + p["item_bias"]["embedding"][i, 0]
        return jnp.mean(jnp.square(p["bias"] + bias + dot - b["rating"]))

    def step_of(loss):
        @jax.jit
        def step(p, s, b):
            g = jax.grad(loss)(p, b)
            updates, s = optimizer.update(g, s, p)
            return optax.apply_updates(p, updates), s

        return step

    state = optimizer.init(params)
    return {
        name: (step_of(f), params, state)
        for name, f in (("nnfun", nnfun_loss), ("jax", naive_loss))
    }


def bag_steps(ids, lengths):
    layer = nf.EmbeddingBag(ROWS, WIDTH, combiner="mean")
    x = {"inputs": ids, "lengths": lengths}
    params, _ = layer.init(jax.random.key(0), x)

    def nnfun_loss(p):
        return jnp.sum(layer.apply(p, {}, x)[0])

    def naive_loss(p):
        mask = (jnp.arange(BAG)[None, :] < lengths[:, None]).astype(jnp.float32)
        rows = p["embedding"][jnp.where(mask > 0, ids, 0)]
        total = jnp.sum(rows * mask[:, :, None], axis=1)
        return jnp.sum(total / jnp.maximum(mask.sum(1), 1.0)[:, None])

    return {
        n: jax.jit(jax.grad(f)) for n, f in (("nnfun", nnfun_loss), ("jax", naive_loss))
    }, params


def torch_bag(ids, lengths, repeats):
    try:
        import torch
    except ImportError:
        return None
    bag = torch.nn.EmbeddingBag(ROWS, WIDTH, mode="mean")
    flat = torch.from_numpy(np.concatenate([r[:n] for r, n in zip(ids, lengths)]).astype(np.int64))
    offsets = torch.from_numpy(np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64))

    def step():
        bag.zero_grad()
        bag(flat, offsets).sum().backward()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, jax {jax.__version__}, {jax.default_backend()}")
    batch = {
        "user": jnp.asarray(rng.integers(0, 943, 512), jnp.int32),
        "item": jnp.asarray(rng.integers(0, 1682, 512), jnp.int32),
        "rating": jnp.asarray(rng.integers(1, 6, 512), jnp.float32),
    }
    times = {
        n: timed(s, p, st, batch, repeats=args.repeats) for n, (s, p, st) in mf_steps(batch).items()
    }
    ratio = times["nnfun"] / times["jax"]
    print(
        f"MF step (batch 512, 128 features): nnfun {times['nnfun'] * 1e6:.0f} us, "
        f"hand-written JAX {times['jax'] * 1e6:.0f} us, ratio {ratio:.2f}"
    )
    ids_np = rng.integers(0, ROWS, (BATCH, BAG)).astype(np.int32)
    lengths_np = rng.integers(1, BAG + 1, BATCH).astype(np.int32)
    steps, params = bag_steps(jnp.asarray(ids_np), jnp.asarray(lengths_np))
    lookups = int(lengths_np.sum())
    times = {n: timed(f, params, repeats=args.repeats) for n, f in steps.items()}
    ratio = times["nnfun"] / times["jax"]
    line = (
        f"EmbeddingBag 1M x 64, mean, batch {BATCH}, forward + backward: nnfun "
        f"{times['nnfun'] * 1e3:.1f} ms ({lookups / times['nnfun'] / 1e6:.1f} M lookups/s), "
        f"hand-written JAX {times['jax'] * 1e3:.1f} ms, ratio {ratio:.2f}"
    )
    torch_time = torch_bag(ids_np, lengths_np, args.repeats)
    if torch_time is not None:
        line += f", PyTorch eager nn.EmbeddingBag {torch_time * 1e3:.1f} ms"
    print(line)


if __name__ == "__main__":
    main()
