# Run: .venv/bin/python benchmarks/prefetch.py [--quick]   (or `make bench`)
"""Host-side prefetch in ``fit``: a data source that sleeps 5 ms per batch, against
the same batches from memory.

One Adam step of an MLP (128-512-512-10, ReLU, batch 128; about 8-20 ms a step
on two CPU cores) per compiled call. Contenders, timed in one process,
interleaved, median of the repeats:

* ``fit`` on a dict of in-memory arrays (the reference);
* ``fit`` on a generator that sleeps 5 ms before each batch (reading a file,
  decoding), with ``prefetch=4`` (the thread reads ahead while the step runs) and
  with ``prefetch=0`` (read in the loop: step time + 5 ms);
* a hand-written JAX loop over the sleeping generator (jitted step, loss read
  every step as a progress bar does): what a plain loop pays.

The claim: with prefetch the sleeping source costs within 10% of memory, as long
as a step takes longer than reading a batch. On a shared machine compare the
minima (the least disturbed repeat) as well as the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import optax

import nnfun as nf

FEATURES, HIDDEN, CLASSES, BATCH, SLEEP = 128, 512, 10, 128, 0.005


def model() -> nf.Layer:
    return nf.Sequential(
        [nf.Dense(HIDDEN), jax.nn.relu, nf.Dense(HIDDEN), jax.nn.relu, nf.Dense(CLASSES)]
    )


def data(steps: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(steps * BATCH, FEATURES)).astype(np.float32),
        "y": rng.integers(0, CLASSES, size=steps * BATCH).astype(np.int32),
    }


def sleeping(train: dict[str, np.ndarray], steps: int):
    for i in range(steps):
        time.sleep(SLEEP)
        yield {"x": train["x"][i * BATCH : (i + 1) * BATCH], "y": train["y"][i * BATCH :][:BATCH]}


def contenders(steps: int) -> dict:
    net, optimizer, train = model(), optax.adam(1e-3), data(steps)
    ts = nf.TrainState.create(net, optimizer, jax.random.key(0), train["x"][:1])
    step = jax.jit(nf.train_step(net, nf.softmax_cross_entropy, optimizer))

    def fitted(source, batch_size, prefetch):
        def go():
            nf.fit(net, nf.softmax_cross_entropy, optimizer, source(), steps=steps,
                   batch_size=batch_size, train_state=ts, steps_per_call=1, prefetch=prefetch,
                   progress=False)  # fmt: skip

        return go

    def hand_written():
        state = ts
        for batch in sleeping(train, steps):
            state, metrics = step(state, batch)
            float(metrics["loss"])

    return {
        "fit, in-memory arrays": fitted(lambda: train, BATCH, 0),
        "fit, sleeping source, prefetch=4": fitted(lambda: sleeping(train, steps), None, 4),
        "fit, sleeping source, prefetch=0": fitted(lambda: sleeping(train, steps), None, 0),
        "hand-written JAX loop, sleeping source": hand_written,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    args = parser.parse_args()
    steps, repeats = (8, 2) if args.quick else (40, 11)
    runs = contenders(steps)
    for go in runs.values():  # compile and warm up
        go()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, go in runs.items():
            start = time.perf_counter()
            go()
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    reference = statistics.median(times["fit, in-memory arrays"])
    fastest = min(times["fit, in-memory arrays"])
    print(
        f"MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}, batch {BATCH}, source sleeps "
        f"{SLEEP * 1e3:.0f} ms a batch, {jax.default_backend()}, {steps} steps x {repeats} "
        "repeats:\n"
    )
    print("| contender | ms/step (median) | min | max | vs in-memory (median) | (min) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.2f} | {min(values):.2f} | {max(values):.2f} "
            f"| {median / reference:.2f}x | {min(values) / fastest:.2f}x |"
        )


if __name__ == "__main__":
    main()
