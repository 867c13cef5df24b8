"""Losses for implicit feedback: BPR and sampled softmax over in-batch negatives.

Both return one value per example, as Optax's losses do; the caller takes the
mean. Rating regression needs no loss of its own: the squared error is
``(predictions - ratings) ** 2``, and :func:`nnfun.recsys.rmse` reports it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def bpr_loss(positive_scores: jax.Array, negative_scores: jax.Array) -> jax.Array:
    """Bayesian personalised ranking (Rendle et al. 2009): ``-log sigmoid(pos - neg)``.

    Args:
        positive_scores: ``(batch,)`` scores of items the user interacted with.
        negative_scores: ``(batch,)`` scores of one sampled item per example, or
            ``(batch, negatives)`` for several (their losses are averaged).

    Returns:
        ``(batch,)`` losses, ``softplus(neg - pos)`` computed stably.

    Raises:
        ValueError: shapes that do not pair up.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.recsys import bpr_loss
        >>> [round(float(v), 4) for v in bpr_loss(jnp.array([2.0, 0.0]), jnp.array([2.0, 0.0]))]
        [0.6931, 0.6931]
    """
    pos, neg = jnp.asarray(positive_scores), jnp.asarray(negative_scores)
    if pos.ndim != 1 or neg.ndim not in (1, 2) or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"bpr_loss: expected positive_scores (batch,) and negative_scores (batch,) or "
            f"(batch, negatives), got {pos.shape} and {neg.shape}. Fix: score one positive "
            "per example and its sampled negatives."
        )
    margins = neg - (pos if neg.ndim == 1 else pos[:, None])
    losses = jax.nn.softplus(margins)
    return losses if neg.ndim == 1 else jnp.mean(losses, axis=1)


def sampled_softmax_loss(
    queries: jax.Array,
    candidates: jax.Array,
    *,
    log_q: jax.Array | None = None,
    candidate_ids: jax.Array | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Softmax over in-batch negatives: row ``i``'s positive is candidate ``i``.

    The logits are ``queries @ candidates.T / temperature``; every other
    candidate in the batch serves as a negative. In-batch negatives are drawn in
    proportion to item popularity, which biases the scores toward popular
    items; the log-Q correction (Yi et al. 2019, "Sampling-bias-corrected
    neural modeling") subtracts each candidate's log sampling probability
    ``log_q`` from its logit. With ``candidate_ids``, a candidate that is the
    same item as row ``i``'s positive (an "accidental hit") is left out of row
    ``i``'s softmax instead of counting as a negative. The softmax itself is
    ``optax.losses.ranking_softmax_loss``.

    Args:
        queries: ``(batch, d)`` user (query) embeddings.
        candidates: ``(batch, d)`` embeddings of each row's positive item.
        log_q: ``(batch,)`` log probability that each candidate appears in a
            batch (e.g. ``log(count / total)`` of its training interactions).
        candidate_ids: ``(batch,)`` item ids, to remove accidental hits.
        temperature: divides the dot products (smaller is sharper).

    Returns:
        ``(batch,)`` losses: ``-log softmax(logits[i])[i]``.

    Raises:
        ValueError: mismatched shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.recsys import sampled_softmax_loss
        >>> q = jnp.eye(2)
        >>> [round(float(v), 4) for v in sampled_softmax_loss(q, q)]  # log(1 + e^-1)
        [0.3133, 0.3133]
    """
    queries, candidates = jnp.asarray(queries), jnp.asarray(candidates)
    if queries.ndim != 2 or queries.shape != candidates.shape:
        raise ValueError(
            f"sampled_softmax_loss: expected queries and candidates of one shape (batch, d), "
            f"got {queries.shape} and {candidates.shape}. Fix: row i of candidates is the "
            "positive item of row i of queries."
        )
    batch = queries.shape[0]
    for name, value in (("log_q", log_q), ("candidate_ids", candidate_ids)):
        if value is not None and jnp.shape(value) != (batch,):
            raise ValueError(
                f"sampled_softmax_loss: expected {name} shaped ({batch},), one per candidate, "
                f"got {jnp.shape(value)}."
            )
    logits = (queries @ candidates.T) / temperature
    if log_q is not None:
        logits = logits - jnp.asarray(log_q, logits.dtype)[None, :]
    labels = jnp.eye(batch, dtype=logits.dtype)
    where = None
    if candidate_ids is not None:
        ids = jnp.asarray(candidate_ids)
        where = (ids[:, None] != ids[None, :]) | jnp.eye(batch, dtype=bool)
    return optax.losses.ranking_softmax_loss(logits, labels, where=where, reduce_fn=None)
