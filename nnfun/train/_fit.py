"""``fit``: the training loop with progress bar, evaluation, checkpoints and fused steps."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from ..core import summary
from ..core._layer import Layer
from ._callbacks import Callback
from ._data import Feed, GrainBatches, as_batches, first_batch
from ._labels import check_labels, classifies
from ._loggers import Logger, config_of, find_hyperparams
from ._loop import Checkpoints, Progress, eval_batches, placer
from ._run import Planner, Run, hook
from ._step import (
    LossFn,
    Metrics,
    TrainState,
    check_batch,
    check_optimizer,
    eval_step,
    scan_steps,
    train_step,
)

# The jitted single step, the jitted fused steps and the jitted evaluation.
_Compiled = tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]


def _check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"fit: {name} must be a positive int, got {value!r}")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        dtype = getattr(seed, "dtype", None)
        got = f"an array of dtype {dtype}" if dtype is not None else repr(seed)
        error = ValueError if isinstance(seed, int | np.integer) else TypeError
        raise error(
            f"fit: seed must be a non-negative int, got {got}. It seeds the parameters, "
            "dropout and the batch order; to start from a given key, pass "
            "train_state=nf.TrainState.create(model, optimizer, key, x)."
        )


def _labels(train_data: Any, first: Any, eval_data: Any) -> dict[str, Any]:
    """The labels ``fit`` checks: all of a dict's, else the first batch's."""
    labels = {"train_data['y']": train_data["y"]} if isinstance(train_data, Mapping) else {}
    labels = labels or {"the first batch's 'y'": first["y"]}
    if eval_data is not None:
        labels["eval_data['y']"] = eval_data["y"]
    return labels


def _boundaries(steps: int, every: tuple[int | None, ...]) -> list[int]:
    """Sorted steps at which a call must end: evaluations, checkpoints and the last step."""
    points = {steps}
    for interval in every:
        if interval:
            points.update(range(interval, steps, interval))
    return sorted(points)


def _jit_all(
    model: Layer, loss_fn: LossFn, optimizer: optax.GradientTransformation, metrics: Any
) -> _Compiled:
    step_fn = train_step(model, loss_fn, optimizer, metrics)
    evaluate = eval_step(model, loss_fn, metrics)
    return jax.jit(step_fn), jax.jit(scan_steps(step_fn)), jax.jit(evaluate)


_cached_jit_all = functools.lru_cache(maxsize=16)(_jit_all)


def _compiled(
    model: Layer,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    metrics: Metrics | None,
) -> _Compiled:
    """The jitted single step, fused steps and evaluation; the same objects (so nothing
    recompiles) when ``fit`` is called again with the same model, loss, optimizer object
    and metrics, as in a notebook that trains a little more."""
    items = tuple(sorted((metrics or {}).items()))
    try:
        return _cached_jit_all(model, loss_fn, optimizer, items)
    except TypeError:  # something unhashable: compile afresh
        return _jit_all(model, loss_fn, optimizer, dict(items))


def fit(
    model: Layer,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    train_data: Any,
    *,
    steps: int,
    batch_size: int | None = None,
    seed: int = 0,
    train_state: TrainState | None = None,
    metrics: Metrics | None = None,
    eval_data: Mapping[str, Any] | None = None,
    eval_every: int | None = None,
    eval_batch_size: int = 1000,
    steps_per_call: int | str = "auto",
    progress: bool = True,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    keep: int = 3,
    nan_guard: bool = True,
    mesh: Any = None,
    rules: Any = None,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
    schedule: Callable[[int], Any] | None = None,
    prefetch: int | None = None,
) -> tuple[TrainState, dict[str, dict[str, np.ndarray]]]:
    """Trains ``model`` for ``steps`` optimizer steps and returns ``(train_state, history)``.

    Batches are ``{"x": inputs, "y": targets}``, where either may be any pytree
    of arrays (``{"x": {"inputs": X, "lengths": L}, "y": Y}``); the loss and
    metrics are ``fn(outputs, targets)``, per-example or scalar, and their means
    are reported (see :func:`train_step`). Step ``s`` uses
    batch ``s`` of ``Batches.iterate`` and the dropout key ``fold_in(key, s)``,
    so a run is a pure function of its seed, and a resumed run ends bitwise equal
    to an uninterrupted one.

    ``steps_per_call=K`` runs K steps in one compiled call (``lax.scan`` over K
    batches stacked and sent to the device together). A call never crosses an
    evaluation, a checkpoint or the last step, so when those intervals are not
    multiples of K the shorter remainder calls compile once more each (at most
    one extra compile per distinct remainder; all of them happen in the first
    interval). K=1 and K=16 give the same parameters (see the tests). On CPU,
    K > 1 also makes XLA allocate its scratch buffer once per call instead of
    once per step (the GPT benchmark's step: 157 -> 116 ms at K=5;
    ``benchmarks/NOTES.md``, phase 4).

    ``steps_per_call="auto"`` (the default) times the first four single-step
    calls and then fuses the power of two K <= 64 that makes a call last at least
    5 ms (at most the distance between evaluations, checkpoints and callbacks'
    ``every``), when the steps left repay compiling the fused call (so short runs
    and slow steps keep K=1); before a boundary it runs the remainder as single
    steps, so only K and 1 compile. Where the fused and the single program give the same
    bits (the dense and convolutional nets in the tests), the result is bitwise
    that of K=1; where XLA compiles the scanned step differently (a GRU: about
    1e-6 apart), K depends on the timing, so pass an int for a run that must be
    reproducible to the bit. With several processes, ``"auto"`` runs one step
    per call (each process would time its own steps, and all must run the same
    programs); pass an int there to fuse.

    ``fit`` reads a call's metrics only after queueing the next call, so its host
    work (gathering batches, the progress bar) overlaps the device's compute.

    The NaN/Inf guard (``nan_guard=True``) costs nothing per step: it looks at the
    losses already fetched for the progress bar (one call late, see above). On a
    non-finite loss it replays the failing call from the state before it, raises
    ``FloatingPointError`` naming the step and the first non-finite leaf of the
    params or gradients (or labels outside the model's classes, which give NaN),
    and leaves the last checkpoint (always finite) in place.

    Before the first step, when ``loss_fn`` or a metric is
    :func:`softmax_cross_entropy` or :func:`accuracy`, integer labels are checked
    against the width of the model's output (``jax.eval_shape``, no FLOPs): all
    of ``train_data["y"]`` when it is a dict (else the first batch's) and all of
    ``eval_data["y"]``.

    Args:
        model: the layer to train.
        loss_fn: ``loss_fn(outputs, targets)``, per-example values or a scalar.
        optimizer: an optax gradient transformation, called: ``optax.adam(1e-3)``.
        train_data: a dict ``{"x": inputs, "y": targets}`` whose values are arrays
            (``np.memmap`` too) or pytrees of arrays with N examples on the leading
            axis of every leaf, or a random-access source (``__len__``, and
            ``__getitem__(i)`` returning example ``i`` as such a dict): batched with
            ``nnfun.data.Batches(train_data, batch_size, seed=seed)``, resumed
            exactly. Or, with ``batch_size=None``: any object with
            ``iterate(start)`` and ``len()`` such as a ``Batches``; a ``grain``
            ``MapDataset``/``IterDataset`` of batches, whose iterator state is saved
            with each checkpoint so a resumed run continues the same batches; any
            iterable or generator of batches (a resumed run skips the first
            ``step`` batches of it).
        steps: total optimizer steps (counted from 0, including resumed ones).
        batch_size: examples per batch; required when ``train_data`` is a dict.
        seed: a non-negative int; seeds the parameters (``jax.random.key(seed)``),
            dropout and the batch order.
        train_state: start from this state instead of ``TrainState.create``.
        metrics: ``{name: fn(outputs, targets)}``; their means are reported with
            the loss.
        eval_data: one dict ``{"x": inputs, "y": targets}`` of arrays or pytrees
            of arrays, checked before the first step and evaluated
            (``train=False``) every ``eval_every`` steps and at the end.
        eval_every: steps between evaluations; default one epoch.
        eval_batch_size: examples per evaluation call (metrics are example-weighted).
        steps_per_call: K optimizer steps per compiled call, or ``"auto"`` (above).
        progress: show a tqdm bar with the loss and the latest evaluation.
        checkpoint_dir: save the train state here (``nnfun.checkpoint``) and
            resume from its latest checkpoint when it has one.
        checkpoint_every: steps between checkpoints (default: only at the end).
        keep: how many checkpoints to keep.
        nan_guard: stop on a non-finite loss (see above).
        mesh: a ``jax.sharding.Mesh`` for data parallelism: the state is placed
            with ``nnfun.parallel.place_state`` and batches are split over it.
            With several processes (``nnfun.parallel.initialize``), each passes
            its own share of the data, and checkpoints go through Orbax: every
            process writes its shards, asynchronously (see
            ``nnfun.checkpoint.CheckpointManager``).
        rules: sharding rules for the params on ``mesh`` (``place_state``'s
            ``{glob: PartitionSpec}``); ``None`` replicates them.
        loggers: metric writers (:class:`CSVLogger`, :class:`JSONLinesLogger`,
            :class:`TensorBoardLogger` or a :class:`Logger` of your own), opened
            before the first step (an unwritable directory fails there) and
            flushed at each evaluation and checkpoint. Train rows carry the loss,
            the metrics, the learning rate (when ``schedule`` is given or the
            optimizer is built with ``optax.inject_hyperparams``; the latter gives
            the rate of a call's last step to all its steps), steps per second and
            examples per second (per call; the first call's includes compiling).
        callbacks: :class:`Callback` objects called between compiled calls with
            values already fetched (no extra device sync); see :class:`Callback`
            for stopping and errors.
        schedule: the optimizer's learning-rate schedule ``count -> rate``, for
            the loggers.
        prefetch: batches a background thread reads ahead of the training loop,
            so a slow source (files, a generator) overlaps the compute; 0 reads
            them in the loop. Default: 0 for a dict of in-memory arrays (gathering
            takes microseconds, and the thread's hand-offs would cost more), 2 for
            everything else (memmaps, sources, iterables, grain).

    Returns:
        ``(train_state, history)``: ``history["train"]`` maps ``"step"`` and each
        metric to ``(steps_run,)`` arrays (the step number after each update);
        ``history["eval"]`` does the same per evaluation. A resumed run's history
        starts at the resumed step.

    Raises:
        ValueError: bad intervals or counts, a dict without ``batch_size``, leaves
            of different lengths (named by path, e.g. ``x/lengths``), labels out
            of range (see above).
        TypeError: an optimizer factory not called (``optax.adam`` for
            ``optax.adam(1e-3)``), a number as optimizer, a seed that is no int
            (a negative one is a ``ValueError``), data that is not a dict of arrays.
        FloatingPointError: the guard found a non-finite loss.
        OSError: a logger's directory cannot be written (before training).

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, optax, nnfun as nf
        >>> data = {"x": np.ones((8, 3), np.float32), "y": np.zeros((8, 1), np.float32)}
        >>> ts, history = nf.fit(nf.Dense(1), nf.mse, optax.sgd(0.1), data, steps=4,
        ...                      batch_size=4, progress=False)
        >>> int(ts.step), history["train"]["loss"].shape
        (4, (4,))
    """
    _check_positive("steps", steps)
    if steps_per_call != "auto":
        _check_positive("steps_per_call", steps_per_call)
    _check_positive("eval_every", eval_every, allow_none=True)
    _check_positive("checkpoint_every", checkpoint_every, allow_none=True)
    _check_positive("eval_batch_size", eval_batch_size)
    if prefetch is None:
        prefetch = 0 if _in_memory(train_data) else 2
    _check_prefetch(prefetch)
    _check_seed(seed)
    check_optimizer("fit", optimizer)
    loggers, callbacks = _check_hooks(loggers, callbacks)
    batches = as_batches(train_data, batch_size, seed)
    evals = None
    if eval_data is not None:
        evals = eval_batches(eval_data, eval_batch_size)
        if eval_every is None:
            eval_every = _epoch_length(batches)

    check_labels_first = classifies(loss_fn, metrics)
    if train_state is None or check_labels_first or loggers:
        first = first_batch(batches)
        check_batch(first)
    if train_state is None:
        train_state = TrainState.create(model, optimizer, jax.random.key(seed), first["x"])
    if check_labels_first:
        check_labels(model, train_state, first["x"], _labels(train_data, first, eval_data))
    to_device, train_state = placer(mesh, train_state, rules)
    checkpoints = Checkpoints(checkpoint_dir, keep) if checkpoint_dir is not None else None
    if checkpoints is not None:  # restored onto the placed state's shardings
        if isinstance(batches, GrainBatches):
            train_state, batches.resume_state = checkpoints.resume_with_data(train_state)
        else:
            train_state = checkpoints.resume(train_state)

    single, fused, evaluate = _compiled(model, loss_fn, optimizer, metrics)
    start = int(train_state.step)
    every = (eval_every if eval_data is not None else None, checkpoint_every)
    bounds = _boundaries(steps, every + tuple(c.every for c in callbacks))
    if loggers:
        settings = {
            "steps": steps, "batch_size": batch_size, "seed": seed, "start": start,
            "steps_per_call": steps_per_call, "eval_every": eval_every,
            "checkpoint_every": checkpoint_every, "loss": _name(loss_fn),
            "metrics": {name: _name(fn) for name, fn in (metrics or {}).items()},
            "optimizer": _name(optimizer), "model": model,
            "optimizer_hyperparams": {
                name: np.asarray(value).tolist()
                for name, value in find_hyperparams(train_state.opt_state).items()
            },
        }  # fmt: skip
        for logger in loggers:  # before training: an unwritable directory fails here
            logger.open(config_of(settings), _summary_text(model, first["x"]))
    feed = Feed(batches, start, prefetch)
    run = Run(
        model, loss_fn, single, fused, evaluate, to_device, feed, steps, bounds,
        Planner(steps_per_call, steps, bounds), evals,
        eval_every if eval_data is not None else None, checkpoints, checkpoint_every,
        nan_guard, loggers, callbacks, schedule, Progress(progress, start, steps),
    )  # fmt: skip
    try:
        with run.bar, checkpoints or contextlib.nullcontext():
            train_state = run.run(train_state)
    finally:
        feed.close()
        for logger in loggers:
            logger.close()
    names = ["step", "loss", *sorted(metrics or {})]
    history = {part: _concat(rows, names) for part, rows in run.history.items()}
    final = int(train_state.step)
    for callback in callbacks:
        replacement = hook(callback, "on_end", final, train_state, final, history)
        if replacement is not None:
            train_state = replacement
    return train_state, history


def _in_memory(train_data: Any) -> bool:
    """Whether ``train_data`` is a dict whose leaves are all arrays in memory (no memmap)."""
    if not isinstance(train_data, Mapping):
        return False
    leaves = jax.tree.leaves(train_data)
    return all(
        isinstance(a, np.ndarray | jax.Array) and not isinstance(a, np.memmap) for a in leaves
    )


def _check_prefetch(prefetch: Any) -> None:
    if isinstance(prefetch, bool) or not isinstance(prefetch, int | np.integer) or prefetch < 0:
        raise ValueError(f"fit: prefetch must be an int >= 0 (batches read ahead), got {prefetch}")


def _check_hooks(loggers: Any, callbacks: Any) -> tuple[list[Logger], list[Callback]]:
    """``loggers`` and ``callbacks`` as lists, each item checked for its methods."""
    checked = []
    for kind, items, methods in (
        ("loggers", loggers, ("open", "write", "flush", "close")),
        ("callbacks", callbacks, ("on_start", "on_step", "on_eval", "on_end")),
    ):
        if not isinstance(items, list | tuple):
            raise TypeError(f"fit: {kind} must be a list, got {type(items).__name__}")
        for item in items:
            missing = [m for m in methods if not callable(getattr(item, m, None))]
            if missing:
                base = "nf.Logger" if kind == "loggers" else "nf.Callback"
                raise TypeError(
                    f"fit: {kind} item {item!r} lacks {missing}. Fix: subclass {base} (its "
                    "methods default to doing nothing)."
                )
        every = [getattr(item, "every", None) for item in items if kind == "callbacks"]
        for value in every:
            _check_positive("a callback's every", value, allow_none=True)
        checked.append(list(items))
    return checked[0], checked[1]


def _epoch_length(batches: Any) -> int:
    try:
        return len(batches)
    except TypeError:
        raise ValueError(
            "fit: eval_every defaults to one epoch, but train_data has no length (an "
            "iterable or generator of batches). Fix: pass eval_every=<steps>."
        ) from None


def _name(thing: Any) -> str:
    return str(getattr(thing, "__name__", None) or type(thing).__name__)


def _summary_text(model: Layer, x: Any) -> str:
    try:
        return str(summary(model, jax.tree.map(lambda a: a[:1], x)))
    except Exception as error:  # the summary is informative only; never stop a run for it
        return f"{model!r}\n(summary unavailable: {error})"


def _concat(rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Joins per-call rows into one array per name (empty arrays when nothing ran)."""
    if not rows:
        return {name: np.zeros((0,), np.int64 if name == "step" else np.float32) for name in names}
    return {name: np.concatenate([np.atleast_1d(r[name]) for r in rows]) for name in names}
