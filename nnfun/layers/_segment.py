"""Segment reductions for graph layers: sums, means, maxima and softmax over segments.

A segment id outside ``[0, num_segments)`` is dropped (``jax.ops.segment_*``
semantics), which is how padding nodes, whose graph id is ``n_graph``, stay out
of every graph's readout. Empty segments give 0 (not ``-inf`` for the max).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def segment_sum(data: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """Sums the rows of ``data (n, ...)`` by segment: ``(num_segments, ...)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.layers import segment_sum
        >>> segment_sum(jnp.array([1.0, 2.0, 4.0]), jnp.array([0, 0, 1]), 2).tolist()
        [3.0, 4.0]
    """
    return jax.ops.segment_sum(data, segment_ids, num_segments)


def segment_count(segment_ids: jax.Array, num_segments: int, dtype: Any = jnp.float32) -> jax.Array:
    """How many rows each segment has: ``(num_segments,)``."""
    return jax.ops.segment_sum(jnp.ones(segment_ids.shape, dtype), segment_ids, num_segments)


def segment_mean(data: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """Means of the rows of ``data (n, F)`` by segment, 0 for an empty one: ``(num_segments, F)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.layers import segment_mean
        >>> segment_mean(jnp.array([[1.0], [3.0]]), jnp.array([0, 0]), 2).tolist()
        [[2.0], [0.0]]
    """
    count = segment_count(segment_ids, num_segments, data.dtype)
    total = jax.ops.segment_sum(data, segment_ids, num_segments)
    return total / jnp.maximum(count, 1.0)[:, None]


def segment_max(data: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """Maxima of the rows of ``data (n, ...)`` by segment, 0 for an empty one.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.layers import segment_max
        >>> segment_max(jnp.array([-1.0, -3.0]), jnp.array([0, 0]), 2).tolist()
        [-1.0, 0.0]
    """
    peak = jax.ops.segment_max(data, segment_ids, num_segments)
    return jnp.where(jnp.isfinite(peak), peak, jnp.zeros_like(peak))


def segment_softmax(logits: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """Softmax of ``logits (n, ...)`` within each segment (over a node's incoming edges).

    Rows of one segment sum to 1 along the first axis; other axes (attention
    heads) are independent. The per-segment maximum is subtracted first (and held
    constant in the gradient, where it cancels), so large logits do not overflow.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.layers import segment_softmax
        >>> segment_softmax(jnp.array([0.0, 0.0, 5.0]), jnp.array([0, 0, 1]), 2).tolist()
        [0.5, 0.5, 1.0]
    """
    peak = jax.lax.stop_gradient(segment_max(logits, segment_ids, num_segments))
    exp = jnp.exp(logits - peak[segment_ids])
    total = jax.ops.segment_sum(exp, segment_ids, num_segments)
    return exp / total[segment_ids]
