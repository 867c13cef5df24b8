"""Multi-head attention with grouped-query heads, masks, rotary positions and a KV cache."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, init_child, split_inputs
from ..core._layer import Layer, Params, State, layer_error
from ..core._masks import concrete, sequence_mask
from ._attention_kernels import attend, check_kernel_name
from ._dense import Dense
from ._position import RotaryPositions

_CACHE_KEYS = {"key", "value", "index"}
_EXTRAS = frozenset(
    {"mask", "lengths", "attention_mask", "memory", "memory_mask", "memory_lengths"}
)


class MultiHeadAttention(Layer):
    """Scaled dot-product attention over ``num_heads`` heads, with q/k/v/out projections.

    The input is ``x`` ``(batch, time, features)`` (self-attention) or a dict
    holding it as ``"inputs"`` with the extras of the layer contract
    (``nnfun.core.EXTRAS``), all optional:

    - ``"mask"`` ``(batch, time)`` bools or ``"lengths"`` ``(batch,)`` ints: the
      padding of ``inputs``; in self-attention padded keys are not attended to.
    - ``"memory"`` ``(batch, memory_time, memory_features)``: cross-attention,
      keys and values come from it; ``"memory_mask"`` or ``"memory_lengths"``
      give its padding.
    - ``"attention_mask"``: bools broadcastable to ``(batch, heads, query_time,
      key_time)``, True where a query may attend to a key.

    Padded query rows are computed like the others; they never change a real row.

    Decoding: ``init_cache(params, batch, max_length)`` returns a KV cache; pass it
    as ``state`` and feed one (or a few) new positions at a time. Each call writes
    the new keys and values at the cache's ``index`` and attends to everything
    written so far; the outputs equal those of the full causal forward pass. A
    ``mask`` then spans the cache's ``max_length`` positions.

    Args:
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention); must divide
            ``num_heads``. Default ``num_heads``; 1 gives multi-query attention.
        qkv_features: total query width ``num_heads * head_dim`` (default: the
            input width); must be divisible by ``num_heads``.
        out_features: output width (default: the query's input width).
        use_bias: biases in the four projections.
        out_bias: a bias in the output projection; default ``use_bias`` (Qwen2
            has query/key/value biases but none on the output).
        dropout: dropout rate on the attention weights (in training).
        causal: position ``t`` attends only to positions ``<= t``.
        rotary: a :class:`RotaryPositions` applied to queries and keys, or None.
        attention_kernel: what computes the attention: ``"auto"`` (by backend:
            the path tuned for XLA:CPU on CPU, cuDNN's fused attention on a GPU
            where dtype and shapes allow, XLA otherwise), ``"cpu"``, ``"xla"``
            or ``"cudnn"``; the numbers agree to rounding. On ``"cpu"`` causal
            self-attention without a mask, dropout or cache, in float32 or
            bfloat16, runs :func:`nnfun.ops.causal_attention` (a custom VJP:
            reverse mode only). Dropout and float64 take a plain softmax with
            every kernel. Details: ``nnfun.layers._attention_kernels``.

    Shapes: ``(batch, time, features) -> (batch, time, out_features)``. Params:
    ``query``, ``key``, ``value``, ``out``, each ``{"kernel", "bias"}``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> attn = nf.MultiHeadAttention(num_heads=4, num_kv_heads=2, causal=True)
        >>> params, state = attn.init(jax.random.key(0), jnp.zeros((2, 5, 16)))
        >>> params["key"]["kernel"].shape
        (16, 8)
        >>> attn.apply(params, state, jnp.ones((2, 5, 16)))[0].shape
        (2, 5, 16)
    """

    num_heads: int
    num_kv_heads: int | None = None
    qkv_features: int | None = None
    out_features: int | None = None
    use_bias: bool = True
    dropout: float = 0.0
    causal: bool = False
    rotary: Any = None
    attention_kernel: str = "auto"
    out_bias: bool | None = None

    def __post_init__(self) -> None:
        name = "MultiHeadAttention"
        check_kernel_name(name, self.attention_kernel)
        if not isinstance(self.num_heads, int) or self.num_heads < 1:
            raise ValueError(f"{name} num_heads must be a positive int, got {self.num_heads!r}")
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"{name} num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}"
            )
        if self.qkv_features is not None and self.qkv_features % self.num_heads:
            raise ValueError(
                f"{name}: num_heads={self.num_heads} does not divide qkv_features="
                f"{self.qkv_features}; pick a width that is a multiple of the head count"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{name} dropout must be in [0, 1), got {self.dropout!r}")
        if self.rotary is not None and not isinstance(self.rotary, RotaryPositions):
            raise TypeError(f"{name} rotary must be a RotaryPositions or None")

    @property
    def _out_bias(self) -> bool:
        return self.use_bias if self.out_bias is None else self.out_bias

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def extras(self) -> frozenset[str]:
        return _EXTRAS

    def _inputs(self, x: Any, cached_memory: bool = False) -> tuple[Any, Any, dict[str, Any]]:
        """``(query input, key/value input, extras)``, checked."""
        if isinstance(x, tuple | list) or (isinstance(x, dict) and "inputs" not in x):
            got = f"a {type(x).__name__} of {len(x)}" if not isinstance(x, dict) else sorted(x)
            raise layer_error(
                self,
                f"expected an array (self-attention) or a dict with 'inputs' and optional "
                f"extras {sorted(_EXTRAS)}; got {got}. Fix: {{'inputs': q, 'memory': kv}} "
                "for cross-attention.",
            )
        q, extras = split_inputs(self, x)
        kv = extras.get("memory", q)
        for name, a in (("inputs", q), ("memory", kv)):
            if len(a.shape) != 3:
                raise layer_error(
                    self, f"expected {name} of shape (batch, time, features), got {a.shape}"
                )
        if kv.shape[0] != q.shape[0]:
            raise layer_error(
                self,
                f"inputs have batch {q.shape[0]} but memory has batch {kv.shape[0]}; "
                "cross-attention pairs each sequence with its own memory. Fix: give both "
                "the same batch size.",
            )
        memory_padding = {"memory_mask", "memory_lengths"} & set(extras)
        if "memory" not in extras and memory_padding and not cached_memory:
            raise layer_error(self, "memory_mask/memory_lengths given without a memory")
        return q, kv, extras

    def _projections(self, q: Any) -> dict[str, Dense]:
        width = self.qkv_features or q.shape[-1]
        if width % self.num_heads:
            raise layer_error(
                self,
                f"num_heads={self.num_heads} does not divide the attention width {width}. "
                "Fix: choose num_heads dividing the model width, or set qkv_features.",
            )
        kv_width = width // self.num_heads * self.kv_heads
        return {
            "query": Dense(width, self.use_bias),
            "key": Dense(kv_width, self.use_bias),
            "value": Dense(kv_width, self.use_bias),
            "out": Dense(self.out_features or q.shape[-1], self._out_bias),
        }

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        q, kv, extras = self._inputs(x)
        dense = self._projections(q)
        params = {}
        for name, a in (("query", q), ("key", kv), ("value", kv)):
            params[name], _, _ = init_child(name, dense[name], key, a)
        spec = jax.ShapeDtypeStruct((*q.shape[:2], dense["query"].features), q.dtype)
        params["out"], _, _ = init_child("out", dense["out"], key, spec)
        cross = "memory" in extras
        self._mask(extras, q.shape[0], q.shape[1], kv.shape[1], cross)  # checks shapes at init
        return params, {}

    def _mask(
        self, extras: dict[str, Any], batch: int, q_len: int, k_len: int, cross: bool
    ) -> jax.Array | None:
        """The extras' masks as one ``(batch|1, heads|1, q_len|1, k_len|1)`` bool array."""
        prefix = "memory_" if cross else ""
        padding = sequence_mask(self, extras, batch, k_len, prefix)
        mask = None if padding is None else padding[:, None, None, :]
        if "attention_mask" not in extras:
            return mask
        given = extras["attention_mask"]
        target = (batch, self.num_heads, q_len, k_len)
        ok = len(given.shape) == 4 and all(m in (1, t) for m, t in zip(given.shape, target))
        if given.dtype != jnp.bool_ or not ok:
            raise layer_error(
                self,
                f"attention_mask {given.dtype} {tuple(given.shape)} is not bools broadcastable "
                f"to (batch, heads, query_time, key_time) = {target}. Fix: a 4-D bool mask "
                "such as m[:, None, :, :]; for padding pass 'mask' or 'lengths'.",
            )
        if isinstance(given, jax.ShapeDtypeStruct):
            return None
        return given if mask is None else jnp.logical_and(mask, given)

    def _project(
        self,
        params: Params,
        name: str,
        dense: dict[str, Dense],
        a: jax.Array,
        heads: int,
        key: jax.Array | None,
        train: bool,
    ) -> jax.Array:
        y, _ = apply_child(name, dense[name], params[name], {}, a, key, train)
        return y.reshape(*a.shape[:2], heads, -1)

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        if "memory_key" in state:
            return self._apply_cached_memory(params, state, x, key, train)
        q_in, kv_in, extras = self._inputs(x)
        dense = self._projections(q_in)
        q = self._project(params, "query", dense, q_in, self.num_heads, key, train)
        k = self._project(params, "key", dense, kv_in, self.kv_heads, key, train)
        v = self._project(params, "value", dense, kv_in, self.kv_heads, key, train)
        batch, q_len, k_len = q.shape[0], q.shape[1], k.shape[1]
        # While decoding, a mask's key axis spans the whole cache.
        mask_len = state["key"].shape[1] if state else k_len
        cross = "memory" in extras
        mask = self._mask(extras, batch, q_len, mask_len, cross)
        if state:
            y, state = self._decode(state, q, k, v, mask, key, train)
        else:
            if self.rotary is not None and not cross:
                q = self.rotary.rotate(q, jnp.arange(q_len))
                k = self.rotary.rotate(k, jnp.arange(k_len))
            y = self._attention(q, k, v, mask, self.causal, key, train)
        y = y.reshape(batch, q_len, -1)
        out, _ = apply_child("out", dense["out"], params["out"], {}, y, key, train)
        return out, state

    def _attention(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        mask: jax.Array | None,
        causal: bool,
        key: jax.Array | None,
        train: bool,
    ) -> jax.Array:
        rate = self.dropout if train else 0.0
        return attend(self, self.attention_kernel, q, k, v, mask, causal, rate, key)

    def init_cache(self, params: Params, batch_size: int, max_length: int) -> State:
        """An empty KV cache for decoding ``batch_size`` sequences of up to ``max_length``.

        Returns:
            ``{"key": (batch, max_length, kv_heads, head_dim), "value": same,
            "index": int32 scalar}``: pass it as this layer's ``state``.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> attn = nf.MultiHeadAttention(num_heads=2, causal=True)
            >>> params, _ = attn.init(jax.random.key(0), jnp.zeros((1, 4, 8)))
            >>> cache = attn.init_cache(params, 1, 10)
            >>> y, cache = attn.apply(params, cache, jnp.ones((1, 3, 8)))
            >>> cache["key"].shape, int(cache["index"])
            ((1, 10, 2, 4), 3)
        """
        kernel = params["key"]["kernel"]
        shape = (batch_size, max_length, self.kv_heads, kernel.shape[1] // self.kv_heads)
        zeros = jnp.zeros(shape, kernel.dtype)
        return {"key": zeros, "value": zeros, "index": jnp.zeros((), jnp.int32)}

    def init_memory_cache(self, params: Params, memory: jax.Array) -> State:
        """Cross-attention state for decoding: ``memory``'s keys and values, projected once.

        Pass it as this layer's ``state`` with ``{"inputs": q, "memory_mask": m}``
        (no ``memory``): each call then attends to the cached keys and values
        instead of projecting the memory again.

        Returns:
            ``{"memory_key": (batch, memory_time, kv_heads, head_dim), "memory_value": same}``.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> attn = nf.MultiHeadAttention(num_heads=2)
            >>> memory = jnp.ones((1, 5, 8))
            >>> params, _ = attn.init(jax.random.key(0), {"inputs": jnp.ones((1, 3, 8)),
            ...                                          "memory": memory})
            >>> cache = attn.init_memory_cache(params, memory)
            >>> y, _ = attn.apply(params, cache, jnp.ones((1, 1, 8)))
            >>> cache["memory_key"].shape, y.shape
            ((1, 5, 2, 4), (1, 1, 8))
        """
        if len(memory.shape) != 3:
            raise layer_error(
                self, f"expected memory (batch, time, features), got shape {memory.shape}"
            )
        kv_width = params["key"]["kernel"].shape[1]
        dense = {"key": Dense(kv_width, self.use_bias), "value": Dense(kv_width, self.use_bias)}
        k = self._project(params, "key", dense, memory, self.kv_heads, None, False)
        v = self._project(params, "value", dense, memory, self.kv_heads, None, False)
        return {"memory_key": k, "memory_value": v}

    def _apply_cached_memory(
        self, params: Params, state: State, x: Any, key: jax.Array | None, train: bool
    ) -> tuple[jax.Array, State]:
        q_in, _, extras = self._inputs(x, cached_memory=True)
        if "memory" in extras or set(state) != {"memory_key", "memory_value"}:
            raise layer_error(
                self,
                "with a memory cache as state (init_memory_cache), give the queries and the "
                "memory's padding only, not the memory itself",
            )
        dense = self._projections(q_in)
        q = self._project(params, "query", dense, q_in, self.num_heads, key, train)
        k, v = state["memory_key"], state["memory_value"]
        if k.shape[0] != q.shape[0]:
            raise layer_error(
                self,
                f"the memory cache holds batch {k.shape[0]} but the queries have batch "
                f"{q.shape[0]}. Fix: build the cache for this batch (init_memory_cache).",
            )
        batch, q_len = q.shape[:2]
        mask = self._mask(extras, batch, q_len, k.shape[1], cross=True)
        y = self._attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, False, key, train)
        out, _ = apply_child(
            "out", dense["out"], params["out"], {}, y.reshape(batch, q_len, -1), key, train
        )
        return out, state

    def _decode(
        self,
        cache: State,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        mask: jax.Array | None,
        key: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, State]:
        if set(cache) != _CACHE_KEYS:
            raise layer_error(self, f"expected a KV cache {sorted(_CACHE_KEYS)} as state")
        if cache["key"].shape[0] != q.shape[0]:
            raise layer_error(
                self,
                f"the KV cache was built for batch {cache['key'].shape[0]} but the inputs have "
                f"batch {q.shape[0]}. Fix: init_cache with batch_size={q.shape[0]}.",
            )
        index, max_length = cache["key"].shape[1], cache["key"].shape[1]
        index = cache["index"]
        step = q.shape[1]
        start = concrete(index)
        if start is not None and int(start) + step > max_length:
            raise layer_error(
                self,
                f"the KV cache is full: it holds {max_length} positions, {int(start)} are used "
                f"and {step} more were given. Fix: init_cache with a larger max_length.",
            )
        if k.shape[1] != step:
            raise layer_error(self, "decoding with a KV cache needs self-attention inputs")
        positions = index + jnp.arange(step)
        if self.rotary is not None:
            q, k = self.rotary.rotate(q, positions), self.rotary.rotate(k, positions)
        keys = jax.lax.dynamic_update_slice_in_dim(
            cache["key"], k.astype(cache["key"].dtype), index, 1
        )
        values = jax.lax.dynamic_update_slice_in_dim(
            cache["value"], v.astype(cache["value"].dtype), index, 1
        )
        slots = jnp.arange(max_length)
        visible = slots[None, :] < (index + step)
        if self.causal:
            visible = jnp.logical_and(visible, slots[None, :] <= positions[:, None])
        visible = visible[None, None, :, :]
        if mask is not None:
            visible = jnp.logical_and(visible, mask)
        y = self._attention(q, keys, values, visible, False, key, train)
        # Past the end, dynamic_update_slice clamps: poison the output rather than lie.
        y = jnp.where(index + step <= max_length, y, jnp.nan)
        return y, {"key": keys, "value": values, "index": index + step}
