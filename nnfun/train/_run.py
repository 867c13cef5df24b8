"""The body of ``fit``: queue compiled calls, read each one call late, and between
calls run the NaN guard, history, progress bar, loggers, callbacks, evaluations
and checkpoints. ``fit`` (in ``_fit.py``) checks the arguments and builds this."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ._callbacks import Callback
from ._data import Feed
from ._guard import diagnose
from ._loggers import Logger, find_learning_rate
from ._loop import Checkpoints, Progress, evaluate_all, stack
from ._step import TrainState

# "auto" fuses steps until one call lasts at least this long.
TARGET_CALL_SECONDS = 0.005
MAX_STEPS_PER_CALL = 64
WARMUP_CALLS = 4  # single-step calls timed before choosing (the first one compiles)


class Planner:
    """How many steps the next compiled call runs.

    A fixed K is used as given (a call never crosses a boundary, so remainders
    are shorter). ``"auto"`` times the first single-step calls, then picks the
    power of two K <= 64 that makes a call last >= 5 ms, at most the distance
    between boundaries, provided the run has enough steps left to pay for
    compiling the fused call (estimated by the first call, which compiled the
    single step); remainders before a boundary run as single steps, so only K and
    1 are ever compiled. With several processes ``"auto"`` stays at K=1: each
    process would time its own steps, and all must run the same programs.
    """

    def __init__(self, steps_per_call: int | str, steps: int, bounds: Sequence[int] = ()):
        # Processes choosing different K would run different collectives and hang.
        self.auto = steps_per_call == "auto" and jax.process_count() == 1
        self.k = 1 if steps_per_call == "auto" else int(steps_per_call)
        self.steps = steps
        self.bounds = list(bounds)
        self.times: list[float] = []
        self.decided = not self.auto

    def length(self, step: int, boundary: int) -> int:
        room = boundary - step
        if self.auto and self.k > room:
            return 1
        return min(self.k, room)

    def observe(self, step: int, length: int, seconds: float) -> None:
        if self.decided or length != 1:
            return
        self.times.append(seconds)
        if len(self.times) < WARMUP_CALLS:
            return
        self.decided = True
        compile_seconds, per_step = self.times[0], float(np.median(self.times[1:]))
        if per_step >= TARGET_CALL_SECONDS or (self.steps - step) * per_step < 2 * compile_seconds:
            return
        wanted = math.ceil(math.log2(TARGET_CALL_SECONDS / max(per_step, 1e-7)))
        ahead = [b for b in self.bounds if b > step]
        # Whole intervals between later boundaries; else the room left to the last one.
        gaps = [b - a for a, b in itertools.pairwise(ahead)] or [ahead[0] - step]
        self.k = min([MAX_STEPS_PER_CALL, 2 ** max(wanted, 1), *gaps])


@dataclasses.dataclass
class Call:
    """One queued compiled call: its first step, batches, states and (device) metrics."""

    first: int
    chunk: list[Any]
    before: TrainState
    after: TrainState
    values: dict[str, Any]
    data_state: Any

    @property
    def end(self) -> int:
        return self.first + len(self.chunk)


def hook(callback: Callback, name: str, step: int, *args: Any) -> Any:
    """Calls ``callback.<name>(*args)``; an exception gets a note naming it and the step."""
    try:
        return getattr(callback, name)(*args)
    except Exception as error:
        error.add_note(
            f"fit: callback {type(callback).__name__}.{name} raised at step {step}; training "
            "stopped there (checkpoints already written are intact)."
        )
        raise


@dataclasses.dataclass
class Run:
    """Everything the loop needs; :meth:`run` trains and returns the final state, leaving
    the per-call rows in ``history``."""

    model: Any
    loss_fn: Any
    single: Callable[..., Any]
    fused: Callable[..., Any]
    evaluate: Callable[..., Any]
    to_device: Callable[..., Any]
    feed: Feed
    steps: int
    bounds: list[int]
    planner: Planner
    evals: Any
    eval_every: int | None
    checkpoints: Checkpoints | None
    checkpoint_every: int | None
    nan_guard: bool
    loggers: Sequence[Logger]
    callbacks: Sequence[Callback]
    schedule: Callable[[int], Any] | None
    bar: Progress
    history: dict[str, list[Any]] = dataclasses.field(
        default_factory=lambda: {"train": [], "eval": []}
    )
    last_time: float = 0.0
    has_learning_rate: bool = False

    def run(self, train_state: TrainState) -> TrainState:
        start = int(train_state.step)
        self.has_learning_rate = self.schedule is not None or (
            find_learning_rate(train_state.opt_state) is not None
        )
        for callback in self.callbacks:
            hook(callback, "on_start", start, train_state, start)
        self.last_time = time.perf_counter()
        step, pending = start, None
        bounds = iter(self.bounds)
        boundary = next(bounds)
        while step < self.steps:
            while boundary <= step:
                boundary = next(bounds)
            length = self.planner.length(step, boundary)
            chunk = self.feed.take(length, step, self.steps)
            before = train_state
            train_state, values = self._call(train_state, chunk)
            call = Call(step, chunk, before, train_state, values, self.feed.state)
            if pending is not None and self._record(pending):
                # A callback stopped training after `pending`: drop the call queued since.
                self._save(pending.end, pending.after, pending.data_state)
                return pending.after
            pending, step = call, call.end
            if step != boundary:
                continue
            pending = None
            stop = self._record(call)
            stop = self._boundary(call, stop)
            if stop:
                return train_state
        return train_state

    def _call(self, train_state: TrainState, chunk: list[Any]) -> tuple[TrainState, Any]:
        """Queues one compiled call over ``chunk`` (asynchronous: nothing waits for it)."""
        if len(chunk) == 1:
            return self.single(train_state, self.to_device(chunk[0]))
        return self.fused(train_state, self.to_device(stack(chunk), stacked=True))

    def _record(self, call: Call) -> bool:
        """Reads one call's metrics on the host: NaN guard, history, bar, loggers, callbacks.
        Returns whether a callback asked to stop."""
        values = {name: np.asarray(v).reshape(-1) for name, v in call.values.items()}
        losses = values["loss"]
        if self.nan_guard and not np.all(np.isfinite(losses)):
            bad = int(np.argmax(~np.isfinite(losses)))
            on_device = [self.to_device(b) for b in call.chunk]
            raise diagnose(
                self.model, self.loss_fn, self.single, call.before, on_device, bad, losses[bad]
            )
        steps_done = np.arange(call.first + 1, call.end + 1)
        self.history["train"].append({"step": steps_done, **values})
        self.bar.advance(len(call.chunk), {name: float(v[-1]) for name, v in values.items()})
        now = time.perf_counter()
        seconds, self.last_time = now - self.last_time, now
        self.planner.observe(call.end, len(call.chunk), seconds)
        if self.loggers:
            self._log(call, steps_done, values, seconds)
        stop = False
        for callback in self.callbacks:
            stop |= bool(hook(callback, "on_step", call.end, call.after, call.end, values))
        return stop

    def _log(
        self, call: Call, steps_done: np.ndarray, values: dict[str, Any], seconds: float
    ) -> None:
        rows: dict[str, Any] = {"step": steps_done, **_ordered(values)}
        n = len(steps_done)
        if self.schedule is not None:
            rows["learning_rate"] = np.array([float(self.schedule(s - 1)) for s in steps_done])
        elif self.has_learning_rate:
            rate = float(np.asarray(find_learning_rate(call.after.opt_state)))
            rows["learning_rate"] = np.full(n, rate)
        examples = len(np.atleast_1d(_first_leaf(call.chunk[0])))
        rows["steps_per_second"] = np.full(n, n / seconds)
        rows["examples_per_second"] = np.full(n, n * examples / seconds)
        for logger in self.loggers:
            logger.write("train", rows)

    def _boundary(self, call: Call, stop: bool) -> bool:
        """Evaluates and checkpoints at the end of ``call`` when due; returns whether to stop."""
        end, state = call.end, call.after
        if (
            self.evals is not None
            and self.eval_every
            and (end % self.eval_every == 0 or end == self.steps)
        ):
            result = evaluate_all(self.evaluate, state, self.evals, self.to_device)
            self.history["eval"].append({"step": np.array([end]), **result})
            self.bar.show_eval(result)
            for logger in self.loggers:
                logger.write("eval", {"step": np.array([end]), **_column(_ordered(result))})
                logger.flush()
            for callback in self.callbacks:
                stop |= bool(hook(callback, "on_eval", end, state, end, result))
        due = end == self.steps or bool(self.checkpoint_every and end % self.checkpoint_every == 0)
        if due or stop:
            self._save(end, state, call.data_state)
        return stop

    def _save(self, step: int, state: TrainState, data_state: Any) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(step, state, self.nan_guard, data_state)
            for logger in self.loggers:
                logger.flush()


def _ordered(values: dict[str, Any]) -> dict[str, Any]:
    """``"loss"`` first, then the metrics by name."""
    return {"loss": values["loss"], **{k: values[k] for k in sorted(values) if k != "loss"}}


def _column(values: dict[str, float]) -> dict[str, np.ndarray]:
    return {name: np.array([value]) for name, value in values.items()}


def _first_leaf(tree: Any) -> Any:
    return jax.tree.leaves(tree)[0]
