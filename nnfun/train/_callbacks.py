"""Callbacks for ``fit(..., callbacks=[...])``: the protocol, early stopping, an LR finder.

``fit`` calls each callback on the host between compiled calls, with values it
has already fetched for the progress bar, so a callback costs no device sync.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._step import TrainState


class Callback:
    """Hooks ``fit`` calls at the start, after each compiled call, at each evaluation, at the end.

    Subclass it and override the hooks you need; each default does nothing.
    ``on_step`` and ``on_eval`` may return ``True`` to stop training: ``fit``
    then returns the state after that step (not running the call it had
    already queued), saves a checkpoint of it when ``checkpoint_dir`` is set, and
    calls ``on_end``. ``on_end`` may return a ``TrainState`` for ``fit`` to
    return instead (as :class:`EarlyStopping` does to restore the best one).

    With several processes, every process must make the same decision to stop
    (a callback on evaluation metrics does: they are global), or the processes
    run different programs. A callback that raises stops the run; the error
    carries a note naming the callback, the hook and the step. Checkpoints are
    saved after the hooks of their step, so the latest checkpoint on disk is
    from before the failure.

    Attributes:
        every: ``None`` (the default) to be called after every compiled call,
            which may fuse several steps; an int ``n`` to make every step that
            is a multiple of ``n`` end a call, so ``on_step`` sees it (``1``:
            every step, at the cost of fusing none).

    Example:
        >>> import numpy as np, optax, nnfun as nf
        >>> class StopBelow(nf.Callback):
        ...     def on_step(self, train_state, step, metrics):
        ...         return bool(metrics["loss"][-1] < 0.5)  # True stops training
        >>> data = {"x": np.ones((8, 3), np.float32), "y": np.ones((8, 1), np.float32)}
        >>> ts, history = nf.fit(nf.Dense(1), nf.mse, optax.sgd(0.1), data, steps=100,
        ...                      batch_size=8, progress=False, callbacks=[StopBelow()])
        >>> int(ts.step) < 100, float(history["train"]["loss"][-1]) < 0.5
        (True, True)
    """

    every: int | None = None

    def on_start(self, train_state: TrainState, step: int) -> None:
        """Before the first step (``step`` is the resumed step, or 0)."""

    def on_step(
        self, train_state: TrainState, step: int, metrics: Mapping[str, np.ndarray]
    ) -> bool | None:
        """After a compiled call: ``metrics`` maps ``"loss"`` and each metric to the
        values of the call's steps, ``step - len + 1 .. step`` (float arrays, (len,))."""
        return None

    def on_eval(
        self, train_state: TrainState, step: int, metrics: Mapping[str, float]
    ) -> bool | None:
        """After an evaluation at ``step``; ``metrics`` are its means."""
        return None

    def on_end(
        self, train_state: TrainState, step: int, history: Mapping[str, Any]
    ) -> TrainState | None:
        """After the last step; ``history`` is what ``fit`` returns."""
        return None


class EarlyStopping(Callback):
    """Stops when an evaluation metric has not improved for ``patience`` evaluations.

    Needs ``eval_data`` in ``fit``. With ``restore_best``, ``fit`` returns the
    train state of the best evaluation (its ``step`` says which).

    Args:
        monitor: the evaluation metric, ``"loss"`` or a name in ``metrics``.
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        patience: evaluations without improvement before stopping (>= 1).
        min_delta: the least change that counts as an improvement (>= 0).
        restore_best: return the best state instead of the last one.

    Attributes:
        best, best_step: the best value and the step it was reached at.
        stopped_step: the step training stopped at, or ``None`` if it ran to the end.
    """

    def __init__(
        self,
        monitor: str = "loss",
        *,
        mode: str = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be an int >= 1, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"EarlyStopping: min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = float(min_delta), restore_best
        self.on_start(None, 0)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"EarlyStopping({self.monitor!r}, mode={self.mode!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, restore_best={self.restore_best})"
        )

    def on_start(self, train_state: TrainState, step: int) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_step: int | None = None
        self.best_state: TrainState | None = None
        self.stopped_step: int | None = None
        self.waited = 0

    def on_eval(self, train_state: TrainState, step: int, metrics: Mapping[str, float]) -> bool:
        if self.monitor not in metrics:
            raise KeyError(
                f"EarlyStopping: monitor={self.monitor!r} is not an evaluation metric; "
                f"the evaluation reports {sorted(metrics)}. Fix: monitor one of those."
            )
        value = float(metrics[self.monitor])
        gain = self.best - value if self.mode == "min" else value - self.best
        if gain > self.min_delta or self.best_step is None:
            self.best, self.best_step, self.best_state, self.waited = value, step, train_state, 0
            return False
        self.waited += 1
        if self.waited >= self.patience:
            self.stopped_step = step
            return True
        return False

    def on_end(
        self, train_state: TrainState, step: int, history: Mapping[str, Any]
    ) -> TrainState | None:
        return self.best_state if self.restore_best else None


class LearningRateFinder(Callback):
    """The learning-rate range test: the rate grows geometrically until the loss diverges.

    Pass ``finder.schedule`` as the optimizer's learning rate and run ``fit`` for
    ``finder.steps`` steps with the finder as a callback. It records the loss at
    each rate, smoothed (an exponential moving average with bias correction),
    and stops training once the smoothed loss exceeds ``stop_factor`` times its
    minimum. :meth:`suggestion` is a rate a tenth of the one at the minimum,
    a common rule of thumb for where the loss still falls fast.

    Args:
        min_lr, max_lr: the first and the last rate (``0 < min_lr < max_lr``).
        steps: steps from ``min_lr`` to ``max_lr`` (>= 2).
        stop_factor: stop when the smoothed loss exceeds this times its minimum.
        smoothing: the moving average's decay, in ``[0, 1)``.

    Attributes:
        rates, losses: the rate of each step run and its smoothed loss (lists).

    Example:
        >>> import numpy as np, optax, nnfun as nf
        >>> finder = nf.LearningRateFinder(1e-4, 10.0, steps=60)
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
        >>> data = {"x": x, "y": x @ np.ones((4, 1), np.float32)}
        >>> _ = nf.fit(nf.Dense(1), nf.mse, optax.sgd(finder.schedule), data, steps=finder.steps,
        ...            batch_size=64, progress=False, callbacks=[finder])
        >>> len(finder.rates) < 60, 1e-4 < finder.suggestion() < 1.0
        (True, True)
    """

    def __init__(
        self,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        *,
        steps: int = 100,
        stop_factor: float = 4.0,
        smoothing: float = 0.9,
    ):
        if not 0 < min_lr < max_lr:
            raise ValueError(
                f"LearningRateFinder: need 0 < min_lr < max_lr, got {min_lr!r}, {max_lr!r}"
            )
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"LearningRateFinder: steps must be an int >= 2, got {steps!r}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"LearningRateFinder: smoothing must be in [0, 1), got {smoothing}")
        self.min_lr, self.max_lr, self.steps = float(min_lr), float(max_lr), steps
        self.stop_factor, self.smoothing = float(stop_factor), float(smoothing)
        self.on_start(None, 0)  # type: ignore[arg-type]

    def schedule(self, count: Any) -> Any:
        """The rate of optimizer update ``count`` (0-based), an optax schedule."""
        ratio = self.max_lr / self.min_lr
        return self.min_lr * ratio ** (jnp.minimum(count, self.steps - 1) / (self.steps - 1))

    def rate(self, count: int) -> float:
        ratio = self.max_lr / self.min_lr
        return self.min_lr * ratio ** (min(count, self.steps - 1) / (self.steps - 1))

    def on_start(self, train_state: TrainState, step: int) -> None:
        self.rates: list[float] = []
        self.losses: list[float] = []
        self.average = 0.0

    def on_step(
        self, train_state: TrainState, step: int, metrics: Mapping[str, np.ndarray]
    ) -> bool:
        losses = np.asarray(metrics["loss"], np.float64)
        for i, loss in enumerate(losses):
            update = step - len(losses) + i  # 0-based count of the update that gave this loss
            self.average = self.smoothing * self.average + (1 - self.smoothing) * loss
            smoothed = self.average / (1 - self.smoothing ** (len(self.losses) + 1))
            self.rates.append(self.rate(update))
            self.losses.append(float(smoothed))
            if not math.isfinite(smoothed) or smoothed > self.stop_factor * min(self.losses):
                return True
        return False

    def suggestion(self) -> float:
        """A tenth of the rate at which the smoothed loss was lowest."""
        if not self.losses:
            raise ValueError("LearningRateFinder: no steps recorded yet; run fit with it first")
        return self.rates[int(np.nanargmin(self.losses))] / 10
