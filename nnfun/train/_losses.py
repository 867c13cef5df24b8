"""Losses and metrics: ``fn(outputs, targets) -> scalar``, averaged over the batch.

Every loss and metric that ``train_step``, ``eval_step`` and ``fit`` accept has
this signature, so the built-ins plug in directly and a user's own is one line.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _check_labels(name: str, logits: jax.Array, labels: jax.Array) -> None:
    if jnp.ndim(logits) < 1 or jnp.shape(logits)[:-1] != jnp.shape(labels):
        raise ValueError(
            f"{name}: expected logits (..., classes) and integer labels (...) with the same "
            f"leading shape, got logits {jnp.shape(logits)} and labels {jnp.shape(labels)}. "
            "Fix: pass class indices, not one-hot labels, shaped like logits without the "
            "last axis."
        )
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"{name}: expected integer class labels, got dtype {jnp.result_type(labels)}. "
            "Fix: labels.astype(jnp.int32)."
        )


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy between logits and integer class labels.

    Computed by ``optax.softmax_cross_entropy_with_integer_labels``.

    Args:
        logits: ``(..., classes)`` unnormalised scores.
        labels: ``(...)`` integer class indices in ``[0, classes)``.

    Returns:
        A float scalar: the mean over all leading positions.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> loss = nf.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))
        >>> round(float(loss), 4)  # log(4)
        1.3863
    """
    _check_labels("softmax_cross_entropy", logits, labels)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error, ``mean((predictions - targets) ** 2)`` (``optax.squared_error``).

    Args:
        predictions: any shape.
        targets: the same shape as ``predictions`` (no broadcasting, which would
            silently turn ``(n, 1)`` against ``(n,)`` into an ``(n, n)`` error).

    Returns:
        A float scalar.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> float(nf.mse(jnp.array([1.0, 3.0]), jnp.array([0.0, 1.0])))
        2.5
    """
    if jnp.shape(predictions) != jnp.shape(targets):
        raise ValueError(
            f"mse: predictions {jnp.shape(predictions)} and targets {jnp.shape(targets)} "
            "must have the same shape. Fix: reshape one of them (e.g. y[:, None] or "
            "pred[:, 0])."
        )
    return jnp.mean(optax.squared_error(predictions, targets))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of positions whose arg-max class equals the integer label.

    Args:
        logits: ``(..., classes)`` scores (or probabilities).
        labels: ``(...)`` integer class indices.

    Returns:
        A float32 scalar in ``[0, 1]``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> float(nf.accuracy(jnp.array([[0.1, 0.9], [0.8, 0.2]]), jnp.array([1, 1])))
        0.5
    """
    _check_labels("accuracy", logits, labels)
    hits = jnp.argmax(logits, axis=-1) == labels
    return jnp.mean(hits.astype(jnp.float32))
