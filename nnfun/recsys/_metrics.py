"""Ranking metrics over a whole catalogue, and RMSE for rating prediction.

The ranking metrics take every user's scores for every item, the held-out
(relevant) items, and the items to exclude (those seen in training), and return
one value per user; the caller takes the mean. Ties in the scores go to the
lower item index (``jax.lax.top_k``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core._masks import concrete


def _relevant_mask(relevant: jax.Array, shape: tuple[int, ...], caller: str) -> jax.Array:
    relevant = jnp.asarray(relevant)
    if relevant.shape == shape and relevant.dtype == jnp.bool_:
        return relevant
    if relevant.shape == shape[:1] and jnp.issubdtype(relevant.dtype, jnp.integer):
        return jnp.arange(shape[1])[None, :] == relevant[:, None]
    raise ValueError(
        f"{caller}: expected relevant items as a bool mask {shape} or one item id per user "
        f"({shape[0]},), got {relevant.dtype} {relevant.shape}."
    )


def top_k_items(scores: jax.Array, k: int, exclude: jax.Array | None = None) -> jax.Array:
    """The ``k`` best-scored items of each user, excluded items left out.

    Args:
        scores: ``(users, items)`` float scores.
        k: how many items, ``1 <= k <= items``.
        exclude: ``(users, items)`` bool, True for items not to recommend (seen
            in training). They get score ``-inf``, so they come last; if fewer
            than ``k`` items remain, the list ends with excluded ones.

    Returns:
        ``(users, k)`` int item indices, best first.

    Raises:
        ValueError: ``k`` outside ``[1, items]``, or mismatched shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.recsys import top_k_items
        >>> scores = jnp.array([[0.1, 0.9, 0.5]])
        >>> top_k_items(scores, 2, exclude=jnp.array([[False, True, False]])).tolist()
        [[2, 0]]
    """
    scores = jnp.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"top_k_items: expected scores (users, items), got {scores.shape}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= scores.shape[1]:
        raise ValueError(
            f"top_k_items: k must be an int in [1, {scores.shape[1]}] (the catalogue has "
            f"{scores.shape[1]} items), got {k!r}. Fix: a smaller k."
        )
    if exclude is not None:
        if jnp.shape(exclude) != scores.shape:
            raise ValueError(
                f"top_k_items: expected exclude of shape {scores.shape} like the scores, got "
                f"{jnp.shape(exclude)}."
            )
        scores = jnp.where(exclude, -jnp.inf, scores)
    return jax.lax.top_k(scores, int(k))[1]


def _hits(
    scores: jax.Array, relevant: jax.Array, k: int, exclude: jax.Array | None, caller: str
) -> tuple[jax.Array, jax.Array]:
    scores = jnp.asarray(scores)
    top = top_k_items(scores, k, exclude)
    relevant = _relevant_mask(relevant, scores.shape, caller)
    if exclude is not None:
        relevant = relevant & ~jnp.asarray(exclude)
    counts = jnp.sum(relevant, axis=1)
    values = concrete(counts)
    if values is not None and (values == 0).any():
        empty = np.flatnonzero(values == 0)
        raise ValueError(
            f"{caller}: {len(empty)} users have no held-out item outside the excluded ones "
            f"(users {empty[:5].tolist()}...), so the metric is undefined for them. Fix: leave "
            "those users out (under jit they give NaN)."
        )
    return jnp.take_along_axis(relevant, top, axis=1), counts


def recall_at_k(
    scores: jax.Array, relevant: jax.Array, k: int, exclude: jax.Array | None = None
) -> jax.Array:
    """Share of each user's held-out items found among their top ``k``.

    ``hits / |relevant|`` (the usual definition; with one held-out item per
    user it equals the hit rate). Relevant items that are also excluded do not
    count. A user with no relevant item raises when called eagerly and gives
    NaN under ``jit``.

    Args:
        scores: ``(users, items)`` float scores.
        relevant: ``(users, items)`` bool, or ``(users,)`` int: one held-out item each.
        k: list length, ``1 <= k <= items``.
        exclude: ``(users, items)`` bool: items seen in training, never recommended.

    Returns:
        ``(users,)`` float in ``[0, 1]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.recsys import recall_at_k
        >>> scores = jnp.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
        >>> relevant = jnp.array([[True, False, True], [True, False, False]])
        >>> recall_at_k(scores, relevant, 2).tolist()
        [0.5, 0.0]
    """
    hits, counts = _hits(scores, relevant, k, exclude, "recall_at_k")
    return jnp.sum(hits, axis=1) / counts


def hit_rate_at_k(
    scores: jax.Array, relevant: jax.Array, k: int, exclude: jax.Array | None = None
) -> jax.Array:
    """1 where any held-out item is in the user's top ``k``, else 0.

    Arguments and errors as :func:`recall_at_k`.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.recsys import hit_rate_at_k
        >>> hit_rate_at_k(jnp.array([[0.9, 0.8, 0.1]]), jnp.array([1]), 1).tolist()
        [0.0]
    """
    hits, _ = _hits(scores, relevant, k, exclude, "hit_rate_at_k")
    return jnp.any(hits, axis=1).astype(jnp.float32)


def ndcg_at_k(
    scores: jax.Array, relevant: jax.Array, k: int, exclude: jax.Array | None = None
) -> jax.Array:
    """Normalised discounted cumulative gain of the top ``k``, binary relevance.

    ``DCG = sum over hits at rank r (0-based) of 1 / log2(r + 2)``, divided by
    the DCG of a perfect list, ``sum_{r < min(k, |relevant|)} 1 / log2(r + 2)``.
    Arguments and errors as :func:`recall_at_k`.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.recsys import ndcg_at_k
        >>> ndcg = ndcg_at_k(jnp.array([[0.9, 0.8, 0.1]]), jnp.array([1]), 2)
        >>> round(float(ndcg[0]), 4)  # the hit is at rank 1: 1 / log2(3)
        0.6309
    """
    hits, counts = _hits(scores, relevant, k, exclude, "ndcg_at_k")
    discounts = 1.0 / jnp.log2(jnp.arange(k) + 2.0)
    dcg = jnp.sum(hits * discounts[None, :], axis=1)
    ideal = jnp.cumsum(discounts)[jnp.clip(jnp.minimum(counts, k) - 1, 0, k - 1)]
    return jnp.where(counts > 0, dcg / ideal, jnp.nan)


def rmse(
    predictions: jax.Array,
    ratings: jax.Array,
    *,
    scale: tuple[float, float] | None = (1.0, 5.0),
) -> jax.Array:
    """Root mean squared error of predicted ratings, predictions clipped to the scale.

    Clipping predictions into the rating scale is the usual protocol (Surprise
    does it too): a prediction of 5.3 stars is scored as 5. Ratings outside the
    scale raise when called eagerly (a wrong scale, or ratings not yet
    un-normalised); under ``jit`` they are not checked.

    Args:
        predictions: ``(n,)`` predicted ratings.
        ratings: ``(n,)`` true ratings.
        scale: ``(low, high)``; ``None`` neither clips nor checks.

    Returns:
        A scalar: ``sqrt(mean((clip(predictions) - ratings) ** 2))``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.recsys import rmse
        >>> float(rmse(jnp.array([5.5, 2.0]), jnp.array([4.0, 3.0])))  # 5.5 counts as 5
        1.0
    """
    predictions, ratings = jnp.asarray(predictions), jnp.asarray(ratings)
    if predictions.shape != ratings.shape:
        raise ValueError(
            f"rmse: predictions {predictions.shape} and ratings {ratings.shape} differ in shape. "
            "Fix: one prediction per rating (squeeze a trailing axis of size 1)."
        )
    if scale is not None:
        low, high = scale
        values = concrete(ratings)
        if values is not None and values.size and (values.min() < low or values.max() > high):
            raise ValueError(
                f"rmse: ratings must lie in the scale [{low}, {high}], got values from "
                f"{values.min()} to {values.max()}. Fix: pass scale=(low, high) of your data, "
                "or scale=None."
            )
        predictions = jnp.clip(predictions, low, high)
    return jnp.sqrt(jnp.mean(jnp.square(predictions - ratings)))


def popularity_scores(items: np.ndarray, num_items: int) -> np.ndarray:
    """The popularity baseline: each item's number of training interactions.

    Example:
        >>> from nnfun.recsys import popularity_scores
        >>> popularity_scores([0, 2, 2], 4).tolist()
        [1.0, 0.0, 2.0, 0.0]
    """
    return np.bincount(np.asarray(items), minlength=num_items).astype(np.float32)
