"""The data forms ``fit`` takes, and the host-side prefetch that overlaps them with compute.

Every form becomes an object with ``iterate(start)`` (batches from global batch
``start`` on) and, when it knows it, ``__len__`` (batches per epoch):

* a dict of arrays, or a random-access source (``__len__`` and ``__getitem__``
  per example) with ``batch_size``: ``nnfun.data.Batches``, seeded and resumable;
* an object with ``iterate`` and ``__len__`` (a ``Batches``): itself;
* a ``grain`` ``MapDataset``/``IterDataset`` of batches: :class:`GrainBatches`,
  whose iterator state goes into fit's checkpoints;
* any other iterable or generator of batches: :class:`IterableBatches`.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any


def _is_grain(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "grain" and hasattr(data, "to_iter_dataset")


def _is_grain_iterable(data: Any) -> bool:
    module = type(data).__module__.split(".")[0]
    return module == "grain" and callable(getattr(data, "__iter__", None))


class IterableBatches:
    """Any iterable of batches. A resumed run skips the first ``start`` batches of a
    fresh ``iter(data)``; a one-shot iterator (a generator) is read only once."""

    def __init__(self, data: Any):
        self.data = data
        self.head: list[Any] = []  # what first() read from a one-shot iterator

    def first(self) -> Any:
        if iter(self.data) is not self.data:
            return next(iter(self.data))
        if not self.head:
            self.head.append(next(self.data))
        return self.head[0]

    def iterate(self, start: int = 0) -> Iterator[Any]:
        stream = iter(self.data)
        if stream is self.data:
            stream = itertools.chain(self.head, stream)
            self.head = []
        return itertools.islice(stream, start, None)


class GrainBatches:
    """A grain dataset of batches; ``state()`` is the iterator's state after the
    batches read so far, which ``fit`` saves with its checkpoints."""

    def __init__(self, dataset: Any):
        self.length = len(dataset) if hasattr(dataset, "__len__") else None
        self.dataset = dataset.to_iter_dataset() if hasattr(dataset, "to_iter_dataset") else dataset
        self.iterator: Any = None
        self.resume_state: Any = None

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("a grain IterDataset has no length")
        return self.length

    def iterate(self, start: int = 0) -> Iterator[Any]:
        iterator = iter(self.dataset)
        if start > 0:
            if self.resume_state is None:
                raise ValueError(
                    f"fit: resuming at step {start} from a checkpoint that holds no grain "
                    "iterator state, so the data cannot continue where it stopped. Fix: "
                    "resume from a checkpoint written by fit with this grain dataset, or "
                    "start afresh in an empty checkpoint_dir."
                )
            if not callable(getattr(iterator, "set_state", None)):
                raise TypeError(
                    f"fit: the grain iterator {type(iterator).__name__} has no set_state, so "
                    "a resumed run cannot continue the data. Fix: use a grain "
                    "MapDataset/IterDataset pipeline (their iterators are checkpointable)."
                )
            iterator.set_state(self.resume_state)
        self.iterator = iterator
        return iterator

    def state(self) -> Any:
        return self.iterator.get_state()


def as_batches(train_data: Any, batch_size: int | None, seed: int) -> Any:
    """``train_data`` in one of the forms above (see the module docstring)."""
    if _is_grain(train_data) or _is_grain_iterable(train_data):
        if batch_size is not None:
            raise ValueError(
                "fit: batch_size is set, but a grain dataset is batched by grain. Fix: "
                "dataset.batch(batch_size) in the grain pipeline and batch_size=None."
            )
        return GrainBatches(train_data)
    if hasattr(train_data, "iterate") and hasattr(train_data, "__len__"):
        return train_data
    from ..data import Batches

    is_source = (
        not isinstance(train_data, list | tuple)
        and hasattr(train_data, "__getitem__")
        and hasattr(train_data, "__len__")
    )
    if isinstance(train_data, Mapping) or (batch_size is not None and is_source):
        if batch_size is None:
            raise ValueError("fit: batch_size is required when train_data is a dict of arrays")
        return Batches(train_data, batch_size, seed=seed)
    iterable = callable(getattr(train_data, "__iter__", None))
    if batch_size is not None or not iterable:
        got = type(train_data).__name__
        got += f" with batch_size={batch_size}" if iterable else ""
        raise TypeError(
            "fit: train_data must be a dict {'x': ..., 'y': ...} of arrays (or of pytrees of "
            "arrays) or a random-access source of examples (__len__, __getitem__) with "
            "batch_size; or, with batch_size=None, an iterable or generator of batches (a "
            f"list of batch dicts), a nnfun.data.Batches or a grain dataset; got {got}"
        )
    return IterableBatches(train_data)


def first_batch(batches: Any) -> Any:
    """The first batch, without losing it from a one-shot iterator."""
    if hasattr(batches, "first"):
        return batches.first()
    return next(batches.iterate(0))


_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Feed:
    """Batches for the steps from ``start`` on, read ``prefetch`` batches ahead by a thread.

    ``take(n, step)`` returns the next ``n`` batches; ``state`` is the source's
    state (grain) after the last batch taken, so a checkpoint saved now resumes
    exactly, however far the thread has read ahead.
    """

    def __init__(self, batches: Any, start: int, prefetch: int):
        self.stateful = isinstance(batches, GrainBatches)
        self.batches = batches
        self.stream = batches.iterate(start)
        self.start = start
        self.taken = 0
        self.state: Any = None
        self.queue: queue.Queue[Any] | None = None
        self.stop = threading.Event()
        if prefetch > 0:
            self.queue = queue.Queue(maxsize=prefetch)
            self.thread = threading.Thread(target=self._fill, daemon=True, name="nnfun-prefetch")
            self.thread.start()

    def _read(self) -> Any:
        batch = next(self.stream, _END)
        if batch is _END:
            return _END
        return batch, (self.batches.state() if self.stateful else None)

    def _fill(self) -> None:
        assert self.queue is not None
        while not self.stop.is_set():
            try:
                item = self._read()
            except BaseException as error:  # handed to the training thread, raised there
                item = _Failure(error)
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if item is _END or isinstance(item, _Failure):
                return

    def _next(self) -> Any:
        if self.queue is None:
            return self._read()
        item = self.queue.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    def take(self, n: int, step: int, steps: int) -> list[Any]:
        chunk = []
        for _ in range(n):
            item = self._next()
            if item is _END:
                raise ValueError(
                    f"fit: train_data ended after {self.taken} batches (from step "
                    f"{self.start}), so {step} of steps={steps} steps ran. Fix: pass "
                    f"steps={step} or fewer, or data that repeats (itertools.cycle, a "
                    "generator over epochs, grain's dataset.repeat())."
                )
            self.taken += 1
            chunk.append(item[0])
            self.state = item[1]
        return chunk

    def close(self) -> None:
        self.stop.set()
        if self.queue is not None:
            self.thread.join(timeout=5)
