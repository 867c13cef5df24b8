# Run: .venv/bin/python benchmarks/overhead.py [--quick]   (or `make bench`)
"""Per-step overhead of nnfun's train step against a hand-written raw-JAX step.

One Adam step of the MNIST-1D MLP (40-100-100-10, ReLU, residual around the
second layer), batch 100, on the default JAX device. Contenders, timed in one
process, interleaved, several repeats, median:

* raw JAX and nnfun ``train_step``, both under ``jax.jit`` with the state donated,
  (a) reading the loss every step (``float(loss)``, as a progress bar does) and
  (b) never syncing until the end of the loop;
* nnfun with ``steps_per_call=16``: ``jax.jit(scan_steps(step))`` over 16 batches
  stacked on the device, reading the 16 losses once per call;
* ``nf.fit(..., steps_per_call=1 or 16, progress=False)`` end to end: shuffled
  batches gathered from NumPy arrays, stacked, sent, every loss read for the
  NaN guard (one call late, so the host work overlaps the compute);
* ``fit`` with ``steps_per_call="auto"`` (the default since issue 20; K=1 was
  the default before), and ``fit`` with three callbacks (an ``EarlyStopping``
  without evaluations, a callback that keeps the best loss, one that counts
  calls) against none: callbacks see values already fetched, so they should
  cost no device sync and stay within noise;
* ``fit(steps_per_call=1, prefetch=2)``: batches gathered by the prefetch
  thread instead of in the loop (the default for in-memory arrays is 0).

The first four see the same batches, already on the device, so they measure
dispatch and step overhead; the ``fit`` rows add the data pipeline.
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
from nnfun.train import scan_steps

BATCH, FEATURES, HIDDEN, CLASSES, FUSED = 100, 40, 100, 10, 16


def nnfun_model() -> nf.Layer:
    block = nf.Residual(nf.Sequential({"dense": nf.Dense(HIDDEN), "relu": jax.nn.relu}))
    return nf.Sequential(
        {"hidden": nf.Dense(HIDDEN), "relu": jax.nn.relu, "block": block, "out": nf.Dense(CLASSES)}
    )


def raw_params(key: jax.Array) -> dict:
    init = jax.nn.initializers.lecun_normal()
    keys = jax.random.split(key, 3)
    sizes = [(FEATURES, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, CLASSES)]
    return {
        f"w{i}": {"w": init(k, shape, jnp.float32), "b": jnp.zeros(shape[1], jnp.float32)}
        for i, (k, shape) in enumerate(zip(keys, sizes, strict=True))
    }


def raw_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    h = jax.nn.relu(x @ params["w0"]["w"] + params["w0"]["b"][None, :])
    h = h + jax.nn.relu(h @ params["w1"]["w"] + params["w1"]["b"][None, :])
    logits = h @ params["w2"]["w"] + params["w2"]["b"][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_raw_step(optimizer):
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(raw_loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def loop_raw(step, state, batches, sync):
    params, opt_state = state
    for batch in batches:
        params, opt_state, loss = step(params, opt_state, batch["x"], batch["y"])
        if sync:
            float(loss)
    jax.block_until_ready(loss)
    return params, opt_state


def loop_nnfun(step, ts, batches, sync):
    for batch in batches:
        ts, metrics = step(ts, batch)
        if sync:
            float(metrics["loss"])
    jax.block_until_ready(metrics["loss"])
    return ts


def loop_fused(multi, ts, chunks, sync=True):
    for chunk in chunks:
        ts, metrics = multi(ts, chunk)
        np.asarray(metrics["loss"])  # the progress bar's read, once per 16 steps
    return ts


def make_contenders(steps: int):
    optimizer = optax.adam(1e-3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps, BATCH, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(steps, BATCH)).astype(np.int32)
    batches = [{"x": jnp.asarray(x[i]), "y": jnp.asarray(y[i])} for i in range(steps)]
    chunks = [
        {"x": jnp.asarray(x[i : i + FUSED]), "y": jnp.asarray(y[i : i + FUSED])}
        for i in range(0, steps, FUSED)
    ]
    params = raw_params(jax.random.key(0))
    raw_state = [params, optimizer.init(params)]
    model = nnfun_model()
    ts = [nf.TrainState.create(model, optimizer, jax.random.key(0), batches[0]["x"])]
    step_fn = nf.train_step(model, nf.softmax_cross_entropy, optimizer)
    nnfun_step = jax.jit(step_fn, donate_argnums=0)
    fused = jax.jit(scan_steps(step_fn), donate_argnums=0)
    raw_step = make_raw_step(optimizer)

    def raw(sync):
        def go():
            raw_state[:] = loop_raw(raw_step, raw_state, batches, sync)

        return go

    train = {"x": x.reshape(-1, FEATURES), "y": y.reshape(-1)}

    def fitted(k, callbacks=(), prefetch=None):
        def go():
            ts[0], _ = nf.fit(
                model, nf.softmax_cross_entropy, optimizer, train, steps=int(ts[0].step) + steps,
                batch_size=BATCH, train_state=ts[0], steps_per_call=k, progress=False,
                callbacks=callbacks, prefetch=prefetch,
            )  # fmt: skip

        return go

    def ours(loop, fn, data, sync):
        def go():
            ts[0] = loop(fn, ts[0], data, sync)

        return go

    return {
        "raw JAX, reads loss every step": raw(True),
        "nnfun train_step, reads loss every step": ours(loop_nnfun, nnfun_step, batches, True),
        "raw JAX, no sync": raw(False),
        "nnfun train_step, no sync": ours(loop_nnfun, nnfun_step, batches, False),
        f"nnfun steps_per_call={FUSED}, reads losses per call": ours(
            loop_fused, fused, chunks, True
        ),
        "nnfun fit(steps_per_call=1) (the old default), batches from NumPy": fitted(1),
        f"nnfun fit(steps_per_call={FUSED}), batches from NumPy": fitted(FUSED),
        'nnfun fit(steps_per_call="auto") (the default), batches from NumPy': fitted("auto"),
        "nnfun fit(steps_per_call=1) + 3 callbacks": fitted(1, three_callbacks()),
        'nnfun fit(steps_per_call="auto") + 3 callbacks': fitted("auto", three_callbacks()),
        "nnfun fit(steps_per_call=1, prefetch=2)": fitted(1, prefetch=2),
    }


class BestLoss(nf.Callback):
    def on_start(self, train_state, step):
        self.best = float("inf")

    def on_step(self, train_state, step, metrics):
        self.best = min(self.best, float(metrics["loss"].min()))


class CountCalls(nf.Callback):
    calls = 0

    def on_step(self, train_state, step, metrics):
        self.calls += 1


def three_callbacks() -> list[nf.Callback]:
    return [nf.EarlyStopping("loss", patience=5), BestLoss(), CountCalls()]


def measure(contenders: dict, steps: int, repeats: int) -> dict[str, list[float]]:
    for go in contenders.values():  # compile and warm up
        go()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, go in contenders.items():  # interleaved, so load changes hit all alike
            start = time.perf_counter()
            go()
            times[name].append((time.perf_counter() - start) / steps * 1e6)
    return times


def table(times: dict[str, list[float]]) -> str:
    medians = {name: statistics.median(values) for name, values in times.items()}
    sync_raw = medians["raw JAX, reads loss every step"]
    nosync_raw = medians["raw JAX, no sync"]
    lines = [
        "| contender | µs/step (median) | min | vs raw JAX (syncing) | vs raw JAX (no sync) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, value in medians.items():
        lines.append(
            f"| {name} | {value:.1f} | {min(times[name]):.1f} | {value / sync_raw:.2f}x "
            f"| {value / nosync_raw:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--steps", type=int, help="steps per timed loop (multiple of 16)")
    parser.add_argument("--repeats", type=int, help="timed repeats per contender")
    args = parser.parse_args()
    # Many short timed loops, interleaved: on a shared machine a load spike then hits
    # one loop of every contender alike instead of all repeats of one.
    steps = args.steps or (32 if args.quick else 96)
    repeats = args.repeats or (2 if args.quick else 60)
    if steps % FUSED:
        parser.error(f"--steps must be a multiple of {FUSED}")
    times = measure(make_contenders(steps), steps, repeats)
    print(
        f"One Adam step, MLP 40-100-100-10, batch {BATCH}, {jax.default_backend()} "
        f"({jax.device_count()} device(s)), {steps} steps x {repeats} repeats, median:\n"
    )
    print(table(times))


if __name__ == "__main__":
    main()
