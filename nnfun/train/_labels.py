"""``fit``'s check of class labels against the width of the model's output.

A label outside ``[0, classes)`` gives a NaN loss under ``jit``; ``fit`` looks
at the labels before the first step instead, when its loss or a metric is
:func:`softmax_cross_entropy` or :func:`accuracy` (our classification
functions: a user's own loss may give integer targets another meaning), and the
NaN guard looks again, whatever the loss, when a loss turns out non-finite.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ..core._layer import Layer, Params, State
from ._losses import accuracy, out_of_range, softmax_cross_entropy
from ._step import LossFn, TrainState


def classifies(loss_fn: LossFn, metrics: Mapping[str, LossFn] | None) -> bool:
    """Whether ``fit`` checks labels: the loss or a metric is one of ours that classifies."""
    fns = [loss_fn, *(metrics or {}).values()]
    return any(fn in (softmax_cross_entropy, accuracy) for fn in fns)


def _outputs(model: Layer, treedef: Any, leaves: tuple) -> Any:
    def apply(params: Params, state: State, inputs: Any) -> Any:
        return model.apply(params, state, inputs, train=False)[0]

    return jax.eval_shape(apply, *jax.tree.unflatten(treedef, leaves))


# Tracing the model costs milliseconds, a few percent of a short fit call (the
# overhead benchmark's 96 steps); a notebook that calls fit again reuses the spec.
_cached_outputs = functools.lru_cache(maxsize=16)(_outputs)


def output_spec(model: Layer, train_state: TrainState, x: Any) -> Any:
    """The shape and dtype of ``model``'s output on ``x`` (``jax.eval_shape``: no FLOPs)."""
    specs = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
        (train_state.params, train_state.state, x),
    )
    leaves, treedef = jax.tree.flatten(specs)
    try:
        return _cached_outputs(model, treedef, tuple(leaves))
    except TypeError:  # an unhashable model: trace afresh
        return _outputs(model, treedef, tuple(leaves))


def _width(spec: Any, labels: Any) -> int | None:
    """The number of classes if ``spec`` and ``labels`` look like logits and class labels."""
    if not isinstance(spec, jax.ShapeDtypeStruct) or len(spec.shape) < 1:
        return None
    shape, dtype = getattr(labels, "shape", None), getattr(labels, "dtype", None)
    if shape is None or dtype is None or not jnp.issubdtype(dtype, jnp.integer):
        return None
    if tuple(shape[1:]) != tuple(spec.shape[1:-1]):  # the batch sizes may differ
        return None
    return spec.shape[-1]


def _shape(spec: jax.ShapeDtypeStruct) -> str:
    return "(" + ", ".join(["batch", *(str(n) for n in spec.shape[1:])]) + ")"


def label_problem(spec: Any, labels: Any) -> str | None:
    """Names the labels outside ``[0, width)`` of the logits ``spec``, or None."""
    width = _width(spec, labels)
    if width is None:
        return None
    bad = out_of_range(labels, width)
    if bad is None:
        return None
    shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    widen = ""
    if bad.max() >= width:
        widen = f", or give the model one output per class (a last Dense({int(bad.max()) + 1}))"
    return (
        f"labels hold {shown}, outside [0, {width}): the model's output {_shape(spec)} "
        f"has {width} classes on its last axis, and softmax_cross_entropy and accuracy give "
        f"NaN for such labels. Fix: map the labels to 0..{width - 1}{widen}"
    )


def check_labels(model: Layer, train_state: TrainState, x: Any, labels: dict[str, Any]) -> None:
    """Raises a ``ValueError`` if any of ``labels`` (``{where: y}``) is out of range."""
    spec = output_spec(model, train_state, x)
    for where, y in labels.items():
        problem = label_problem(spec, y)
        if problem is not None:
            raise ValueError(f"fit: {where}: {problem}.")
