"""Train a small CNN with batch norm on scikit-learn's 8x8 digits and print its test accuracy.

Run ``python -m nnfun.examples.digits`` (``--help`` for the options). The
defaults reach about 99% test accuracy (99.7% seed 0, 99.4% seed 1) in under a
minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import optax

from .. import data as nd
from ..core import Sequential
from ..layers import BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool
from ..train import accuracy, fit, softmax_cross_entropy


def model() -> Sequential:
    """Two 3x3 convolutions with batch norm, a 2x2 max pool and a linear head.

    The convolutions have no bias: the batch norm after each one removes it.
    ``momentum=0.9`` (not the default 0.99) lets the running statistics catch up
    with the weights in a run of a few hundred steps.

    Shapes: ``(batch, 8, 8, 1) -> (batch, 10)`` logits.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> from nnfun.examples.digits import model
        >>> params, state = model().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
        >>> sorted(state), state["bn1"]["mean"].shape
        (['bn1', 'bn2'], (32,))
    """
    return Sequential(
        {
            "conv1": Conv(32, (3, 3), use_bias=False),
            "bn1": BatchNorm(momentum=0.9),
            "relu1": jax.nn.relu,
            "conv2": Conv(64, (3, 3), use_bias=False),
            "bn2": BatchNorm(momentum=0.9),
            "relu2": jax.nn.relu,
            "pool": MaxPool((2, 2)),
            "flatten": Flatten(),
            "dropout": Dropout(0.3),
            "out": Dense(10),
        }
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.digits",
        description="Train a CNN on scikit-learn's 8x8 digits and print its test accuracy.",
    )
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, init and dropout")
    # One step per call: XLA:CPU runs 2-D convolutions inside a lax.scan (fused steps)
    # 20-40x slower than the same step jitted alone (measured), so fusing costs time here.
    parser.add_argument("--steps-per-call", type=int, default=1, help="steps fused per call")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> float:
    """Trains as ``args`` says and returns the test accuracy in ``[0, 1]``."""
    train, test = nd.digits(seed=args.seed)
    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps))
    _, history = fit(
        model(),
        softmax_cross_entropy,
        optimizer,
        train,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        metrics={"accuracy": accuracy},
        eval_data=test,
        eval_every=args.steps,
        steps_per_call=args.steps_per_call,
        progress=not args.no_progress,
    )
    return float(history["eval"]["accuracy"][-1])


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m nnfun.examples.digits``."""
    args = parse_args(argv)
    start = time.perf_counter()
    test_accuracy = run(args)
    seconds = time.perf_counter() - start
    print(
        f"test accuracy: {100 * test_accuracy:.1f}% "
        f"(seed={args.seed}, {args.steps} steps, {seconds:.1f} s on {jax.default_backend()})"
    )


if __name__ == "__main__":
    main()
