"""Causal scaled dot-product attention with a backward pass shaped for XLA:CPU.

Two measured facts drive this formulation (``benchmarks/NOTES.md``):

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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _causal_mask(t):
    return jnp.tril(jnp.ones((t, t), bool))[None]


def _forward(q, k, v):
    """q (already scaled), k, v: (n, t, d) -> output (n, t, d) and probabilities (n, t, t)."""
    scores = jnp.where(_causal_mask(q.shape[1]), q @ k.swapaxes(1, 2), -1e30)
    probs = jax.nn.softmax(scores, axis=-1)
    return probs @ v, probs


@jax.custom_vjp
def _core(q, k, v):
    return _forward(q, k, v)[0]


def _core_fwd(q, k, v):
    out, probs = _forward(q, k, v)
    return out, (q, k, v, probs)


def _core_bwd(res, g):
    q, k, v, probs = res
    mask_t = _causal_mask(q.shape[1]).swapaxes(1, 2)
    # The where() materialises the transpose (see the module docstring).
    dv = jnp.where(mask_t, probs.swapaxes(1, 2), 0.0) @ g
    dprobs = g @ v.swapaxes(1, 2)
    dscores = probs * (dprobs - jnp.sum(dprobs * probs, axis=-1, keepdims=True))
    dq = dscores @ k
    dk = jnp.where(mask_t, dscores.swapaxes(1, 2), 0.0) @ q
    return dq, dk, dv


_core.defvjp(_core_fwd, _core_bwd)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """``softmax(q k^T / sqrt(head_dim) + causal mask) v``, per example and head.

    Query ``i`` attends to keys ``0..i``. Computed in float32 (or wider); the
    result has the dtype of ``q``. The same numbers as
    ``jax.nn.dot_product_attention(q, k, v, is_causal=True)``, formulated so
    that the backward pass is fast on XLA:CPU.

    Args:
        q: ``(batch, time, heads, head_dim)`` queries.
        k: ``(batch, time, heads, head_dim)`` keys.
        v: ``(batch, time, heads, head_dim)`` values.

    Returns:
        ``(batch, time, heads, head_dim)``.

    Raises:
        ValueError: if the shapes of ``q``, ``k`` and ``v`` differ or are not 4-D.

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
    b, t, h, d = q.shape
    dtype = jnp.promote_types(q.dtype, jnp.float32)

    def heads_first(a):
        return a.astype(dtype).transpose(0, 2, 1, 3).reshape(b * h, t, d)

    out = _core(heads_first(q) * (1.0 / np.sqrt(d)), heads_first(k), heads_first(v))
    return out.reshape(b, h, t, d).transpose(0, 2, 1, 3).astype(q.dtype)
