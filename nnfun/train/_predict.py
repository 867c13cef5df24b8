"""``evaluate`` and ``predict``: batched, compiled once, over any of fit's data forms.

Arrays and random-access sources are cut into ``batch_size`` batches in data
order; the last one is padded to ``batch_size`` (and the padding masked out),
so one compiled program serves every batch. Iterables (generators, grain
datasets) are taken batch by batch as they come.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._layer import Layer, Params, State
from ._step import Metrics


def _kind(data: Any) -> str:
    """``"arrays"`` (a pytree of arrays: dict, tuple, array), ``"source"`` (random access
    per example) or ``"iterable"`` (batches: a list, a generator, a grain dataset)."""
    if isinstance(data, Mapping | tuple) or hasattr(data, "shape"):
        return "arrays"
    if type(data).__module__.split(".")[0] == "grain" or isinstance(data, list):
        return "iterable"
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not hasattr(data, "iterate"):
        return "source"
    return "iterable"


def _padded(tree: Any, size: int) -> Any:
    """Repeats the last example so every leaf has ``size`` rows."""
    return jax.tree.map(
        lambda a: np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)]), tree
    )


def _batches(data: Any, batch_size: int, pad: bool) -> Iterator[tuple[Any, int]]:
    """``(batch, count)`` pairs in data order: ``count`` real examples lead ``batch``."""
    kind = _kind(data)
    if kind != "iterable":
        from ..data import Batches

        wrapped = {"data": data} if kind == "arrays" else data
        batches = Batches(wrapped, batch_size, shuffle=False, drop_remainder=False)
        for batch in batches.epoch(0):
            batch = batch["data"] if kind == "arrays" else batch
            count = len(jax.tree.leaves(batch)[0])
            yield (_padded(batch, batch_size) if pad and count < batch_size else batch), count
        return
    stream = data.epoch(0) if hasattr(data, "epoch") else iter(data)
    for batch in stream:
        yield batch, len(jax.tree.leaves(batch)[0])


def _weighted(values: jax.Array, count: jax.Array) -> jax.Array:
    """The sum over the first ``count`` examples of per-example values, or a scalar x count."""
    if values.ndim == 0:
        return values * count
    per_example = values.reshape(values.shape[0], -1).mean(axis=1)
    return jnp.sum(jnp.where(jnp.arange(per_example.shape[0]) < count, per_example, 0.0))


@functools.lru_cache(maxsize=16)
def _evaluator(model: Layer, metrics: tuple[tuple[str, Callable[..., Any]], ...]) -> Any:
    def sums(params: Params, state: State, batch: Any, count: jax.Array) -> dict[str, jax.Array]:
        outputs, _ = model.apply(params, state, batch["x"], train=False)
        return {name: _weighted(fn(outputs, batch["y"]), count) for name, fn in metrics}

    return jax.jit(sums)


@functools.lru_cache(maxsize=16)
def _predictor(model: Layer) -> Any:
    return jax.jit(lambda params, state, x: model.apply(params, state, x, train=False)[0])


def _per_example(model: Layer, metrics: Any, params: Params, state: State, batch: Any) -> bool:
    """Whether every metric returns per-example values (shapes only: no FLOPs)."""

    def values(params: Params, state: State, batch: Any) -> list[jax.Array]:
        outputs, _ = model.apply(params, state, batch["x"], train=False)
        return [fn(outputs, batch["y"]) for _, fn in metrics]

    return all(v.ndim > 0 for v in jax.eval_shape(values, params, state, batch))


def _check_batch_size(where: str, batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")


def evaluate(
    model: Layer,
    params: Params,
    state: State,
    data: Any,
    metrics: Metrics,
    *,
    batch_size: int = 1000,
) -> dict[str, float]:
    """The example-weighted mean of each metric over ``data``, with ``train=False``.

    Args:
        model: the layer.
        params, state: its parameters and state (``train_state.params``, ``.state``).
        data: a dict ``{"x": inputs, "y": targets}`` of arrays (or pytrees of
            arrays) with N examples on the leading axis, a random-access source
            of such examples, or an iterable of such batches (a generator, a grain
            dataset, a ``nnfun.data.Batches``: one epoch of it).
        metrics: ``{name: fn(outputs, targets)}``, per-example values (padding is
            masked out) or a scalar per batch (weighted by the batch size); pass
            the loss as one of them, e.g. ``{"loss": nf.softmax_cross_entropy}``.
        batch_size: examples per compiled call for arrays and sources.

    Returns:
        ``{name: float}``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, nnfun as nf
        >>> model = nf.Dense(1)
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> data = {"x": np.ones((5, 2), np.float32), "y": np.zeros((5, 1), np.float32)}
        >>> out = nf.evaluate(model, params, state, data, {"mse": nf.mse}, batch_size=2)
        >>> bool(np.isclose(out["mse"], float(((np.ones((1, 2)) @ params["kernel"]) ** 2).sum())))
        True
    """
    _check_batch_size("evaluate", batch_size)
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError(
            f"evaluate: metrics must be a non-empty dict {{name: fn(outputs, targets)}}, got "
            f"{metrics!r}. Fix: e.g. {{'loss': nf.softmax_cross_entropy, 'accuracy': nf.accuracy}}"
        )
    for name, fn in metrics.items():
        if not callable(fn):
            raise TypeError(f"evaluate: metric {name!r} must be callable as fn(outputs, targets)")
    items = tuple(sorted(metrics.items()))
    try:
        compiled = _evaluator(model, items)
    except TypeError:  # something unhashable: compile for this call
        compiled = _evaluator.__wrapped__(model, items)
    totals: dict[str, float] = dict.fromkeys(dict(items), 0.0)
    seen = 0
    per_example = None  # whether every metric gives per-example values (then pad)
    for batch, count in _batches(data, batch_size, pad=False):
        if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise TypeError(f"evaluate: batches must be dicts {{'x': ..., 'y': ...}}, got {got}")
        if per_example is None:
            per_example = _per_example(model, items, params, state, batch)
        if per_example and _kind(data) != "iterable" and count < batch_size:
            batch = _padded(batch, batch_size)
        sums = jax.device_get(compiled(params, state, batch, np.int32(count)))
        for name, value in sums.items():
            totals[name] += float(value)
        seen += count
    if seen == 0:
        raise ValueError("evaluate: data holds no examples")
    return {name: value / seen for name, value in totals.items()}


def predict(
    model: Layer,
    params: Params,
    state: State,
    inputs: Any,
    *,
    batch_size: int = 1000,
) -> Any:
    """The model's outputs (``train=False``) for every example of ``inputs``, in order.

    Args:
        model: the layer.
        params, state: its parameters and state.
        inputs: the model's input (an array or a pytree of arrays, N on the
            leading axis), a random-access source of single inputs, or an
            iterable of input batches; a batch that is a dict with ``"x"`` (fit's
            data) contributes its ``"x"``.
        batch_size: examples per compiled call for arrays and sources (the last
            batch is padded, so one program serves all).

    Returns:
        The outputs of all N examples, concatenated on the leading axis (a pytree
        if the model returns one), as NumPy arrays.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, nnfun as nf
        >>> model = nf.Dense(3)
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 2)))
        >>> nf.predict(model, params, state, np.ones((5, 2), np.float32), batch_size=2).shape
        (5, 3)
    """
    _check_batch_size("predict", batch_size)
    compiled = _predictor(model)
    outputs, counts = [], []
    for batch, count in _batches(inputs, batch_size, pad=True):
        if isinstance(batch, Mapping) and "x" in batch:
            batch = batch["x"]
        outputs.append(jax.device_get(compiled(params, state, batch)))
        counts.append(count)
    if not outputs:
        raise ValueError("predict: inputs hold no examples")
    return jax.tree.map(
        lambda *leaves: np.concatenate([a[:n] for a, n in zip(leaves, counts)]), *outputs
    )
