# Run: .venv/bin/python benchmarks/remat_memory.py [--quick] [--gpt-only]
"""Peak memory and time of a deep model's gradient step, with and without rematerialisation.

The model is ``depth`` pre-norm residual MLP blocks (LayerNorm, Dense 4w, GELU,
Dense w), batch 256, width 128: each block keeps about nine ``(batch, w)``
arrays for its backward pass, but needs only its input to recompute them.
Contenders:

- ``raw JAX``: a hand-written block in ``jnp``, with and without
  ``jax.checkpoint``, under ``lax.scan`` over stacked params (the reference)
  and unrolled in a Python loop.
- ``nnfun Sequential``: the blocks unrolled, plain, with ``nf.Remat`` on each
  block, and with ``nf.Remat`` around the whole model.
- ``nnfun Stack``: ``nf.Stack(depth, block)`` plain, ``remat=True``, and
  ``nf.Stack(depth, nf.Remat(block, "dots_saveable"))``.

Memory is the temp (scratch) size XLA reports for the compiled gradient,
``jax.jit(grad).lower(...).compile().memory_analysis().temp_size_in_bytes``:
params and gradients are arguments and outputs and are the same for all. Times
are medians over interleaved rounds (every contender once per round).

A second table gives the GPT training step (``nf.train_step``, Adam, the
TrainState donated) from XLA's compiled memory analysis: scratch (temp) and
peak (arguments + outputs - donated aliases + scratch) bytes, for the GPT with
its Stack unrolled (the default up to 12 blocks), as a loop, with
``remat=True`` (``Stack(remat=True)``), wrapped whole in ``nf.Remat``, and the
naive hand-written JAX step of ``benchmarks/gpt_step.py``. On a GPU or TPU it
takes the GPT of issue 21's utilisation target (d_model 1024, 12 blocks,
sequence 1024, batch 8).

Finding (XLA:CPU, jax 0.10.2): rematerialisation cuts memory only inside
``lax.scan``. In unrolled code XLA:CPU drops the optimisation barriers and
schedules the recomputation early, so the raw and the nnfun unrolled rows are
equal with and without it; use ``Stack(remat=True)`` (or a ``Stack`` of
``Remat`` blocks) for deep models. GPU and TPU schedulers behave differently:
run this there before drawing conclusions for them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import nnfun as nf
from nnfun.models.gpt import GPT

BATCH, WIDTH = 256, 128


def block():
    mlp = nf.Sequential([nf.LayerNorm(), nf.Dense(4 * WIDTH), jax.nn.gelu, nf.Dense(WIDTH)])
    return nf.Residual(mlp)


def raw_params(key, depth):
    k1, k2 = jax.random.split(key)
    return {
        "scale": jnp.ones((depth, WIDTH)),
        "shift": jnp.zeros((depth, WIDTH)),
        "w1": jax.random.normal(k1, (depth, WIDTH, 4 * WIDTH)) / np.sqrt(WIDTH),
        "b1": jnp.zeros((depth, 4 * WIDTH)),
        "w2": jax.random.normal(k2, (depth, 4 * WIDTH, WIDTH)) / np.sqrt(4 * WIDTH),
        "b2": jnp.zeros((depth, WIDTH)),
    }


def raw_block(h, p):
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    z = (h - mean) * jax.lax.rsqrt(var + 1e-6) * p["scale"][None, :] + p["shift"][None, :]
    z = jax.nn.gelu(z @ p["w1"] + p["b1"][None, :]) @ p["w2"] + p["b2"][None, :]
    return h + z, None


def raw_loss(remat):
    body = jax.checkpoint(raw_block) if remat else raw_block
    return lambda params, x: jnp.sum(jax.lax.scan(body, x, params)[0])


def raw_unrolled_loss(remat, depth):
    body = jax.checkpoint(raw_block) if remat else raw_block

    def loss(params, x):
        for i in range(depth):
            x, _ = body(x, jax.tree.map(lambda a, i=i: a[i], params))
        return jnp.sum(x)

    return loss


def nnfun_loss(model, state):
    return lambda params, x: jnp.sum(model.apply(params, state, x)[0])


def contenders(depth):
    key, x = jax.random.key(0), jnp.ones((BATCH, WIDTH))
    blocks = [block() for _ in range(depth)]
    models = {
        "nnfun Sequential": nf.Sequential(blocks),
        "nnfun Sequential, Remat per block": nf.Sequential([nf.Remat(b) for b in blocks]),
        "nnfun Remat(Sequential)": nf.Remat(nf.Sequential(blocks)),
        "nnfun Stack": nf.Stack(depth, block()),
        "nnfun Stack(remat=True)": nf.Stack(depth, block(), remat=True),
        'nnfun Stack of Remat(block, "dots_saveable")': nf.Stack(
            depth, nf.Remat(block(), "dots_saveable")
        ),
    }
    rows = {
        "raw JAX scan": (raw_loss(False), raw_params(key, depth)),
        "raw JAX scan + jax.checkpoint": (raw_loss(True), raw_params(key, depth)),
        "raw JAX unrolled": (raw_unrolled_loss(False, depth), raw_params(key, depth)),
        "raw JAX unrolled + jax.checkpoint per block": (
            raw_unrolled_loss(True, depth),
            raw_params(key, depth),
        ),
    }
    for name, model in models.items():
        params, state = model.init(key, x)
        rows[name] = (nnfun_loss(model, state), params)
    return rows, x


def measure(depth, rounds, inner):
    rows, x = contenders(depth)
    compiled, memory = {}, {}
    for name, (loss, params) in rows.items():
        exe = jax.jit(jax.grad(loss)).lower(params, x).compile()
        compiled[name], memory[name] = exe, exe.memory_analysis().temp_size_in_bytes
        jax.block_until_ready(exe(params, x))
    times = {name: [] for name in rows}
    for _ in range(rounds):
        for name, (_, params) in rows.items():
            start = time.perf_counter()
            for _ in range(inner):
                out = compiled[name](params, x)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / inner)
    return memory, {name: statistics.median(t) for name, t in times.items()}


def table(depth, memory, times):
    base_mem, base_time = memory["raw JAX scan"], times["raw JAX scan"]
    lines = [
        f"\n### depth {depth}, batch {BATCH}, width {WIDTH} (gradient of a sum)\n",
        "| contender | temp memory (MiB) | vs raw JAX scan | time/step (ms) | vs raw JAX scan |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in memory:
        lines.append(
            f"| {name} | {memory[name] / 2**20:.1f} | {memory[name] / base_mem:.2f}x "
            f"| {times[name] * 1e3:.2f} | {times[name] / base_time:.2f}x |"
        )
    return "\n".join(lines)


GPT_SIZES = {
    "quick": dict(d_model=32, heads=2, layers=2, seq=32, batch=4, vocab=16),
    "cpu": dict(d_model=128, heads=4, layers=8, seq=128, batch=16, vocab=96),
    "accelerator": dict(d_model=1024, heads=16, layers=12, seq=1024, batch=8, vocab=32768),
}


def gpt_models(c):
    def gpt(**settings):
        return GPT(c["vocab"], c["d_model"], c["heads"], c["layers"], c["seq"], **settings)

    return {
        "nnfun GPT (Stack unrolled)": gpt(unroll=True),
        "nnfun GPT(unroll=1) (Stack as a loop)": gpt(unroll=1),
        "nnfun GPT(remat=True) (Stack(remat=True), a loop)": gpt(remat=True),
        "nf.Remat(GPT) (the whole model)": nf.Remat(gpt(unroll=True)),
    }


def gpt_memory(c):
    """{contender: CompiledMemoryStats} of one GPT training step."""
    import optax
    from gpt_step import raw_init, raw_step_fn

    opt = optax.adam(1e-3)
    ids = jnp.zeros((c["batch"], c["seq"]), jnp.int32)
    batch = {"x": ids, "y": ids}
    stats = {}
    for name, model in gpt_models(c).items():
        ts = nf.TrainState.create(model, opt, jax.random.key(0), ids)
        step = jax.jit(nf.train_step(model, nf.softmax_cross_entropy, opt), donate_argnums=0)
        stats[name] = step.lower(ts, batch).compile().memory_analysis()
    params = raw_init(jax.random.key(0), c)
    raw = raw_step_fn(c, opt).lower(params, opt.init(params), batch).compile()
    stats["raw JAX (naive, unrolled, no remat)"] = raw.memory_analysis()
    return stats


def gpt_table(c, stats):
    def peak(m):
        return (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + (m.temp_size_in_bytes)
        )

    base = stats["nnfun GPT (Stack unrolled)"]
    lines = [
        f"\n### GPT training step on {jax.devices()[0].device_kind}: {c}\n",
        "| contender | scratch (MiB) | peak (MiB) | peak vs unrolled |",
        "|---|---:|---:|---:|",
    ]
    for name, m in stats.items():
        lines.append(
            f"| {name} | {m.temp_size_in_bytes / 2**20:.1f} | {peak(m) / 2**20:.1f} "
            f"| {peak(m) / peak(base):.2f}x |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small depth, few repeats")
    parser.add_argument(
        "--gpt-only", action="store_true", help="only the GPT table, at the backend's size"
    )
    args = parser.parse_args()
    depths, rounds, inner = ((4,), 3, 2) if args.quick else ((16, 48), 7, 5)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s)")
    for depth in () if args.gpt_only else depths:
        print(table(depth, *measure(depth, rounds, inner)))
    accelerator = jax.default_backend() != "cpu"
    size = "accelerator" if accelerator else "cpu"
    c = GPT_SIZES["quick" if args.quick and not args.gpt_only else size]
    print(gpt_table(c, gpt_memory(c)))


if __name__ == "__main__":
    main()
