"""Softmax cross-entropy with integer labels, fused forward and backward."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _one_hot(labels, num_classes, dtype):
    # A comparison with an iota is a dense elementwise op; its gradient needs no scatter.
    classes = jax.lax.broadcasted_iota(labels.dtype, (*labels.shape, num_classes), labels.ndim)
    return (labels[..., None] == classes).astype(dtype)


@jax.custom_vjp
def _xent(logits, labels):
    return _xent_fwd(logits, labels)[0]


def _xent_fwd(logits, labels):
    lf = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    lse = jax.nn.logsumexp(lf, axis=-1)
    picked = jnp.sum(lf * _one_hot(labels, lf.shape[-1], lf.dtype), axis=-1)
    return lse - picked, (logits, lse, labels)


def _xent_bwd(res, g):
    logits, lse, labels = res
    lf = logits.astype(lse.dtype)
    probs = jnp.exp(lf - lse[..., None])
    dlogits = (probs - _one_hot(labels, lf.shape[-1], lf.dtype)) * g[..., None]
    return dlogits.astype(logits.dtype), None


_xent.defvjp(_xent_fwd, _xent_bwd)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``logsumexp(logits) - logits[label]`` (the negative log-likelihood).

    The same numbers as ``optax.softmax_cross_entropy_with_integer_labels``; the
    backward pass is ``softmax(logits) - one_hot(labels)`` computed directly,
    with the one-hot made by a comparison rather than a gather and a scatter.
    Computed in float32 (or wider); the gradient has the dtype of ``logits``.

    Args:
        logits: ``(..., classes)`` unnormalized log-probabilities.
        labels: ``(...)`` integer class indices in ``[0, classes)``.

    Returns:
        ``(...)`` losses, float32 (or wider).

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.ops import softmax_cross_entropy
        >>> loss = softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))
        >>> print(loss.round(4))  # log(4)
        [1.3863 1.3863]
    """
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"softmax_cross_entropy labels must be integers, got {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"softmax_cross_entropy expected labels of shape {logits.shape[:-1]} "
            f"(logits {logits.shape} without the class axis), got {labels.shape}"
        )
    return _xent(logits, labels)
