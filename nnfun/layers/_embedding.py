"""Embedding: a lookup table of learned vectors, with a tied output projection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error


def lookup(table: jax.Array, ids: Any) -> jax.Array:
    """Rows ``table[ids]``, NaN rows for ids outside ``[0, len(table))``, negative ones too.

    A gather in fill mode with NumPy's wrapping of negative indices turned off
    (``jnp.take`` wraps ``-1`` to the last row, even in fill mode). In the
    backward pass the rows of out-of-range ids are dropped from the scatter.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.layers._embedding import lookup
        >>> lookup(jnp.eye(2), jnp.array([1, -1])).tolist()
        [[0.0, 1.0], [nan, nan]]
    """
    table = jnp.asarray(table)
    return table.at[ids].get(mode="fill", fill_value=jnp.nan, wrap_negative_indices=False)


class Embedding(Layer):
    """Maps integer ids to learned vectors: ``y[..., :] = embedding[ids[...], :]``.

    Ids must lie in ``[0, num_embeddings)``. Called eagerly, an id outside that
    range raises a ``LayerError``; under ``jit`` the ids are not known when the
    check would run, so such an id, negative ones included, gives a row of NaN
    instead of silently reading a clamped or wrapped-around row (NumPy reads
    ``table[-1]`` as the last row), and the mistake shows up in the loss.

    :meth:`attend` is the tied output projection of a language model:
    ``logits = x @ embedding.T``.

    Args:
        num_embeddings: vocabulary size.
        features: width of each vector.
        embedding_init: initializer name or ``jax.nn.initializers`` function for
            the ``(num_embeddings, features)`` table (default ``"normal"``,
            standard deviation 0.01).

    Shapes: ``apply``: int ``(...) -> (..., features)``; ``attend``:
    ``(..., features) -> (..., num_embeddings)``; param ``embedding`` of shape
    ``(num_embeddings, features)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> emb = nf.Embedding(10, 4)
        >>> ids = jnp.array([[1, 2, 3]])
        >>> params, state = emb.init(jax.random.key(0), ids)
        >>> y, _ = emb.apply(params, state, ids)
        >>> y.shape, emb.attend(params, y).shape
        ((1, 3, 4), (1, 3, 10))
    """

    num_embeddings: int
    features: int
    embedding_init: str | Callable[..., Any] = "normal"

    def __post_init__(self) -> None:
        for name in ("num_embeddings", "features"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Embedding {name} must be a positive int, got {value!r}")
        get_initializer(self.embedding_init, "Embedding embedding_init")

    def _check_ids(self, x: Any) -> None:
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise layer_error(
                self,
                f"expected integer ids, got dtype {x.dtype} (shape {tuple(x.shape)}). "
                "Fix: pass token ids, e.g. ids.astype(jnp.int32).",
            )

    def _check_range(self, x: Any) -> None:
        if isinstance(x, jax.core.Tracer) or not hasattr(x, "__array__") or x.size == 0:
            return  # traced (under jit, grad, vmap) or abstract: no values to check
        ids = np.asarray(x)
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.num_embeddings:
            raise layer_error(
                self,
                f"expected ids in [0, {self.num_embeddings}), got ids from {low} to {high} "
                f"(shape {tuple(ids.shape)}). Fix: num_embeddings must exceed the largest "
                "id (the vocabulary size), and ids must not be negative.",
            )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check_ids(x)
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
    ) -> tuple[Any, State]:
        self._check_ids(x)
        self._check_range(x)
        table = params["embedding"]
        return lookup(table, x), state

    def attend(self, params: Params, x: jax.Array) -> jax.Array:
        """Tied output projection: scores of ``x`` against every embedding vector.

        Args:
            params: this layer's params (``{"embedding": (num_embeddings, features)}``).
            x: ``(..., features)`` float array.

        Returns:
            ``(..., num_embeddings)``: ``x @ embedding.T``.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> params = {"embedding": jnp.eye(3)}
            >>> nf.Embedding(3, 3).attend(params, jnp.array([[0.0, 2.0, 0.0]])).tolist()
            [[0.0, 2.0, 0.0]]
        """
        table = params["embedding"]
        if x.ndim < 1 or x.shape[-1] != table.shape[1]:
            raise layer_error(
                self,
                f"attend expected (..., {table.shape[1]}) to match the embedding table "
                f"{tuple(table.shape)}, got {tuple(x.shape)}.",
            )
        # A 2-D product: XLA:CPU differentiates it much faster than a batched one.
        logits = jnp.dot(x.reshape(-1, x.shape[-1]), table.T)
        return logits.reshape(*x.shape[:-1], table.shape[0])
