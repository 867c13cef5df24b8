"""Which kernel computes ``softmax(q k^T / sqrt(d) + mask) v``, chosen by backend or by name.

``MultiHeadAttention(attention_kernel=...)`` (and the blocks and models built on
it) takes one of :data:`ATTENTION_KERNELS`:

- ``"auto"`` (the default): ``"cpu"`` on XLA:CPU; on a GPU ``"cudnn"`` where
  cuDNN's fused attention takes the dtype and shapes (float16/bfloat16, a head
  size that is a multiple of 8 up to 128, a mask only with even lengths) and
  ``"xla"`` otherwise; ``"xla"`` on a TPU and any other backend.
- ``"cpu"``: the formulation tuned for XLA:CPU: :func:`nnfun.ops.causal_attention`
  (blocked, with a custom backward pass) for plain causal self-attention in
  float32/bfloat16, XLA's softmax attention otherwise. Runs on any backend.
- ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")``.
- ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")``, the
  fused flash-attention kernels of cuDNN; needs a GPU and the dtypes and shapes
  above, else a clear error.

Whatever the kernel, dropout on the attention weights (in training) and float64
inputs take a plain softmax written here (the fused functions have no dropout
and compute their softmax in float32); an explicit ``"cudnn"`` with dropout in
training is an error instead. The backend is JAX's default backend at trace
time (``jax.default_backend()``).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from .. import ops
from ..core._layer import Layer, layer_error, require_key

ATTENTION_KERNELS = ("auto", "cpu", "xla", "cudnn")
CUDNN_DTYPES = (jnp.float16, jnp.bfloat16)
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every cuDNN GPU


def check_kernel_name(owner: str, kernel: object) -> None:
    """Raises a ValueError naming ``owner`` unless ``kernel`` is one of ATTENTION_KERNELS."""
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(
            f"{owner} attention_kernel must be one of {ATTENTION_KERNELS}, got {kernel!r}. "
            "Fix: 'auto' picks by backend (the nnfun.layers._attention_kernels docstring)."
        )


def cudnn_obstacle(dtype: jnp.dtype, head_dim: int, q_len: int, k_len: int, masked: bool) -> str:
    """Why cuDNN's fused attention cannot take these inputs, or ``""`` when it can."""
    if dtype not in CUDNN_DTYPES:
        return f"cuDNN fused attention takes float16 or bfloat16, got {jnp.dtype(dtype).name}"
    if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
        return (
            f"cuDNN fused attention needs a head size that is a multiple of 8 and at most "
            f"{CUDNN_MAX_HEAD_DIM}, got {head_dim}"
        )
    if masked and (q_len % 2 or k_len % 2):
        return f"cuDNN takes a mask only with even lengths, got query {q_len} and key {k_len}"
    return ""


def resolve(
    kernel: str,
    backend: str,
    dtype: jnp.dtype,
    head_dim: int,
    q_len: int,
    k_len: int,
    masked: bool,
) -> str:
    """The kernel that runs: ``kernel``, or what ``"auto"`` picks on ``backend``.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.layers._attention_kernels import resolve
        >>> resolve("auto", "gpu", jnp.bfloat16, 64, 128, 128, masked=False)
        'cudnn'
        >>> resolve("auto", "gpu", jnp.float32, 64, 128, 128, masked=False)
        'xla'
        >>> resolve("auto", "cpu", jnp.bfloat16, 64, 128, 128, masked=False)
        'cpu'
    """
    if kernel != "auto":
        return kernel
    if backend == "cpu":
        return "cpu"
    usable = not cudnn_obstacle(dtype, head_dim, q_len, k_len, masked)
    return "cudnn" if backend in ("gpu", "cuda") and usable else "xla"


def _check_cudnn(layer: Layer, q: jax.Array, k: jax.Array, masked: bool, dropout: bool) -> None:
    obstacle = cudnn_obstacle(q.dtype, q.shape[-1], q.shape[1], k.shape[1], masked)
    if dropout:
        obstacle = "cuDNN attention here has no dropout on the attention weights"
    if not obstacle and jax.default_backend() not in ("gpu", "cuda"):
        obstacle = f"it runs on a GPU only and JAX's backend is {jax.default_backend()!r}"
    if obstacle:
        raise layer_error(
            layer,
            f"attention_kernel='cudnn' cannot run these inputs: {obstacle}. Fix: "
            "attention_kernel='auto' (cuDNN where it can, XLA otherwise), or bfloat16 "
            "inputs (nf.MixedPrecision) on a GPU.",
        )


def softmax_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    dropout: float,
    key: jax.Array | None,
) -> jax.Array:
    """Softmax attention in the inputs' dtype, with optional dropout on the weights.

    ``q (B, T, H, D)``, ``k, v (B, S, K, D)``; ``key=None`` means no dropout.
    """
    groups = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if key is not None:
        keep = jax.random.bernoulli(key, 1.0 - dropout, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout), jnp.zeros_like(weights))
    return jnp.einsum("bhts,bshd->bthd", weights, v)


def attend(
    layer: Layer,
    kernel: str,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    causal: bool,
    dropout_rate: float,
    key: jax.Array | None,
) -> jax.Array:
    """Attention of ``q (B, T, H, D)`` over ``k, v (B, S, K, D)`` by ``kernel``.

    ``mask`` broadcasts to ``(B, H, T, S)``, True where a query sees a key;
    ``causal`` adds the causal mask; ``dropout_rate > 0`` drops attention weights
    (then ``key`` is required). ``layer`` names the caller in errors.
    """
    dropout = dropout_rate > 0.0
    chosen = resolve(
        kernel,
        jax.default_backend(),
        q.dtype,
        q.shape[-1],
        q.shape[1],
        k.shape[1],
        mask is not None,
    )
    if chosen == "cudnn" and kernel == "cudnn":
        _check_cudnn(layer, q, k, mask is not None, dropout)
    if dropout or q.dtype == jnp.float64:
        if causal:
            tri = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), jnp.bool_))[None, None]
            mask = tri if mask is None else jnp.logical_and(mask, tri)
        return softmax_attention(
            q, k, v, mask, dropout_rate, require_key(layer, key) if dropout else None
        )
    plain = causal and mask is None and q.shape[1] == k.shape[1]
    if chosen == "cpu" and plain and q.dtype in (jnp.float32, jnp.bfloat16):
        # ops.causal_attention's backward is faster on XLA:CPU (benchmarks/NOTES.md).
        groups = q.shape[2] // k.shape[2]
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        return ops.causal_attention(q, k, v)
    implementation: Literal["cudnn", "xla"] = "cudnn" if chosen == "cudnn" else "xla"
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=causal, implementation=implementation
    )
