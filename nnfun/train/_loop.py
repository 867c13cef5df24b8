"""The pieces ``fit`` is built from: batching, device placement, evaluation,
the progress bar and checkpoints. Each imports its optional dependency lazily."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from ._guard import first_nonfinite
from ._step import TrainState


def eval_batches(eval_data: Any, batch_size: int) -> Any:
    """``eval_data`` as a ``Batches`` in data order, the last batch shorter.

    Called before training, so an unusable ``eval_data`` fails then, not at the
    first evaluation.
    """
    if not isinstance(eval_data, Mapping) or "x" not in eval_data or "y" not in eval_data:
        got = sorted(eval_data) if isinstance(eval_data, Mapping) else type(eval_data).__name__
        raise TypeError(
            f"fit: eval_data must be one dict {{'x': inputs, 'y': targets}} of arrays (or of "
            f"pytrees of arrays), got {got}. Fix: eval_data={{'x': x_val, 'y': y_val}} (one "
            "evaluation set)."
        )
    from ..data import Batches

    try:
        return Batches(eval_data, batch_size, shuffle=False, drop_remainder=False)
    except ValueError as error:
        error.add_note("(in fit's eval_data)")
        raise


def stack(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks K batches on a new leading axis (on the host; one transfer follows)."""
    first, treedef = jax.tree_util.tree_flatten_with_path(batches[0])
    for index, batch in enumerate(batches[1:], 1):
        leaves, other = jax.tree_util.tree_flatten_with_path(batch)
        same_structure = other == treedef  # type: ignore[operator]
        for (path, a), (_, b) in zip(first, leaves):
            if same_structure and np.shape(a) == np.shape(b):
                continue
            name = jax.tree_util.keystr(path, simple=True, separator="/")
            raise ValueError(
                f"fit: steps_per_call > 1 stacks batches, which needs equal shapes, but "
                f"{name} has shape {np.shape(b) if same_structure else other} in batch "
                f"{index} of a call and {np.shape(a)} in batch 0. Fix: batches of one shape "
                "(Batches(..., drop_remainder=True), padding), or steps_per_call=1."
            )
    return jax.tree.map(lambda *leaves: np.stack(leaves), *batches)


def placer(
    mesh: Any, train_state: TrainState, rules: Any = None
) -> tuple[Callable[..., Any], TrainState]:
    """Returns ``(to_device, train_state)``: how to send a batch, and the placed state.

    ``to_device(batch, stacked=False)`` leaves a batch to the jitted call's own
    transfer (one per call, all K stacked batches together); with a mesh it
    splits the batch axis (axis 1 of stacked batches) over the devices.
    """
    if mesh is None:
        if rules is not None:
            raise ValueError("fit: rules shard the params over a mesh; pass mesh= as well")

        def to_device(batch: Any, stacked: bool = False) -> Any:
            # A jitted call transfers NumPy arguments itself, on its C++ fast path;
            # an explicit jax.device_put costs about 0.3 ms of Python per batch.
            return batch

        return to_device, train_state
    from ..parallel import place_state, shard_batch

    def to_device_sharded(batch: Any, stacked: bool = False) -> Any:
        # Stacked batches are (K, B, ...): split B, the batch axis, over the devices.
        return shard_batch(batch, mesh, batch_dim=1 if stacked else 0)

    return to_device_sharded, place_state(train_state, mesh, rules)


def evaluate_all(
    evaluate: Callable[[TrainState, Any], Mapping[str, Any]],
    train_state: TrainState,
    batches: Any,
    to_device: Callable[..., Any],
) -> dict[str, float]:
    """Example-weighted means of ``evaluate`` over one epoch of ``eval_batches``'s batches."""
    sums: dict[str, float] = {}
    for chunk in batches.epoch(0):
        size = len(jax.tree.leaves(chunk)[0])
        for name, value in jax.device_get(evaluate(train_state, to_device(chunk))).items():
            sums[name] = sums.get(name, 0.0) + float(value) * size
    return {name: value / batches.num_examples for name, value in sums.items()}


class Progress:
    """A tqdm bar (imported only when shown) whose postfix is refreshed at most 10x/s."""

    def __init__(self, enabled: bool, start: int, total: int):
        self.bar = None
        self.postfix: dict[str, str] = {}
        self.last = 0.0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.close()

    def advance(self, steps: int, values: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.postfix.update({k: f"{v:.4f}" for k, v in values.items()})
        now = time.monotonic()
        if now - self.last > 0.1:  # formatting the postfix every step would cost more than a step
            self.last = now
            self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(steps)

    def show_eval(self, values: dict[str, float]) -> None:
        if self.bar is not None:
            self.postfix.update({f"val_{k}": f"{v:.4f}" for k, v in values.items()})
            self.bar.set_postfix(self.postfix)


class Checkpoints:
    """``fit``'s use of ``nnfun.checkpoint.CheckpointManager``: resume and guarded saves."""

    def __init__(self, directory: str, keep: int):
        from ..checkpoint import CheckpointManager

        self.manager = CheckpointManager(directory, keep=keep)

    def resume(self, train_state: TrainState) -> TrainState:
        """The latest checkpoint restored like ``train_state``, or ``train_state`` if none."""
        latest = self.manager.latest_step()
        if latest is None:
            return train_state
        return self.manager.restore(latest, like=train_state)

    def resume_with_data(self, train_state: TrainState) -> tuple[TrainState, Any]:
        """Like :meth:`resume`, with the data iterator state saved beside it (or None)."""
        latest = self.manager.latest_step()
        if latest is None:
            return train_state, None
        raw = self.manager.restore(latest)
        if not (isinstance(raw, Mapping) and "data_state" in raw):
            return self.resume(train_state), None
        data = np.asarray(raw["data_state"])
        like = {"train_state": train_state, "data_state": data}
        restored = self.manager.restore(latest, like=like)["train_state"]
        return restored, json.loads(data.tobytes().decode())

    def save(self, step: int, train_state: TrainState, guard: bool, data_state: Any = None) -> None:
        """Saves ``train_state`` as ``step``; with ``guard``, refuses non-finite params.

        A state whose arrays span processes is saved by every process through Orbax,
        asynchronously (the manager waits before the next save and on leaving ``with``).
        """
        from ..checkpoint._orbax import spans_processes

        host = train_state if spans_processes(train_state) else jax.device_get(train_state)
        if guard:
            where = first_nonfinite(host.params)
            if where is not None:
                raise FloatingPointError(
                    f"fit: params/{where} is non-finite after step {step}; the checkpoint was "
                    "not written, so the previous one stays the latest. Fix: lower the "
                    "learning rate or clip gradients."
                )
        if data_state is not None:  # a grain iterator's state: JSON bytes beside the state
            text = json.dumps(data_state).encode()
            self.manager.save(
                step, {"train_state": host, "data_state": np.frombuffer(text, np.uint8)}
            )
            return
        self.manager.save(step, host)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.manager.close()  # waits until a pending (asynchronous) save is committed
