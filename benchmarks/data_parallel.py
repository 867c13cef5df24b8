# Run: .venv/bin/python benchmarks/data_parallel.py [--quick]
"""Data-parallel training throughput on 1, 2, 4 and 8 host CPU devices: nnfun vs raw JAX.

Each device count runs in its own subprocess, because
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` must be set before JAX
starts. In each, two contenders train the same MLP (the MNIST-1D paper's
40-100-100-10 with a residual, Adam) on a global batch split over the devices:

- ``raw JAX``: hand-written forward pass and optax step, ``jax.jit`` with
  ``NamedSharding`` in/out shardings written out by hand.
- ``nnfun``: ``nf.train_step`` on an ``nf.TrainState`` with
  ``parallel.make_mesh``, ``place_state``, ``shard_batch`` and
  ``data_parallel_step``.

Rounds run both contenders once each (interleaved), a round being ``inner``
steps, each waited for before the next is dispatched (see the note on XLA:CPU
collectives in docs/design.md); the table gives the median examples per second.

Read the numbers honestly: the "devices" are threads of one CPU process, and this
machine has 2 cores shared with other work. More devices cannot add compute
here; what the table shows is the overhead of splitting a step (per-device
dispatch, the gradient all-reduce) and that nnfun adds none over raw JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEVICE_COUNTS = (1, 2, 4, 8)
WIDTH, CLASSES, FEATURES = 100, 10, 40


def raw_init(key):
    import jax

    keys = jax.random.split(key, 3)
    sizes = ((FEATURES, WIDTH), (WIDTH, WIDTH), (WIDTH, CLASSES))
    return {
        f"w{i}": jax.random.normal(k, shape) / shape[0] ** 0.5
        for i, (k, shape) in enumerate(zip(keys, sizes))
    } | {f"b{i}": jax.numpy.zeros(shape[1]) for i, shape in enumerate(sizes)}


def raw_step(optimizer):
    import jax
    import optax

    def forward(p, x):
        h = jax.nn.relu(x @ p["w0"] + p["b0"][None, :])
        h = h + jax.nn.relu(h @ p["w1"] + p["b1"][None, :])
        return h @ p["w2"] + p["b2"][None, :]

    def step(state, batch):
        params, opt_state = state

        def loss(p):
            logits = forward(p, batch["x"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    return step


def contenders(batch_size):
    import jax
    import numpy as np
    import optax
    from jax.sharding import NamedSharding, PartitionSpec

    import nnfun as nf
    from nnfun import parallel as P

    optimizer = optax.adam(1e-3)
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.normal(size=(batch_size, FEATURES)).astype(np.float32),
        "y": rng.integers(0, CLASSES, size=(batch_size,)).astype(np.int32),
    }
    mesh = P.make_mesh({"data": -1})
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("data"))

    params = raw_init(jax.random.key(0))
    raw_state = jax.device_put((params, optimizer.init(params)), replicated)
    raw = jax.jit(
        raw_step(optimizer),
        in_shardings=(replicated, split),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )

    model = nf.Sequential(
        {
            "hidden": nf.Dense(100),
            "relu": jax.nn.relu,
            "block": nf.Residual(nf.Sequential({"dense": nf.Dense(100), "relu": jax.nn.relu})),
            "out": nf.Dense(10),
        }
    )
    ts = nf.TrainState.create(model, optimizer, jax.random.key(0), batch["x"][:1])
    ts = P.place_state(ts, mesh)
    ours = P.data_parallel_step(
        nf.train_step(model, nf.softmax_cross_entropy, optimizer), mesh, ts, donate=True
    )
    return {
        "raw JAX": [raw, raw_state, jax.device_put(batch, split)],
        "nnfun": [ours, ts, P.shard_batch(batch, mesh)],
    }


def worker(batch_size, rounds, inner):
    import jax

    runs = contenders(batch_size)
    for entry in runs.values():  # compile and warm up
        entry[1], _ = entry[0](entry[1], entry[2])
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, entry in runs.items():
            step, state, batch = entry
            start = time.perf_counter()
            for _ in range(inner):
                # Wait for every step: with dozens of steps queued, XLA:CPU's in-process
                # all-reduce deadlocks and aborts (jax 0.10.2, see docs/design.md).
                state, metrics = jax.block_until_ready(step(state, batch))
            times[name].append((time.perf_counter() - start) / inner)
            entry[1] = state
    rates = {name: batch_size / statistics.median(t) for name, t in times.items()}
    print(json.dumps({"devices": jax.device_count(), "examples_per_s": rates}))


def run_device_count(n, args):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    cmd = [sys.executable, __file__, "--worker", "--batch", str(args.batch)]
    cmd += ["--rounds", str(args.rounds), "--inner", str(args.inner)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{n} devices failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few, short rounds")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=512, help="global batch size")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--inner", type=int, default=None)
    parser.add_argument(
        "--device-counts",
        default=None,
        help="comma-separated device counts; default 1,2,4,8 forced host devices on CPU, "
        "and all local devices on an accelerator",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 9)
    args.inner = args.inner or (5 if args.quick else 50)
    if args.worker:
        return worker(args.batch, args.rounds, args.inner)
    counts = DEVICE_COUNTS
    if args.device_counts:
        counts = tuple(int(n) for n in args.device_counts.split(","))
    print(f"global batch {args.batch}, {os.cpu_count()} CPU cores shared by all 'devices'\n")
    print("| devices | raw JAX (examples/s) | nnfun (examples/s) | nnfun / raw JAX |")
    print("|---:|---:|---:|---:|")
    for n in counts:
        rates = run_device_count(n, args)["examples_per_s"]
        raw, ours = rates["raw JAX"], rates["nnfun"]
        print(f"| {n} | {raw:,.0f} | {ours:,.0f} | {ours / raw:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
