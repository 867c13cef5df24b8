"""The NaN/Inf guard of ``fit``: find where a non-finite loss came from.

The hot loop only looks at the loss it already fetched for the progress bar.
When that loss is not finite, this module replays the failing chunk from the
state before it (steps are deterministic functions of the state and the batch)
and reports the first non-finite leaf of the parameters or of the gradients,
or, first of all, integer labels outside the classes of the model's output
(``softmax_cross_entropy`` and ``accuracy`` give NaN for them under ``jit``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._layer import Layer, Params
from ._labels import label_problem, output_spec
from ._step import LossFn, TrainState, step_key


def _path_str(path: tuple) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def first_nonfinite(tree: Any) -> str | None:
    """The ``"a/b/c"`` path of the first leaf of ``tree`` holding a NaN or an Inf, else None.

    Integer, boolean and key leaves are skipped (they cannot be non-finite).

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.train import first_nonfinite
        >>> first_nonfinite({"a": jnp.ones(2), "b": {"kernel": jnp.array([1.0, jnp.inf])}})
        'b/kernel'
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            continue
        if not _all_finite(leaf):
            return _path_str(path)
    return None


def _all_finite(leaf: Any) -> bool:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        # Sharded across processes: reduce on the devices; the answer is replicated.
        return bool(jnp.all(jnp.isfinite(leaf)))
    return bool(np.all(np.isfinite(np.asarray(leaf))))


def _gradients(model: Layer, loss_fn: LossFn) -> Callable[[TrainState, Any], Params]:
    def grads(ts: TrainState, batch: Any) -> Params:
        key = step_key(ts)

        def objective(params: Params) -> jax.Array:
            outputs, _ = model.apply(params, ts.state, batch["x"], key=key, train=True)
            return jnp.mean(loss_fn(outputs, batch["y"]))

        return jax.grad(objective)(ts.params)

    return jax.jit(grads)


def diagnose(
    model: Layer,
    loss_fn: LossFn,
    step_fn: Callable[[TrainState, Any], tuple[TrainState, Any]],
    before: TrainState,
    batches: list[dict[str, Any]],
    bad: int,
    loss: float,
) -> FloatingPointError:
    """Builds the error for a non-finite loss at the ``bad``-th batch of a chunk.

    Args:
        model: the model being trained.
        loss_fn: its loss.
        step_fn: the jitted single step (not donating), used to replay the chunk.
        before: the train state before the chunk.
        batches: the chunk's batches, in order.
        bad: index in ``batches`` of the first non-finite loss.
        loss: that loss value.

    Returns:
        A ``FloatingPointError`` naming the step and the labels out of range or
        the first non-finite leaf.
    """
    ts = before
    for batch in batches[:bad]:
        ts, _ = step_fn(ts, batch)
    step = int(ts.step)
    where = first_nonfinite(ts.params)
    labels = label_problem(output_spec(model, ts, batches[bad]["x"]), batches[bad]["y"])
    if labels is not None:
        culprit = f"this batch's {labels}"
    elif where is not None:
        culprit = f"the first non-finite leaf is params/{where} (before this step's update)"
    else:
        where = first_nonfinite(_gradients(model, loss_fn)(ts, batches[bad]))
        if where is not None:
            culprit = f"the first non-finite leaf is grads/{where}"
        else:
            culprit = (
                "params and gradients are finite, so check this batch's inputs and targets "
                "(class labels outside [0, classes) give NaN)"
            )
    return FloatingPointError(
        f"fit: non-finite loss ({loss}) at step {step}; {culprit}. Training stopped; the "
        "last checkpoint written (if any) holds finite values. Fix: lower the learning "
        "rate, clip gradients (optax.clip_by_global_norm), clean the data or check that "
        "class labels lie in [0, classes), then rerun; pass nan_guard=False to disable "
        "this check."
    )
