"""EmbeddingBag: the sum or mean of the embeddings of a variable-length list of ids.

Three input forms, all under the one extras convention (``nnfun.core.EXTRAS``):

- padded: ids ``(batch, bag)``, optionally with ``lengths`` ``(batch,)`` or
  ``mask`` ``(batch, bag)``; padded positions may hold any id (``-1`` is common).
- flat with lengths: ids ``(n,)`` holding the bags one after another, ``lengths``
  ``(batch,)`` (PyTorch's ``offsets`` are ``cumsum(lengths) - lengths``).
- flat with segments: ids ``(n,)`` and ``segments`` ``(n,)``, the bag of each id,
  in ``[0, num_bags)``, any order.

Each form takes optional ``weights`` shaped like the ids. Empty bags are legal
(a user with no history, a movie with no genre): their output is zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import split_inputs
from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error
from ..core._masks import concrete
from ._embedding import lookup

_EXTRAS = frozenset({"lengths", "mask", "segments", "weights"})
_COMBINERS = ("sum", "mean")


class EmbeddingBag(Layer):
    """Pools the embeddings of each bag of ids: ``y[b] = sum_i w_i * embedding[ids_i]``.

    ``combiner="sum"`` adds the (weighted) rows of a bag; ``"mean"`` divides by
    the number of real ids, or by the sum of the weights when ``weights`` are
    given (TensorFlow's weighted mean). An empty bag, or a mean whose weights sum
    to zero, gives a row of zeros.

    Ids of real positions must lie in ``[0, num_embeddings)``. Called eagerly, an
    id outside that range, a negative length, a length past the padded size, a
    flat input whose lengths do not add up to its size, or a segment outside
    ``[0, num_bags)`` raises a ``LayerError``. Under ``jit`` the values are not
    known when the checks would run: an out-of-range id gives its bag NaN (as
    :class:`Embedding` does), a negative length counts as 0, a length past the
    padded size as the padded size, and ids beyond the lengths' total or with an
    out-of-range segment are dropped.

    The table is the param ``embedding``, like :class:`Embedding`'s, so one
    sharding rule (``{"**/embedding": PartitionSpec("model")}``) splits the rows
    of every table across devices.

    Args:
        num_embeddings: number of rows (the vocabulary or catalogue size).
        features: width of each vector.
        combiner: ``"sum"`` or ``"mean"``.
        embedding_init: initializer for the ``(num_embeddings, features)`` table
            (default ``"normal"``, standard deviation 0.01).
        num_bags: the number of output rows of the ``segments`` form (static, as
            ``jax.ops.segment_sum``'s ``num_segments``); unused by the others.

    Shapes: padded ids ``(batch, bag)`` or flat ids ``(n,)`` with extras as above
    -> ``(batch, features)`` (``(num_bags, features)`` for segments).

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> bag = nf.EmbeddingBag(10, 4, combiner="mean")
        >>> x = {"inputs": jnp.array([[1, 2, -1], [3, -1, -1]]), "lengths": jnp.array([2, 1])}
        >>> params, state = bag.init(jax.random.key(0), x)
        >>> y, _ = bag.apply(params, state, x)
        >>> y.shape
        (2, 4)
        >>> flat = {"inputs": jnp.array([1, 2, 3]), "segments": jnp.array([0, 0, 1])}
        >>> y2, _ = nf.EmbeddingBag(10, 4, "mean", num_bags=2).apply(params, state, flat)
        >>> bool(jnp.allclose(y, y2))
        True
    """

    num_embeddings: int
    features: int
    combiner: str = "sum"
    embedding_init: str | Callable[..., Any] = "normal"
    num_bags: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_embeddings", "features"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EmbeddingBag {name} must be a positive int, got {value!r}")
        if self.combiner not in _COMBINERS:
            raise ValueError(
                f"EmbeddingBag combiner must be one of {_COMBINERS}, got {self.combiner!r}"
            )
        if self.num_bags is not None and (not isinstance(self.num_bags, int) or self.num_bags < 1):
            raise ValueError(f"EmbeddingBag num_bags must be a positive int, got {self.num_bags!r}")
        get_initializer(self.embedding_init, "EmbeddingBag embedding_init")

    @property
    def extras(self) -> frozenset[str]:
        return _EXTRAS

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._split(x)
        shape = (self.num_embeddings, self.features)
        return {"embedding": get_initializer(self.embedding_init)(key, shape, jnp.float32)}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        ids, extras = self._split(x)
        table = params["embedding"]
        weights = self._weights(extras, ids, table.dtype)
        if ids.ndim == 2:
            real = self._padded_mask(extras, ids.shape)
            self._check_range(ids, real)
            if real is not None:
                weights = weights * real.astype(table.dtype)
                ids = jnp.where(real, ids, 0)
            rows = lookup(table, ids)
            total = jnp.einsum("bn,bnf->bf", weights, rows)
            return self._combine(total, jnp.sum(weights, axis=1)), state
        segments, bags = self._segments(extras, ids.shape[0])
        self._check_range(ids, None)
        rows = lookup(table, ids)
        total = jax.ops.segment_sum(weights[:, None] * rows, segments, num_segments=bags)
        return self._combine(total, jax.ops.segment_sum(weights, segments, bags)), state

    def _split(self, x: Any) -> tuple[Any, dict[str, Any]]:
        ids, extras = split_inputs(self, x)
        if not hasattr(ids, "dtype") or not jnp.issubdtype(ids.dtype, jnp.integer):
            got = getattr(ids, "dtype", type(ids).__name__)
            raise layer_error(
                self,
                f"expected integer ids, got {got}. Fix: pass ids.astype(jnp.int32), or "
                "{'inputs': ids, 'lengths': lengths} for padded bags.",
            )
        if ids.ndim not in (1, 2):
            raise layer_error(
                self,
                f"expected ids shaped (batch, bag) or flat (n,), got shape {tuple(ids.shape)}. "
                "Fix: reshape to (batch, bag), or flatten and pass 'lengths' or 'segments'.",
            )
        flat = {"lengths", "segments"} & set(extras)
        if ids.ndim == 1 and len(flat) != 1:
            raise layer_error(
                self,
                f"flat ids (n,) need exactly one of 'lengths' (batch,) or 'segments' (n,) to "
                f"say where each bag starts, got extras {sorted(extras)}. Fix: "
                "{'inputs': ids, 'lengths': lengths}; for one id per row use nf.Embedding.",
            )
        if ids.ndim == 2 and "segments" in extras:
            raise layer_error(self, "'segments' go with flat ids (n,), got ids (batch, bag)")
        if "mask" in extras and ids.ndim == 1:
            raise layer_error(self, "'mask' goes with padded ids (batch, bag), got flat ids")
        return ids, extras

    def _weights(self, extras: dict[str, Any], ids: Any, dtype: Any) -> jax.Array:
        if "weights" not in extras:
            return jnp.ones(ids.shape, dtype)
        weights = extras["weights"]
        if tuple(jnp.shape(weights)) != tuple(ids.shape) or not jnp.issubdtype(
            weights.dtype, jnp.floating
        ):
            raise layer_error(
                self,
                f"expected float 'weights' shaped like the ids {tuple(ids.shape)}, got "
                f"{weights.dtype} {tuple(jnp.shape(weights))}.",
            )
        return jnp.asarray(weights, dtype)

    def _padded_mask(self, extras: dict[str, Any], shape: tuple[int, int]) -> jax.Array | None:
        batch, size = shape
        if "mask" in extras and "lengths" in extras:
            raise layer_error(self, "give either 'mask' or 'lengths', not both")
        if "mask" in extras:
            mask = extras["mask"]
            if tuple(jnp.shape(mask)) != (batch, size) or mask.dtype != jnp.bool_:
                raise layer_error(
                    self,
                    f"expected 'mask' of bools shaped ({batch}, {size}), got "
                    f"{mask.dtype} {tuple(jnp.shape(mask))}.",
                )
            return jnp.asarray(mask)
        if "lengths" not in extras:
            return None
        lengths = self._lengths(extras["lengths"], batch)
        values = concrete(lengths)
        if values is not None and values.size and (values.min() < 0 or values.max() > size):
            bad = sorted({int(v) for v in values if not 0 <= v <= size})
            raise layer_error(
                self,
                f"'lengths' must lie in [0, {size}] (0 is an empty bag), got {bad}. Fix: count "
                "the real ids of each bag, at most the padded size.",
            )
        return jnp.arange(size)[None, :] < jnp.asarray(lengths)[:, None]

    def _lengths(self, lengths: Any, batch: int | None) -> Any:
        if jnp.ndim(lengths) != 1 or not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise layer_error(
                self,
                f"expected 'lengths' of ints shaped ({batch or 'batch'},), got "
                f"{lengths.dtype} {tuple(jnp.shape(lengths))}.",
            )
        if batch is not None and jnp.shape(lengths)[0] != batch:
            raise layer_error(self, f"expected 'lengths' shaped ({batch},), got {lengths.shape}")
        return lengths

    def _segments(self, extras: dict[str, Any], n: int) -> tuple[jax.Array, int]:
        if "lengths" in extras:
            lengths = self._lengths(extras["lengths"], None)
            values = concrete(lengths)
            if values is not None and (values.min(initial=0) < 0 or values.sum() != n):
                raise layer_error(
                    self,
                    f"flat ids: 'lengths' must be >= 0 and add up to the {n} ids, got lengths "
                    f"{values.tolist()[:8]} (total {int(values.sum())}).",
                )
            ends = jnp.cumsum(jnp.maximum(lengths, 0))
            return jnp.searchsorted(ends, jnp.arange(n), side="right"), lengths.shape[0]
        segments = extras["segments"]
        if self.num_bags is None:
            raise layer_error(
                self,
                "the 'segments' form needs num_bags, the number of output rows (static under "
                "jit). Fix: nf.EmbeddingBag(..., num_bags=batch), or pass 'lengths' instead.",
            )
        if tuple(jnp.shape(segments)) != (n,) or not jnp.issubdtype(segments.dtype, jnp.integer):
            raise layer_error(
                self,
                f"expected 'segments' of ints shaped ({n},) like the ids, got "
                f"{segments.dtype} {tuple(jnp.shape(segments))}.",
            )
        values = concrete(segments)
        if (
            values is not None
            and values.size
            and not (values.min() >= 0 and values.max() < self.num_bags)
        ):
            raise layer_error(
                self,
                f"'segments' must lie in [0, {self.num_bags}) (num_bags), got values from "
                f"{int(values.min())} to {int(values.max())}. Fix: raise num_bags.",
            )
        return segments, self.num_bags

    def _check_range(self, ids: Any, real: Any) -> None:
        values = concrete(ids)
        if values is None or values.size == 0:
            return  # traced (under jit, grad, vmap) or abstract
        if real is not None:
            mask = concrete(real)
            if mask is None:  # concrete ids closed over by jit, but the mask is traced
                return
            values = values[mask]
        if values.size and (values.min() < 0 or values.max() >= self.num_embeddings):
            raise layer_error(
                self,
                f"expected ids in [0, {self.num_embeddings}), got ids from {int(values.min())} "
                f"to {int(values.max())} at real (unpadded) positions. Fix: num_embeddings must "
                "exceed the largest id, and ids must not be negative.",
            )

    def _combine(self, total: jax.Array, count: jax.Array) -> jax.Array:
        if self.combiner == "sum":
            return total
        safe = jnp.where(count == 0, 1, count)
        return jnp.where((count == 0)[:, None], 0, total / safe[:, None])
