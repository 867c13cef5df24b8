"""Helpers shared by the step benchmarks (cnn_step, rnn_step, more_models).

Each benchmark builds ``run(n)`` callables, one per contender, that run ``n``
training steps and wait for the result; :func:`measure` times them in
interleaved rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import optax


def own_step(apply: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """A hand-written, jitted Adam-style step around ``apply(params, x) -> logits``:
    ``step(params, opt_state, x, y) -> (params, opt_state, loss)``."""

    def step(params, opt_state, x, y):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def jax_runner(step: Callable, carry: tuple, x, y) -> Callable[[int], None]:
    """``run(n)``: ``n`` calls of ``step(*carry, x, y) -> (*carry, loss)``, then a block."""
    box = {"carry": carry}

    def run(n):
        carry = box["carry"]
        for _ in range(n):
            *carry, _ = step(*carry, x, y)
        jax.block_until_ready(carry)
        box["carry"] = carry

    return run


def measure(runs: dict[str, Callable[[int], None]], rounds: int, inner: int) -> dict[str, float]:
    """Median seconds per step of each contender over ``rounds`` interleaved rounds of
    ``inner`` steps each, after a warm-up (compilation) of 3 steps."""
    for run in runs.values():
        run(3)
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        # Rotate the order each round: a contender right after PyTorch (whose idle
        # threads keep spinning for a while) would otherwise always pay for it.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name](inner)
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(t) for name, t in times.items()}


def nnfun_runs(model, optimizer, x, y, donate: bool = False) -> dict[str, Callable[[int], None]]:
    """The two nnfun contenders of a step benchmark: the model's ``apply`` in the
    hand-written :func:`own_step` (the layers alone), and ``nf.train_step`` on an
    ``nf.TrainState`` under ``jax.jit`` (the state donated if ``donate``)."""
    import nnfun as nf

    params, state = model.init(jax.random.key(0), x)

    def apply(p, xs):
        return model.apply(p, state, xs, train=True)[0]

    own = jax_runner(own_step(apply, optimizer), (params, optimizer.init(params)), x, y)
    step = nf.train_step(model, nf.softmax_cross_entropy, optimizer)
    step = jax.jit(step, donate_argnums=0 if donate else ())
    box = {"ts": nf.TrainState.create(model, optimizer, jax.random.key(0), x)}
    batch = {"x": x, "y": y}

    def run_train_step(n):
        ts = box["ts"]
        for _ in range(n):
            ts, _ = step(ts, batch)
        jax.block_until_ready(ts)
        box["ts"] = ts

    return {"nnfun model + own step": own, "nnfun train_step": run_train_step}


def print_table(medians: dict[str, float], base: str, title: str) -> None:
    """A markdown table of ms per step and the ratio of each contender to ``base``."""
    print(f"\n{title}\n")
    print("| contender | ms / step | vs raw JAX |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {1e3 * seconds:.3f} | {seconds / medians[base]:.2f}x |")


def rounds_and_inner(description: str, rounds: int, inner: int, quick: tuple[int, int]):
    """Parses ``--quick``, ``--rounds`` and ``--inner`` (defaults given); returns
    ``(rounds, inner)``, the ``quick`` pair when ``--quick`` is set."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a few rounds, for a smoke test")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--inner", type=int, default=inner, help="steps per timed call")
    args = parser.parse_args()
    return quick if args.quick else (args.rounds, args.inner)
