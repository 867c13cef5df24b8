"""A seeded, resumable minibatch iterator over a dict of pytrees of equal-length arrays."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

Batch = dict[str, Any]


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"Batches: {name} must be an int >= {minimum}, got {value!r}")


def _leaf_name(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _as_leaves(data: Mapping[str, Any]) -> tuple[list[str], list[np.ndarray], Any, int]:
    """``(paths, arrays, treedef, num_examples)`` of ``data``'s leaves, checked."""
    if not isinstance(data, Mapping) or not jax.tree.leaves(data):
        raise ValueError(
            "Batches: data must be a non-empty dict of arrays (or of pytrees of arrays), "
            f"got {type(data).__name__}"
        )
    pairs, treedef = jax.tree_util.tree_flatten_with_path(data)
    names = [_leaf_name(path) for path, _ in pairs]
    arrays = [np.asarray(leaf) for _, leaf in pairs]
    for name, array in zip(names, arrays):
        if array.ndim == 0:
            raise ValueError(
                f"Batches: {name} is a scalar; every array needs a leading example axis. "
                "Fix: give it one example per row; lists and tuples are containers (as in "
                "jax.tree), so a nested list of numbers must be np.asarray(...) first."
            )
    lengths = [len(array) for array in arrays]
    for name, length in zip(names, lengths):
        if length != lengths[0]:
            raise ValueError(
                f"Batches: every array needs the same number of examples (leading axis), "
                f"but {name} has {length} examples, {names[0]} has {lengths[0]}. "
                f"All lengths: {dict(zip(names, lengths))}"
            )
    return names, arrays, treedef, lengths[0]


def _stack_examples(examples: list[Any], where: str) -> Batch:
    """Stacks per-example pytrees into one batch, naming the first leaf whose shape differs."""
    first, treedef = jax.tree_util.tree_flatten_with_path(examples[0])
    for example in examples[1:]:
        pairs, other = jax.tree_util.tree_flatten_with_path(example)
        if other != treedef:  # type: ignore[operator]
            raise ValueError(f"{where}: examples of different structures: {treedef} and {other}")
        for (path, a), (_, b) in zip(first, pairs):
            if np.shape(a) != np.shape(b):
                raise ValueError(
                    f"{where}: {_leaf_name(path)} has shape {np.shape(b)} in one example and "
                    f"{np.shape(a)} in another; a batch stacks equal shapes. Fix: pad or crop "
                    "each example to one shape in the source."
                )
    return jax.tree.map(lambda *leaves: np.stack(leaves), *examples)


class Batches:
    """Seeded minibatches of a dict of pytrees of equal-length arrays, epoch after epoch.

    Epoch ``e`` visits the examples in the order of a permutation drawn from
    ``np.random.default_rng((seed, e))``: it depends only on ``(seed, e)``, never on
    global RNG state or on what was iterated before. That makes a run resumable:
    ``iterate(start)`` yields exactly what a fresh ``iterate(0)`` yields from its
    ``start``-th batch on.

    Args:
        data: a dict whose values are arrays or any pytrees of arrays (dicts,
            tuples, lists, as ``jax.tree`` sees them), e.g.
            ``{"x": {"inputs": (N, T, F), "lengths": (N,)}, "y": (N,)}`` or
            ``{"x": (source, target), "y": labels}``. Every leaf has the same
            leading (example) axis of length N; NumPy or JAX arrays (converted
            with ``np.asarray`` once, here).
        batch_size: examples per batch B.
        seed: non-negative int seeding the permutations.
        shuffle: permute each epoch; with ``False`` every epoch is in data order.
        drop_remainder: drop the last ``N % B`` examples of an epoch (all batches
            then have shape B and a jitted step compiles once); with ``False`` the
            last batch of an epoch is smaller.

    Each batch has the structure of ``data`` with every leaf replaced by
    ``leaf[indices]``, a NumPy array of shape ``(B, *leaf.shape[1:])``. Arrays
    may be ``np.memmap``s: a batch then reads only its rows from disk.

    ``data`` may instead be a random-access source: any object with ``__len__``
    and ``__getitem__(i)`` returning example ``i`` as a pytree (a dict
    ``{"x": ..., "y": ...}`` for ``fit``), such as a class reading one file per
    example; not a list or tuple (those are pytree containers). Batches then
    stack ``source[i]`` for the batch's indices, in the same seeded order, so
    they resume the same way.
    ``iter(batches)`` never ends (it is
    ``iterate(0)``); take one epoch with ``epoch(e)`` or a number of steps with
    ``itertools.islice``.

    Raises:
        ValueError: empty data, a scalar leaf, leaves of different lengths (the
            message names the leaf paths, e.g. ``x/lengths has 7 examples, x/inputs
            has 8``), a non-positive ``batch_size``, or ``batch_size > N`` with
            ``drop_remainder=True`` (no batch at all).

    Example:
        >>> import numpy as np, nnfun.data as nd
        >>> batches = nd.Batches({"x": np.arange(10), "y": -np.arange(10)}, 4, seed=0)
        >>> len(batches)
        2
        >>> [b["x"].shape for b in batches.epoch(0)]
        [(4,), (4,)]
        >>> resumed = next(batches.iterate(start=3))  # epoch 1, batch 1
        >>> bool((resumed["x"] == list(batches.epoch(1))[1]["x"]).all())
        True
        >>> nested = {"x": {"inputs": np.zeros((10, 3, 2)), "lengths": np.arange(10)},
        ...           "y": np.arange(10)}
        >>> batch = next(iter(nd.Batches(nested, 4)))
        >>> batch["x"]["inputs"].shape, batch["x"]["lengths"].shape
        ((4, 3, 2), (4,))
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
    ):
        self.source: Any = None
        self.num_examples: int
        if (
            not isinstance(data, Mapping | list | tuple)
            and hasattr(data, "__getitem__")
            and hasattr(data, "__len__")
        ):
            self.source, self.num_examples = data, len(data)
            if self.num_examples == 0:
                raise ValueError("Batches: the source is empty (len 0)")
        else:
            self.names, self.arrays, self.treedef, self.num_examples = _as_leaves(data)
        _check_count("batch_size", batch_size, 1)
        _check_count("seed", seed, 0)
        if drop_remainder and batch_size > self.num_examples:
            raise ValueError(
                f"Batches: batch_size={batch_size} is larger than the {self.num_examples} "
                f"examples, so drop_remainder=True leaves no batch. Fix: a smaller batch_size "
                f"or drop_remainder=False."
            )
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder

    def __len__(self) -> int:
        """Batches per epoch."""
        whole, remainder = divmod(self.num_examples, self.batch_size)
        return whole + int(remainder > 0 and not self.drop_remainder)

    def __repr__(self) -> str:
        return (
            f"Batches(num_examples={self.num_examples}, batch_size={self.batch_size}, "
            f"seed={self.seed}, shuffle={self.shuffle}, drop_remainder={self.drop_remainder})"
        )

    def order(self, epoch: int) -> np.ndarray:
        """The example indices of ``epoch`` in visiting order, int ``(N,)``."""
        _check_count("epoch", epoch, 0)
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng((self.seed, int(epoch))).permutation(self.num_examples)

    def _batches_of(self, order: np.ndarray, first: int) -> Iterator[Batch]:
        for i in range(first, len(self)):
            indices = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.source is not None:
                examples = [self.source[int(j)] for j in indices]
                yield _stack_examples(examples, f"Batches over {type(self.source).__name__}")
            else:
                yield self.treedef.unflatten([array[indices] for array in self.arrays])

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """An iterator over the ``len(self)`` batches of epoch ``epoch`` (0-based)."""
        return self._batches_of(self.order(epoch), 0)

    def iterate(self, start: int = 0) -> Iterator[Batch]:
        """An endless iterator over all epochs, from global batch index ``start``.

        Batch ``k`` of the stream is batch ``k % len(self)`` of epoch
        ``k // len(self)``, so to resume after ``step`` batches, call
        ``iterate(step)``.
        """
        # Validate now, not at the first next(): a generator body runs lazily.
        _check_count("start", start, 0)
        return self._stream(*divmod(int(start), len(self)))

    def _stream(self, first_epoch: int, first: int) -> Iterator[Batch]:
        yield from self._batches_of(self.order(first_epoch), first)
        for epoch in itertools.count(first_epoch + 1):
            yield from self._batches_of(self.order(epoch), 0)

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(0)
