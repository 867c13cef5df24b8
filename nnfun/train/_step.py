"""The train state and pure step functions that plain ``jax.jit`` compiles.

A batch is a dict ``{"x": inputs, "y": targets}``; either may be any pytree of
arrays (``{"inputs": ..., "lengths": ...}``, a ``(source, target)`` pair). The
model is applied to ``batch["x"]``; the loss and every metric are called as
``fn(outputs, batch["y"])`` and the steps take the mean of what they return
(per-example values, as the built-ins give, or a scalar).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core._layer import Layer, Params, State

LossFn = Callable[[Any, Any], jax.Array]
Metrics = Mapping[str, LossFn]
KeyLike = jax.Array | int


def check_optimizer(where: str, optimizer: Any) -> None:
    """Raises a ``TypeError`` with the fix unless ``optimizer`` has optax's ``init``/``update``."""
    if callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None)):
        return
    if callable(optimizer):
        name = getattr(optimizer, "__name__", type(optimizer).__name__)
        module = getattr(optimizer, "__module__", "") or ""
        call = f"optax.{name}(1e-3)" if module.startswith("optax") else "optax.adam(1e-3)"
        got = f"the function {name!r}, not an optimizer (a factory?)"
        fix = f"call the factory with its settings, e.g. {call}"
    elif isinstance(optimizer, int | float) and not isinstance(optimizer, bool):
        got, fix = f"the number {optimizer!r}", f"pass optax.adam({optimizer!r})"
    else:
        got, fix = type(optimizer).__name__, "pass e.g. optax.adam(1e-3)"
    raise TypeError(
        f"{where}: optimizer must be an optax.GradientTransformation (with init and update), "
        f"got {got}. Fix: {fix}."
    )


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a training run carries from one step to the next, as one pytree.

    Attributes:
        params: the model's parameters (nested dicts of arrays).
        state: the model's state (e.g. batch-norm statistics), ``{}`` if none.
        opt_state: the optax optimizer state.
        step: int32 scalar, the number of optimizer steps taken.
        key: the run's base PRNG key as raw ``uint32`` key data
            (``jax.random.key_data``): a typed key array as a ``jax.jit``
            argument leaves the C++ dispatch path and costs about 75 µs per call.
            It never changes: step ``s`` uses ``fold_in(wrap_key_data(key), s)``,
            so a resumed run draws the same dropout masks as an uninterrupted one.

    Example:
        >>> import jax, jax.numpy as jnp, optax, nnfun as nf
        >>> ts = nf.TrainState.create(nf.Dense(2), optax.sgd(0.1), jax.random.key(0),
        ...                           jnp.zeros((1, 3)))
        >>> int(ts.step), ts.params["kernel"].shape
        (0, (3, 2))
    """

    params: Any
    state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array

    @classmethod
    def create(
        cls,
        model: Layer,
        optimizer: optax.GradientTransformation,
        key: KeyLike,
        x: Any,
    ) -> TrainState:
        """Initialises the model on ``x`` (a spec or an example batch of inputs) and the optimizer.

        Args:
            model: the layer to train.
            optimizer: an optax gradient transformation, e.g. ``optax.adam(1e-3)``
                (called: the factory ``optax.adam`` itself raises a ``TypeError``).
            key: a typed key (``jax.random.key(0)``), raw key data of the default
                PRNG implementation, or an int seed (taken as ``jax.random.key(seed)``).
                It is split in two: one half initialises the parameters, the other
                becomes the run's base key for dropout and other training randomness.
            x: the model's input: a ``jax.ShapeDtypeStruct``, an example batch, or
                a pytree of either (``{"inputs": ..., "lengths": ...}``).

        Returns:
            The state at step 0.

        Raises:
            TypeError: an optimizer factory, a number or another non-optimizer, or
                a key that is neither a key, key data nor an int.
        """
        check_optimizer("TrainState.create", optimizer)
        init_key, run_key = jax.random.split(as_typed_key(key))
        params, state = model.init(init_key, x)
        opt_state = optimizer.init(params)
        step = jnp.zeros((), jnp.int32)
        return cls(params, state, opt_state, step, jax.random.key_data(run_key))

    def replace(self, **changes: Any) -> TrainState:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    TrainState,
    data_fields=["params", "state", "opt_state", "step", "key"],
    meta_fields=[],
)


def as_typed_key(key: KeyLike) -> jax.Array:
    """A typed PRNG key from a typed key, raw key data (default implementation) or an int seed."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    array = cast(jax.Array, key)  # not an int seed: a key, raw key data, or a wrong value
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return array
    if dtype == jnp.uint32 and jnp.ndim(key) >= 1:
        return jax.random.wrap_key_data(array)
    got = f"{type(key).__name__} of dtype {dtype}" if dtype is not None else repr(key)
    raise TypeError(
        f"key must be a PRNG key, raw uint32 key data or an int seed, got {got}. "
        "Fix: pass jax.random.key(seed), or the int seed itself."
    )


def step_key(ts: TrainState) -> jax.Array:
    """The key of the step ``ts.step``: the base key folded with the step number."""
    return jax.random.fold_in(jax.random.wrap_key_data(ts.key), ts.step)


def check_batch(batch: Any) -> None:
    """Raises a ``TypeError`` unless ``batch`` is a dict with ``"x"`` and ``"y"``."""
    if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise TypeError(
            f"expected a batch dict with keys 'x' (inputs) and 'y' (targets), got {got}. "
            'Fix: pass {"x": inputs, "y": targets}.'
        )


def _check_fns(loss_fn: Any, metrics: Metrics | None) -> dict[str, LossFn]:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {loss_fn!r}")
    metrics = dict(metrics or {})
    for name, fn in metrics.items():
        if not callable(fn):
            raise TypeError(f"metric {name!r} must be callable as fn(outputs, targets)")
    if "loss" in metrics:
        raise ValueError("the metric name 'loss' is reserved for loss_fn; rename the metric")
    return metrics


def _measure(
    loss: jax.Array, outputs: Any, targets: Any, metrics: dict[str, LossFn]
) -> dict[str, jax.Array]:
    values = {"loss": loss}
    for name, fn in metrics.items():
        values[name] = jnp.mean(fn(outputs, targets))
    return values


def train_step(
    model: Layer,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    metrics: Metrics | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds a pure ``step(train_state, batch) -> (train_state, metrics)``.

    The function holds no state and calls nothing of ours at run time, so
    ``jax.jit(step, donate_argnums=0)`` compiles it as it is, and
    ``jax.lax.scan`` runs it over stacked batches (see :func:`scan_steps`).

    The step minimises the mean of ``loss_fn(outputs, targets)``: per-example
    losses (the built-ins) and a scalar loss give the same objective.

    Args:
        model: the layer to train; applied with ``train=True`` to ``batch["x"]``.
        loss_fn: ``loss_fn(outputs, targets)`` returning per-example losses or a
            scalar, e.g. :func:`softmax_cross_entropy` or :func:`mse`.
        optimizer: any optax gradient transformation (``optax.adam(1e-3)``, called).
        metrics: optional ``{name: fn(outputs, targets)}`` whose means are reported
            alongside ``"loss"`` (measured on the pre-update parameters).

    Returns:
        ``step(train_state, batch)``; ``batch`` is ``{"x": inputs, "y": targets}``
        with any pytrees of arrays; its metrics are a dict of float scalars (batch
        means), always with ``"loss"``.

    Raises:
        TypeError: a loss, metric or optimizer of the wrong kind (an optimizer
            factory such as ``optax.adam`` that was not called).

    Example:
        >>> import jax, jax.numpy as jnp, optax, nnfun as nf
        >>> model, opt = nf.Dense(1), optax.sgd(0.1)
        >>> ts = nf.TrainState.create(model, opt, jax.random.key(0), jnp.zeros((1, 2)))
        >>> step = jax.jit(nf.train_step(model, nf.mse, opt))
        >>> batch = {"x": jnp.ones((4, 2)), "y": jnp.zeros((4, 1))}
        >>> ts, m = step(ts, batch)
        >>> int(ts.step), sorted(m)
        (1, ['loss'])
    """
    metrics = _check_fns(loss_fn, metrics)
    check_optimizer("train_step", optimizer)

    def step(ts: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        check_batch(batch)
        key = step_key(ts)

        def objective(params: Params) -> tuple[jax.Array, tuple[Any, State]]:
            outputs, state = model.apply(params, ts.state, batch["x"], key=key, train=True)
            return jnp.mean(loss_fn(outputs, batch["y"])), (outputs, state)

        (loss, (outputs, state)), grads = jax.value_and_grad(objective, has_aux=True)(ts.params)
        updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
        params = optax.apply_updates(ts.params, updates)
        new = TrainState(params, state, opt_state, ts.step + 1, ts.key)
        return new, _measure(loss, outputs, batch["y"], metrics)

    return step


def eval_step(
    model: Layer, loss_fn: LossFn, metrics: Metrics | None = None
) -> Callable[[TrainState, Any], dict[str, jax.Array]]:
    """Builds a pure ``evaluate(train_state, batch) -> metrics`` (``train=False``, no key).

    Args:
        model: the layer to evaluate.
        loss_fn: ``loss_fn(outputs, targets)``, per-example values or a scalar.
        metrics: optional ``{name: fn(outputs, targets)}``, likewise.

    Returns:
        ``evaluate(train_state, batch)``; its result is a dict of float scalars, the
        batch means of the loss (``"loss"``) and of each metric.

    Example:
        >>> import jax, jax.numpy as jnp, optax, nnfun as nf
        >>> model = nf.Dense(3)
        >>> ts = nf.TrainState.create(model, optax.sgd(0.1), jax.random.key(0), jnp.zeros((1, 2)))
        >>> evaluate = jax.jit(nf.eval_step(model, nf.softmax_cross_entropy,
        ...                                 {"accuracy": nf.accuracy}))
        >>> sorted(evaluate(ts, {"x": jnp.ones((5, 2)), "y": jnp.zeros(5, jnp.int32)}))
        ['accuracy', 'loss']
    """
    metrics = _check_fns(loss_fn, metrics)

    def evaluate(ts: TrainState, batch: Any) -> dict[str, jax.Array]:
        check_batch(batch)
        outputs, _ = model.apply(ts.params, ts.state, batch["x"], train=False)
        loss = jnp.mean(loss_fn(outputs, batch["y"]))
        return _measure(loss, outputs, batch["y"], metrics)

    return evaluate


def scan_steps(
    step: Callable[[TrainState, Any], tuple[TrainState, Any]],
) -> Callable[[TrainState, Any], tuple[TrainState, Any]]:
    """Turns a step into one that runs K steps over batches stacked on a leading axis.

    ``jax.jit(scan_steps(step))`` is one compiled call for K optimizer steps (a
    ``lax.scan``): the Python dispatch and the host sync are paid once per K
    steps. K is the leading size of the batches, so each K compiles once.

    Args:
        step: a function like the one :func:`train_step` returns.

    Returns:
        ``multi(train_state, batches) -> (train_state, metrics)`` where every leaf
        of ``batches`` has shape ``(K, ...)`` and every metric has shape ``(K,)``.

    Example:
        >>> import jax, jax.numpy as jnp, optax, nnfun as nf
        >>> from nnfun.train import scan_steps
        >>> model, opt = nf.Dense(1), optax.sgd(0.1)
        >>> ts = nf.TrainState.create(model, opt, jax.random.key(0), jnp.zeros((1, 2)))
        >>> multi = jax.jit(scan_steps(nf.train_step(model, nf.mse, opt)))
        >>> ts, m = multi(ts, {"x": jnp.ones((8, 4, 2)), "y": jnp.zeros((8, 4, 1))})
        >>> int(ts.step), m["loss"].shape
        (8, (8,))
    """

    def multi(ts: TrainState, batches: Any) -> tuple[TrainState, Any]:
        return jax.lax.scan(step, ts, batches)

    return multi
