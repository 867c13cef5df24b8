"""Recommenders on MovieLens-100K: rating prediction and top-10 retrieval.

Run ``python -m nnfun.examples.movielens`` (``--help`` for the options). On the
random 80/20 split it trains biased matrix factorization, the rating model whose
test RMSE the last line reports, and a DCN-v2 ranker with side features
(reported beside it). On leave-last-one-out it trains a two-tower model with
side features by in-batch sampled softmax with the log-Q correction, and
reports recall@10 and NDCG@10 over the whole catalogue (items seen in training
excluded) next to the popularity baseline.

The DCN and the two-tower model train with :func:`nnfun.fit`. Matrix
factorization has its own loop (a jitted epoch is a ``lax.scan`` over
minibatches): its L2 penalty falls on the rows each example looks up, so a
frequent user is held back more than a rare one, and ``fit``'s
``loss_fn(outputs, targets)`` does not see the params; the same decay on every
row (``optax.add_decayed_weights``) gave 0.928 instead of 0.900 at seed 0.
Needs ``pip install --no-deps recbole==1.2.1`` for the data.
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
from ..train import fit


def train_epochs(
    loss: Callable[[Any, Any], jax.Array],
    params: Any,
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    seed: int,
) -> Any:
    """``epochs`` passes of shuffled minibatches of ``data`` (device-resident), one jitted
    ``lax.scan`` per epoch."""
    n = len(jax.tree.leaves(data)[0])
    per_epoch = n // batch_size
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
    """Trains matrix factorization on ``data.train``; returns its test predictions.

    The loss is Funk's: the squared error of each example plus ``mf_l2`` times the
    squared norms of the two vectors it looks up and ``mf_bias_l2`` times its two
    squared biases, minimised by SGD with momentum 0.9 and a cosine schedule.
    """
    train = {k: data.train[k] for k in ("user", "item", "rating")}
    model = rm.MatrixFactorization(943, 1682, args.mf_features, float(train["rating"].mean()))
    params, _ = model.init(jax.random.key(seed), train)

    def loss(params: Any, batch: Any) -> jax.Array:
        predicted, _ = model.apply(params, {}, batch)
        user, item = batch["user"], batch["item"]
        vectors = jnp.sum(jnp.square(params["user"]["embedding"][user]), axis=-1) + jnp.sum(
            jnp.square(params["item"]["embedding"][item]), axis=-1
        )
        biases = jnp.square(params["user_bias"]["embedding"][user, 0]) + jnp.square(
            params["item_bias"]["embedding"][item, 0]
        )
        penalty = args.mf_l2 * vectors + args.mf_bias_l2 * biases
        return jnp.mean(jnp.square(predicted - batch["rating"]) + penalty)

    steps = args.mf_epochs * (len(train["user"]) // 512)
    optimizer = optax.sgd(optax.cosine_decay_schedule(args.mf_lr, steps), momentum=0.9)
    params = train_epochs(
        loss, params, train, optimizer=optimizer, epochs=args.mf_epochs, batch_size=512, seed=seed
    )
    test = {k: jnp.asarray(data.test[k]) for k in ("user", "item")}
    return jax.jit(model.apply)(params, {}, test)[0]


def run_dcn(args: argparse.Namespace, data: Any, seed: int) -> jax.Array:
    """Trains the DCN-v2 ranker as a rating regressor with ``fit``; returns test predictions.

    The model predicts the offset from the training mean. Weight decay
    ``dcn_l2 * |params|^2 / len(train)`` is the L2 term's gradient added by
    ``optax.add_decayed_weights`` before Adam.
    """
    users, items = rm.movielens_user_features(data), rm.movielens_item_features(data)
    model = rm.dcn_ranker(len(data.occupations))
    mean = float(data.train["rating"].mean())

    def rows(split: dict[str, np.ndarray]) -> dict[str, Any]:
        return rm.ranker_inputs(
            rm.take_rows(users, split["user"]), rm.take_rows(items, split["item"])
        )

    def loss(outputs: jax.Array, ratings: jax.Array) -> jax.Array:
        return jnp.square(outputs[:, 0] + mean - ratings)

    n = len(data.train["user"])
    steps = args.dcn_epochs * (n // 512)
    optimizer = optax.chain(
        optax.add_decayed_weights(2 * args.dcn_l2 / n),
        optax.adam(optax.cosine_decay_schedule(args.dcn_lr, steps)),
    )
    train = {"x": rows(data.train), "y": data.train["rating"]}
    state, _ = fit(
        model, loss, optimizer, train, steps=steps, batch_size=512, seed=seed,
        steps_per_call=n // 512, progress=False,
    )  # fmt: skip
    outputs, _ = jax.jit(model.apply)(state.params, state.state, rows(data.test))
    return outputs[:, 0] + mean


def rating_rmse(args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Test RMSE on the random 80/20 split: matrix factorization (the reported model), the DCN."""
    data = movielens100k("random", seed=seed)
    ratings = jnp.asarray(data.test["rating"])
    result = {"rmse": float(rmse(run_mf(args, data, seed), ratings))}
    if args.dcn_epochs:
        result["dcn rmse"] = float(rmse(run_dcn(args, data, seed), ratings))
    return result


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
    """Trains the two-tower model with ``fit`` on in-batch sampled softmax; returns
    (users, items) scores."""
    model = rm.TwoTower(
        rm.user_tower(len(data.occupations), args.tower_features),
        rm.item_tower(args.tower_features),
    )
    user, item = data.train["user"], data.train["item"]
    counts = popularity_scores(item, 1682)
    # Items never rated in training are never candidates: any finite log-Q will do.
    log_q = np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32)
    train = {
        "x": {"user": rm.take_rows(users, user), "item": rm.take_rows(items, item)},
        "y": {"item": item, "log_q": log_q[item]},
    }

    def loss(outputs: dict[str, jax.Array], targets: dict[str, jax.Array]) -> jax.Array:
        return sampled_softmax_loss(
            outputs["user"],
            outputs["item"],
            log_q=targets["log_q"],
            candidate_ids=targets["item"],
            temperature=args.temperature,
        )

    per_epoch = len(user) // 1024
    steps = args.tower_epochs * per_epoch
    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, steps))
    state, _ = fit(
        model, loss, optimizer, train, steps=steps, batch_size=1024, seed=seed,
        steps_per_call=per_epoch, progress=False,
    )  # fmt: skip
    params, model_state = state.params, state.state
    user_vectors, _ = model.user_tower.apply(params["user"], model_state["user"], users)
    item_vectors, _ = model.item_tower.apply(params["item"], model_state["item"], items)
    return user_vectors @ item_vectors.T


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.movielens",
        description="Matrix factorization and a two-tower recommender on MovieLens-100K.",
    )
    add = parser.add_argument
    add("--seed", type=int, default=0, help="seeds the splits, init and order")
    add("--mf-epochs", type=int, default=40, help="MF passes over the ratings")
    add("--mf-features", type=int, default=128, help="MF vector width")
    add("--mf-l2", type=float, default=0.06, help="MF L2 weight on the looked-up vectors")
    add("--mf-bias-l2", type=float, default=0.01, help="MF L2 weight on the looked-up biases")
    add("--mf-lr", type=float, default=0.5, help="MF peak SGD learning rate (momentum 0.9)")
    add("--dcn-epochs", type=int, default=20, help="DCN passes (0 skips the DCN)")
    add("--dcn-l2", type=float, default=30.0, help="DCN weight decay")
    add("--dcn-lr", type=float, default=0.003, help="DCN peak learning rate")
    add("--tower-epochs", type=int, default=20, help="two-tower passes")
    add("--tower-features", type=int, default=32, help="two-tower output width")
    add("--temperature", type=float, default=0.1, help="softmax temperature")
    add("--lr", type=float, default=0.01, help="two-tower peak Adam learning rate")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Trains the models of one seed; returns the test metrics and the popularity baseline's."""
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
    dcn = f", DCN-v2's {result['dcn rmse']:.3f}" if "dcn rmse" in result else ""
    print(
        f"movielens: test RMSE {result['rmse']:.3f}, recall@10 {result['recall@10']:.3f}, "
        f"NDCG@10 {result['ndcg@10']:.3f} (popularity baseline recall@10 "
        f"{result['popularity recall@10']:.3f}, NDCG@10 {result['popularity ndcg@10']:.3f}; "
        f"the RMSE is biased MF's{dcn})"
    )


if __name__ == "__main__":
    main()
