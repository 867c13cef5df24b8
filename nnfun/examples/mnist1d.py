"""Train a model from ``nnfun.models.mnist1d.RECIPES`` on MNIST-1D and print its test accuracy.

Run ``python -m nnfun.examples.mnist1d --help`` for the options; ``make demo``
runs it with the defaults of the MLP recipe.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax

from .. import data as nd
from ..models.mnist1d import RECIPES, Recipe
from ..train import accuracy, fit, softmax_cross_entropy


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line; unset options fall back to the recipe's values."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.mnist1d",
        description="Train a model on MNIST-1D (generated offline) and print its test accuracy.",
    )
    parser.add_argument("--model", default="mlp", choices=sorted(RECIPES), help="recipe name")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="examples per step (default: recipe)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: recipe)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the data, the initialisation and dropout"
    )
    parser.add_argument(
        "--steps-per-call", type=int, default=20, help="optimizer steps fused per compiled call"
    )
    parser.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> float:
    """Trains as ``args`` says and returns the final test accuracy in ``[0, 1]``."""
    recipe: Recipe = RECIPES[args.model]()
    steps = args.steps or recipe.steps
    batch_size = args.batch_size or recipe.batch_size
    train, test = nd.mnist1d(seed=args.seed)
    train["x"], test["x"] = recipe.reshape(train["x"]), recipe.reshape(test["x"])
    _, history = fit(
        recipe.model,
        softmax_cross_entropy,
        recipe.optimizer(steps=steps, learning_rate=args.lr),
        train,
        steps=steps,
        batch_size=batch_size,
        seed=args.seed,
        metrics={"accuracy": accuracy},
        eval_data=test,
        eval_every=min(args.eval_every, steps),
        steps_per_call=args.steps_per_call,
        progress=not args.no_progress,
    )
    return float(history["eval"]["accuracy"][-1])


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m nnfun.examples.mnist1d``."""
    args = parse_args(argv)
    start = time.perf_counter()
    test_accuracy = run(args)
    seconds = time.perf_counter() - start
    print(
        f"test accuracy: {100 * test_accuracy:.1f}% "
        f"(model={args.model}, seed={args.seed}, {seconds:.1f} s on {jax.default_backend()})"
    )


if __name__ == "__main__":
    main()
