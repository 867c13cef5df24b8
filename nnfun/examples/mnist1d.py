"""Train a model from ``nnfun.models.mnist1d.RECIPES`` on MNIST-1D and print its test accuracy.

Run ``python -m nnfun.examples.mnist1d --help`` for the options; ``make demo``
runs it with the defaults of the MLP recipe.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import jax

from .. import data as nd
from ..models.mnist1d import RECIPES, Recipe
from ..train import accuracy, fit, softmax_cross_entropy


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def convert(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line; unset options fall back to the recipe's values."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.mnist1d",
        description="Train a model on MNIST-1D (generated offline) and print its test accuracy.",
    )
    count, rate = _positive(int), _positive(float)
    add = parser.add_argument
    add("--model", default="mlp", choices=sorted(RECIPES), help="recipe name (default: mlp)")
    add("--steps", type=count, help="optimizer steps (default: the recipe's)")
    add("--batch-size", type=count, help="examples per step (default: the recipe's)")
    add("--lr", type=rate, help="peak learning rate (default: the recipe's)")
    add("--seed", type=int, default=0, help="seeds the data, init and dropout (default: 0)")
    add("--steps-per-call", type=count, help="steps fused per call (default: the recipe's)")
    add("--eval-every", type=count, default=500, help="steps between evaluations (default: 500)")
    add("--no-progress", action="store_true", help="hide the progress bar")
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
        steps_per_call=args.steps_per_call or recipe.steps_per_call,
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
