"""Recommenders on MovieLens-100K: rating prediction and top-10 retrieval.

Run ``python -m nnfun.examples.movielens`` (``--help`` for the options). It
trains biased matrix factorization and a DCN-v2 ranker with side features on
the random 80/20 split (test RMSE of their average), and a
two-tower model with side features on leave-last-one-out with in-batch
sampled softmax and the log-Q correction (recall@10 and NDCG@10 over the whole
catalogue, items seen in training excluded), next to the popularity baseline.
The training loops are plain JAX: a jitted epoch is a ``lax.scan`` over
minibatches. Needs ``pip install --no-deps recbole==1.2.1`` for the data.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import movielens100k
from ..models import recsys as rm
from ..recsys import ndcg_at_k, popularity_scores, recall_at_k, rmse, sampled_softmax_loss


def train_epochs(
    loss: Callable[[Any, Any], jax.Array],
    params: Any,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> Any:
    """Adam with cosine decay over ``epochs`` passes of shuffled minibatches of ``data``."""
    n = len(jax.tree.leaves(data)[0])
    per_epoch = n // batch_size
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, epochs * per_epoch))
    opt_state = optimizer.init(params)
    data = jax.tree.map(jnp.asarray, data)

    @jax.jit
    def epoch(params: Any, opt_state: Any, order: jax.Array) -> Any:
        def step(carry: Any, index: jax.Array) -> tuple[Any, None]:
            params, opt_state = carry
            batch = jax.tree.map(lambda a: a[index], data)
            grads = jax.grad(loss)(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt_state), order)[0]

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)[: per_epoch * batch_size].reshape(per_epoch, batch_size)
        params, opt_state = epoch(params, opt_state, jnp.asarray(order))
    return params


def run_mf(args: argparse.Namespace, data: Any, seed: int) -> jax.Array:
    """Trains matrix factorization on ``data.train``; returns its test predictions."""
    train = {k: data.train[k] for k in ("user", "item", "rating")}
    model = rm.MatrixFactorization(943, 1682, args.mf_features, float(train["rating"].mean()))
    params, _ = model.init(jax.random.key(seed), train)

    def loss(params: Any, batch: Any) -> jax.Array:
        predicted, _ = model.apply(params, {}, batch)
        rows = [
            params["user"]["embedding"][batch["user"]],
            params["item"]["embedding"][batch["item"]],
            params["user_bias"]["embedding"][batch["user"]],
            params["item_bias"]["embedding"][batch["item"]],
        ]
        penalty = sum(jnp.sum(jnp.square(r), axis=-1) for r in rows)
        return jnp.mean(jnp.square(predicted - batch["rating"]) + args.mf_l2 * penalty)

    params = train_epochs(
        loss, params, train, epochs=args.mf_epochs, batch_size=512, lr=args.lr, seed=seed
    )
    test = {k: jnp.asarray(data.test[k]) for k in ("user", "item")}
    return jax.jit(model.apply)(params, {}, test)[0]


def run_dcn(args: argparse.Namespace, data: Any, seed: int) -> jax.Array:
    """Trains the DCN-v2 ranker as a rating regressor on ``data.train``; returns test predictions.

    Weight decay is ``dcn_l2 * |params|^2 / len(train)`` on every param.
    """
    users, items = rm.movielens_user_features(data), rm.movielens_item_features(data)
    users, items = jax.tree.map(jnp.asarray, users), jax.tree.map(jnp.asarray, items)
    model = rm.dcn_ranker(len(data.occupations))
    mean = float(data.train["rating"].mean())
    example = rm.ranker_inputs(
        rm.take_rows(users, jnp.arange(2)), rm.take_rows(items, jnp.arange(2))
    )
    params, state = model.init(jax.random.key(seed), example)
    n = len(data.train["user"])

    def predict(params: Any, user: jax.Array, item: jax.Array) -> jax.Array:
        x = rm.ranker_inputs(rm.take_rows(users, user), rm.take_rows(items, item))
        return model.apply(params, state, x)[0][:, 0] + mean

    def loss(params: Any, batch: Any) -> jax.Array:
        error = predict(params, batch["user"], batch["item"]) - batch["rating"]
        penalty = sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))
        return jnp.mean(jnp.square(error)) + args.dcn_l2 * penalty / n

    train = {k: data.train[k] for k in ("user", "item", "rating")}
    params = train_epochs(
        loss, params, train, epochs=args.dcn_epochs, batch_size=512, lr=args.dcn_lr, seed=seed
    )
    return jax.jit(predict)(params, jnp.asarray(data.test["user"]), jnp.asarray(data.test["item"]))


def rating_rmse(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Test RMSE on the random 80/20 split of MF, the DCN, and their average."""
    data = movielens100k("random", seed=seed)
    ratings = jnp.asarray(data.test["rating"])
    mf, dcn = run_mf(args, data, seed), run_dcn(args, data, seed)
    return {
        "rmse": float(rmse((mf + dcn) / 2, ratings)),
        "mf rmse": float(rmse(mf, ratings)),
        "dcn rmse": float(rmse(dcn, ratings)),
    }


def ranking_data(seed: int) -> tuple[Any, dict, dict, np.ndarray]:
    """Leave-last-one-out data, user and item feature rows, and the training-item mask."""
    data = movielens100k("last", seed=seed)
    seen = np.zeros((943, 1682), bool)
    seen[data.train["user"], data.train["item"]] = True
    users, items = rm.movielens_user_features(data), rm.movielens_item_features(data)
    return data, users, items, seen


def ranking_metrics(scores: jax.Array, data: Any, seen: np.ndarray, k: int = 10) -> tuple:
    """Mean recall@k and NDCG@k of ``scores`` (users, items) against each user's held-out item."""
    held_out, exclude = jnp.asarray(data.test["item"]), jnp.asarray(seen)
    recall = float(jnp.mean(recall_at_k(scores, held_out, k, exclude)))
    return recall, float(jnp.mean(ndcg_at_k(scores, held_out, k, exclude)))


def two_tower_scores(
    args: argparse.Namespace, seed: int, data: Any, users: Any, items: Any
) -> jax.Array:
    """Trains the two-tower model with in-batch sampled softmax; returns (users, items) scores."""
    model = rm.TwoTower(
        rm.user_tower(len(data.occupations), args.tower_features),
        rm.item_tower(args.tower_features),
    )
    pairs = {"user": data.train["user"], "item": data.train["item"]}
    counts = popularity_scores(data.train["item"], 1682)
    log_q = jnp.log(jnp.asarray(counts) / counts.sum())
    users_j, items_j = jax.tree.map(jnp.asarray, users), jax.tree.map(jnp.asarray, items)
    example = {"user": rm.take_rows(users, np.arange(2)), "item": rm.take_rows(items, np.arange(2))}
    params, state = model.init(jax.random.key(seed), example)

    def loss(params: Any, batch: Any) -> jax.Array:
        x = {
            "user": rm.take_rows(users_j, batch["user"]),
            "item": rm.take_rows(items_j, batch["item"]),
        }
        out, _ = model.apply(params, state, x)
        return jnp.mean(
            sampled_softmax_loss(
                out["user"],
                out["item"],
                log_q=log_q[batch["item"]],
                candidate_ids=batch["item"],
                temperature=args.temperature,
            )
        )

    params = train_epochs(
        loss, params, pairs, epochs=args.tower_epochs, batch_size=1024, lr=args.lr, seed=seed
    )
    user_vectors, _ = model.user_tower.apply(params["user"], state["user"], users_j)
    item_vectors, _ = model.item_tower.apply(params["item"], state["item"], items_j)
    return user_vectors @ item_vectors.T


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.movielens",
        description="Matrix factorization and a two-tower recommender on MovieLens-100K.",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the splits, init and order")
    parser.add_argument("--mf-epochs", type=int, default=40, help="passes over the ratings")
    parser.add_argument("--mf-features", type=int, default=128, help="MF vector width")
    parser.add_argument("--mf-l2", type=float, default=0.12, help="MF L2 weight per example")
    parser.add_argument("--dcn-epochs", type=int, default=20, help="DCN passes")
    parser.add_argument("--dcn-l2", type=float, default=30.0, help="DCN weight decay")
    parser.add_argument("--dcn-lr", type=float, default=0.003, help="DCN peak learning rate")
    parser.add_argument("--tower-epochs", type=int, default=20, help="two-tower passes")
    parser.add_argument("--tower-features", type=int, default=32, help="two-tower output width")
    parser.add_argument("--temperature", type=float, default=0.1, help="softmax temperature")
    parser.add_argument("--lr", type=float, default=0.01, help="peak Adam learning rate")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Trains both models; returns the test metrics and the popularity baseline's."""
    data, users, items, seen = ranking_data(args.seed)
    popular = jnp.broadcast_to(jnp.asarray(popularity_scores(data.train["item"], 1682)), seen.shape)
    pop_recall, pop_ndcg = ranking_metrics(popular, data, seen)
    recall, ndcg = ranking_metrics(
        two_tower_scores(args, args.seed, data, users, items), data, seen
    )
    return {
        **rating_rmse(args, args.seed),
        "recall@10": recall,
        "ndcg@10": ndcg,
        "popularity recall@10": pop_recall,
        "popularity ndcg@10": pop_ndcg,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m nnfun.examples.movielens``."""
    args = parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    seconds = time.perf_counter() - start
    print(f"seed {args.seed}: {seconds:.0f} s on {jax.default_backend()}")
    print(
        f"movielens: test RMSE {result['rmse']:.3f}, recall@10 {result['recall@10']:.3f}, "
        f"NDCG@10 {result['ndcg@10']:.3f} (popularity baseline recall@10 "
        f"{result['popularity recall@10']:.3f}, NDCG@10 {result['popularity ndcg@10']:.3f}; "
        f"RMSE alone: MF {result['mf rmse']:.3f}, DCN {result['dcn rmse']:.3f})"
    )


if __name__ == "__main__":
    main()
