"""Losses and metrics: ``fn(outputs, targets) -> per-example values``, as in Optax.

Each returns one value per example (per position for sequences, per element
for ``mse``); the caller takes the mean. ``train_step``, ``eval_step`` and
``fit`` take the mean of whatever a loss or metric returns, so these and a
user's own (per-example or already a scalar) plug in alike.

Errors: ``TypeError`` for the wrong kind of argument (a tuple such as
``model.apply``'s ``(y, state)``, non-integer labels); ``ValueError`` for
shapes, and for labels outside ``[0, classes)`` given as concrete arrays. Under
a transformation (``jit``, ``grad`` of the labels, ``vmap``, ``scan``) the
labels are not known, so out-of-range labels give NaN instead, which ``fit``'s
NaN guard reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def check_array(name: str, arg: str, value: Any) -> jax.Array:
    """``value`` as an array; a tuple or dict raises a ``TypeError`` naming the fix."""
    if isinstance(value, tuple):
        raise TypeError(
            f"{name}: {arg} is a tuple of {len(value)}, expected an array. If it came from "
            "model.apply, unpack it first: y, state = model.apply(params, state, x)."
        )
    if isinstance(value, Mapping):
        raise TypeError(f"{name}: {arg} is a dict {sorted(value)}, expected an array")
    return jnp.asarray(value)


def out_of_range(labels: Any, classes: int) -> np.ndarray | None:
    """The distinct label values outside ``[0, classes)``, or None if all are in range.

    Only concrete labels are looked at: for a tracer (inside ``jit`` and the
    like) or an array spread over several processes this returns None.
    """
    if isinstance(labels, jax.core.Tracer):
        return None
    if isinstance(labels, jax.Array) and not labels.is_fully_addressable:
        return None
    values = np.asarray(labels)
    bad = values[(values < 0) | (values >= classes)]
    return np.unique(bad) if bad.size else None


def range_message(where: str, bad: np.ndarray, classes: int) -> str:
    """The error text for labels ``bad`` outside ``[0, classes)``."""
    shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    return (
        f"{where}: labels hold {shown}, outside the valid range [0, {classes}) of "
        f"{classes} classes (the logits' last axis). Fix: map the labels to 0..{classes - 1}, "
        "or widen the model's output to the number of classes; to ignore padded positions, "
        "give them a valid label and weight the per-example loss with a mask."
    )


def _check_labels(name: str, logits: jax.Array, labels: Any) -> jax.Array:
    labels_array = check_array(name, "labels", labels)
    if not jnp.issubdtype(labels_array.dtype, jnp.integer):
        raise TypeError(
            f"{name}: expected integer class labels, got dtype {labels_array.dtype}. "
            "Fix: labels.astype(jnp.int32) (class indices, not one-hot vectors)."
        )
    if logits.ndim < 1 or logits.shape[:-1] != labels_array.shape:
        raise ValueError(
            f"{name}: expected logits (..., classes) and integer labels (...) with the same "
            f"leading shape, got logits {logits.shape} and labels {labels_array.shape}. "
            "Fix: pass class indices, not one-hot labels, shaped like logits without the "
            "last axis."
        )
    bad = out_of_range(labels, logits.shape[-1])
    if bad is not None:
        raise ValueError(range_message(name, bad, logits.shape[-1]))
    return labels_array


def _in_range(labels: jax.Array, classes: int) -> jax.Array:
    return (labels >= 0) & (labels < classes)


def _one_hot(labels: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
    # A comparison with an iota is a dense elementwise op; its gradient needs no scatter.
    classes = jax.lax.broadcasted_iota(labels.dtype, (*labels.shape, num_classes), labels.ndim)
    return (labels[..., None] == classes).astype(dtype)


def _xent_and_slope(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example losses and their gradient ``softmax - one_hot``, NaN for bad labels."""
    lf = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    lse = jax.nn.logsumexp(lf, axis=-1)
    one_hot = _one_hot(labels, lf.shape[-1], lf.dtype)
    valid = _in_range(labels, lf.shape[-1])
    loss = jnp.where(valid, lse - jnp.sum(lf * one_hot, axis=-1), jnp.nan)
    # A NaN slope for an out-of-range label makes its gradient NaN too, so that a
    # run without the NaN guard does not train on it silently.
    slope = jnp.where(valid[..., None], jnp.exp(lf - lse[..., None]) - one_hot, jnp.nan)
    return loss, slope


# A custom JVP, not a custom VJP: reverse mode transposes ``sum(slope * t)`` into
# ``slope * g`` (the same fused backward), and forward mode, Hessians and
# ``jax.jvp`` keep working. Unused in a forward-only call, the slope is dropped by XLA.
@jax.custom_jvp
def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return _xent_and_slope(logits, labels)[0]


@_xent.defjvp
def _xent_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, Any]
) -> tuple[jax.Array, jax.Array]:
    loss, slope = _xent_and_slope(*primals)
    return loss, jnp.sum(slope * tangents[0].astype(slope.dtype), axis=-1)


def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Per-example softmax cross-entropy, ``logsumexp(logits) - logits[label]``.

    The numbers of ``optax.softmax_cross_entropy_with_integer_labels``, with a
    fused derivative: ``softmax(logits) - one_hot(labels)`` computed directly,
    the one-hot made by a comparison rather than a gather and a scatter
    (reverse and forward mode, any order). Computed in float32 (or wider); the
    gradient has the dtype of ``logits``. Take the mean yourself
    (``train_step`` and ``fit`` do).

    A label outside ``[0, classes)`` raises a ``ValueError`` when the labels are
    concrete, and gives a NaN loss and NaN gradient under ``jit``: it never
    trains silently as another class.

    Args:
        logits: ``(..., classes)`` unnormalized log-probabilities.
        labels: ``(...)`` integer class indices in ``[0, classes)``.

    Returns:
        ``(...)`` losses (the shape of ``labels``), float32 (or wider).

    Raises:
        TypeError: a tuple (unpack ``y, state = model.apply(...)``) or
            non-integer labels.
        ValueError: shapes that do not match, or labels out of range.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> loss = nf.softmax_cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))
        >>> print(loss.round(4))  # log(4) each
        [1.3863 1.3863]
        >>> round(float(loss.mean()), 4)
        1.3863
    """
    logits = check_array("softmax_cross_entropy", "logits", logits)
    labels = _check_labels("softmax_cross_entropy", logits, labels)
    return _xent(logits, labels)


def mse(predictions: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Per-element squared error ``(predictions - targets) ** 2`` (``optax.squared_error``).

    Args:
        predictions: any shape.
        targets: the same shape as ``predictions`` (no broadcasting, which would
            silently turn ``(n, 1)`` against ``(n,)`` into an ``(n, n)`` error).

    Returns:
        The errors, shaped like ``predictions``; their mean is the mean squared error.

    Raises:
        TypeError: a tuple (unpack ``y, state = model.apply(...)``).
        ValueError: shapes that differ.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> errors = nf.mse(jnp.array([1.0, 3.0]), jnp.array([0.0, 1.0]))
        >>> errors.tolist(), float(errors.mean())
        ([1.0, 4.0], 2.5)
    """
    predictions = check_array("mse", "predictions", predictions)
    targets = check_array("mse", "targets", targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"mse: predictions {predictions.shape} and targets {targets.shape} "
            "must have the same shape. Fix: reshape one of them (e.g. y[:, None] or "
            "pred[:, 0])."
        )
    return jnp.square(predictions - targets)


def accuracy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Per-example hit: 1.0 where the arg-max class equals the integer label, else 0.0.

    The mean is the accuracy (``eval_step`` and ``fit`` take it). Labels out of
    range are refused or give NaN, as in :func:`softmax_cross_entropy`.

    Args:
        logits: ``(..., classes)`` scores (or probabilities).
        labels: ``(...)`` integer class indices in ``[0, classes)``.

    Returns:
        ``(...)`` float32 zeros and ones (the shape of ``labels``).

    Raises:
        TypeError: a tuple (unpack ``y, state = model.apply(...)``) or
            non-integer labels.
        ValueError: shapes that do not match, or labels out of range.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> hits = nf.accuracy(jnp.array([[0.1, 0.9], [0.8, 0.2]]), jnp.array([1, 1]))
        >>> hits.tolist(), float(hits.mean())
        ([1.0, 0.0], 0.5)
    """
    logits = check_array("accuracy", "logits", logits)
    labels = _check_labels("accuracy", logits, labels)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.where(_in_range(labels, logits.shape[-1]), hits, jnp.nan)
