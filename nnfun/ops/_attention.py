"""Causal scaled dot-product attention with a backward pass shaped for XLA:CPU.

Three measured facts drive this formulation (``benchmarks/NOTES.md``):

- Batched products with one leading batch axis, ``(batch * heads, time,
  head_dim)``, are faster on XLA:CPU than products batched over two axes in the
  ``(batch, time, heads, head_dim)`` layout.
- Autodiff of ``p @ v`` and ``s = q @ k^T`` gives ``p^T @ g`` and ``ds^T @ q``:
  products that contract the leading (non-minor) axis of their left operand.
  XLA folds a plain transpose into such a product, and XLA:CPU runs that form
  about 5x slower than the same product on a row-major operand. The custom
  backward pass below writes the transposed operand through a ``where`` with
  the (transposed) causal mask, which XLA cannot fold away, so every product in
  the backward pass takes the fast path.
- Half of a causal score matrix is masked out. The queries are split into
  blocks of about ``BLOCK`` rows, and query block ``i`` is scored only against
  the keys up to the block's end. At 128 steps (two blocks) that skips a
  quarter of the score matrix's products, softmax and storage; the number
  approaches a half as the sequence grows.

The backward pass also takes the softmax correction term ``sum_j p_ij dp_ij``
as ``g_i . out_i`` (the same number, since ``out_i = sum_j p_ij v_j``): a
reduction over ``head_dim`` instead of over the keys.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Query rows per block. Measured on the GPT benchmark (benchmarks/NOTES.md).
BLOCK = 64

# What the forward pass saves for the backward pass: q, k, v, the output, the probabilities.
_Residuals = tuple[jax.Array, jax.Array, jax.Array, jax.Array, tuple[jax.Array, ...]]


def _bounds(t: int, block: int) -> tuple[int, ...]:
    """Block boundaries ``0 = b_0 < b_1 < ... < b_n = t``, blocks of nearly equal size."""
    n = max(1, round(t / block))
    return tuple(int(b) for b in np.linspace(0, t, n + 1).round())


def _visible(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The causal mask as a constant: ``[i, j]`` is True where query ``i`` sees key ``j``."""
    return keys[None, :] <= queries[:, None]


def _forward(
    q: jax.Array, k: jax.Array, v: jax.Array, bounds: tuple[int, ...]
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """q (already scaled), k, v: (n, t, d) -> output (n, t, d) and one probability
    block (n, e - s, e) per query block [s, e)."""
    outs, probs = [], []
    for s, e in itertools.pairwise(bounds):
        scores = q[:, s:e] @ k[:, :e].swapaxes(1, 2)
        scores = jnp.where(_visible(np.arange(s, e), np.arange(e))[None], scores, -1e30)
        p = jax.nn.softmax(scores, axis=-1)
        outs.append(p @ v[:, :e])
        probs.append(p)
    return jnp.concatenate(outs, axis=1), tuple(probs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _core(q: jax.Array, k: jax.Array, v: jax.Array, bounds: tuple[int, ...]) -> jax.Array:
    return _forward(q, k, v, bounds)[0]


def _core_fwd(
    q: jax.Array, k: jax.Array, v: jax.Array, bounds: tuple[int, ...]
) -> tuple[jax.Array, _Residuals]:
    out, probs = _forward(q, k, v, bounds)
    return out, (q, k, v, out, probs)


def _columns_transposed(
    row_blocks: Sequence[jax.Array], s: int, e: int, seen: np.ndarray
) -> jax.Array:
    """Columns [s, e) of the stacked row blocks, transposed and row-major: (n, e - s, rows).

    The where() materialises the transpose (see the module docstring).
    """
    rows = jnp.concatenate([b[:, :, s:e] for b in row_blocks], axis=1)
    return jnp.where(seen, rows.swapaxes(1, 2), 0.0)


def _core_bwd(bounds: tuple[int, ...], res: _Residuals, g: jax.Array) -> tuple[jax.Array, ...]:
    q, k, v, out, probs = res
    blocks = list(itertools.pairwise(bounds))
    t = bounds[-1]
    correction = jnp.sum(g * out, axis=-1, keepdims=True)  # sum_j p_ij dp_ij
    dq, dscores = [], []
    for (s, e), p in zip(blocks, probs):
        dp = g[:, s:e] @ v[:, :e].swapaxes(1, 2)
        ds = p * (dp - correction[:, s:e])
        dq.append(ds @ k[:, :e])
        dscores.append(ds)
    dk, dv = [], []
    for j, (s, e) in enumerate(blocks):
        # Key block [s, e) is seen by queries s..t-1 (query blocks j, j+1, ...).
        seen = _visible(np.arange(s, t), np.arange(s, e)).T[None]
        dv.append(_columns_transposed(probs[j:], s, e, seen) @ g[:, s:])
        dk.append(_columns_transposed(dscores[j:], s, e, seen) @ q[:, s:])
    return tuple(jnp.concatenate(parts, axis=1) for parts in (dq, dk, dv))


_core.defvjp(_core_fwd, _core_bwd)


def causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, block: int | None = None
) -> jax.Array:
    """``softmax(q k^T / sqrt(head_dim) + causal mask) v``, per example and head.

    Query ``i`` attends to keys ``0..i``. Computed in float32 (or wider); the
    result has the dtype of ``q``. The same numbers as
    ``jax.nn.dot_product_attention(q, k, v, is_causal=True)``, formulated so
    that the backward pass is fast on XLA:CPU.

    Args:
        q: ``(batch, time, heads, head_dim)`` queries.
        k: ``(batch, time, heads, head_dim)`` keys.
        v: ``(batch, time, heads, head_dim)`` values.
        block: query rows per block (module docstring); ``None`` takes
            ``BLOCK`` (64). The result does not depend on it, only the speed.

    Returns:
        ``(batch, time, heads, head_dim)``.

    Raises:
        ValueError: if the shapes of ``q``, ``k`` and ``v`` differ or are not 4-D,
            or ``block`` is not a positive integer.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.ops import causal_attention
        >>> q = k = v = jax.random.normal(jax.random.key(0), (2, 5, 4, 8))
        >>> out = jax.jit(causal_attention)(q, k, v)
        >>> out.shape, bool(jnp.allclose(out[:, 0], v[:, 0]))  # step 0 sees only itself
        ((2, 5, 4, 8), True)
    """
    if q.ndim != 4 or not q.shape == k.shape == v.shape:
        raise ValueError(
            "causal_attention expected q, k and v of one shape (batch, time, heads, "
            f"head_dim), got {q.shape}, {k.shape} and {v.shape}. Fix: split heads "
            "with reshape(batch, time, heads, head_dim) and repeat grouped k/v heads."
        )
    block = BLOCK if block is None else block
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"causal_attention expected block to be a positive int, got {block!r}.")
    b, t, h, d = q.shape
    dtype = jnp.promote_types(q.dtype, jnp.float32)

    def heads_first(a: jax.Array) -> jax.Array:
        return a.astype(dtype).transpose(0, 2, 1, 3).reshape(b * h, t, d)

    scaled = heads_first(q) * (1.0 / np.sqrt(d))
    out = _core(scaled, heads_first(k), heads_first(v), _bounds(t, int(block)))
    return out.reshape(b, h, t, d).transpose(0, 2, 1, 3).astype(q.dtype)
