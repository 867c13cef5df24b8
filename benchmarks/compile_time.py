# Run: .venv/bin/python benchmarks/compile_time.py [--quick]  (train-step compile time vs depth)
"""Compile time of the GPT training step with 4, 16 and 48 blocks.

Contenders: nnfun's GPT with its blocks in a ``Stack`` (one ``lax.scan``),
the same GPT unrolled in a ``Sequential``, and the naive hand-written raw-JAX
GPT of ``gpt_step.py`` (a Python loop over blocks, so unrolled too). Each
measurement traces, lowers and compiles a fresh ``jax.jit`` of the whole train
step (forward, backward, Adam). Depths and contenders are interleaved over
rounds; the table gives median seconds, the ratio to raw JAX at the same depth,
and the ratio to the same contender at the smallest depth (target for Stack:
48 blocks within 1.5x of 4 blocks). Config: d_model 128, 4 heads, seq 128,
batch 16, vocab 96.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from gpt_step import CONFIGS, nnfun_model, raw_init, raw_step_fn

from nnfun.train import TrainState, softmax_cross_entropy, train_step


def compile_seconds(fn, *args) -> float:
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start


def nnfun_seconds(c, batch, stacked: bool) -> float:
    # unroll=1: the Stack as one lax.scan loop (GPT's default unrolls shallow models).
    model, opt = nnfun_model(c, stacked, unroll=1), optax.adam(1e-3)
    spec = jax.ShapeDtypeStruct(batch["x"].shape, jnp.int32)
    ts = jax.eval_shape(lambda: TrainState.create(model, opt, jax.random.key(0), spec))
    return compile_seconds(train_step(model, softmax_cross_entropy, opt), ts, batch)


def raw_seconds(c, batch) -> float:
    opt = optax.adam(1e-3)
    params = jax.eval_shape(lambda: raw_init(jax.random.key(0), c))
    opt_state = jax.eval_shape(opt.init, params)
    step = raw_step_fn(c, opt)
    start = time.perf_counter()
    step.lower(params, opt_state, batch).compile()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths 1 and 2, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--depths", default="4,16,48", help="comma-separated block counts")
    parser.add_argument("--only", help="comma-separated subset of: raw,stack,sequential")
    args = parser.parse_args()
    depths = tuple(int(n) for n in args.depths.split(","))
    depths, rounds = ((1, 2), 1) if args.quick else (depths, args.rounds)
    base = CONFIGS["small"]
    batch = {k: jax.ShapeDtypeStruct((base["batch"], base["seq"]), jnp.int32) for k in "xy"}
    contenders = {
        "raw": ("raw JAX (unrolled loop)", lambda c: raw_seconds(c, batch)),
        "stack": ("nnfun Stack", lambda c: nnfun_seconds(c, batch, stacked=True)),
        "sequential": ("nnfun Sequential (unrolled)", lambda c: nnfun_seconds(c, batch, False)),
    }
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only.split(",")}
    times = {(name, n): [] for name in contenders for n in depths}
    for _ in range(rounds):
        for n in depths:
            for name, (_, measure) in contenders.items():
                times[name, n].append(measure(dict(base, layers=n)))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"jax {jax.__version__} on {jax.default_backend()}, median of {rounds} round(s)\n")
    print(f"| blocks | contender | compile s | vs raw JAX | vs own at {depths[0]} blocks |")
    print("|---:|---|---:|---:|---:|")
    for n in depths:
        for name, (label, _) in contenders.items():
            s = median[name, n]
            raw = f"{s / median['raw', n]:.2f}x" if "raw" in contenders else "-"
            print(f"| {n} | {label} | {s:.2f} | {raw} | {s / median[name, depths[0]]:.2f}x |")
    if "stack" in contenders:
        growth = median["stack", depths[-1]] / median["stack", depths[0]]
        verdict = "meets" if growth <= 1.5 else "misses"
        print(
            f"\nStack at {depths[-1]} blocks: {growth:.2f}x its time at {depths[0]} "
            f"({verdict} the 1.5x target)."
        )


if __name__ == "__main__":
    main()
