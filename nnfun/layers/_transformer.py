"""Transformer blocks: self-attention (encoder or decoder-only) and encoder-decoder."""

from __future__ import annotations

from typing import Any

import jax

from ..core._children import apply_child, init_child, split_inputs
from ..core._layer import Layer, Params, State, layer_error
from ._attention import MultiHeadAttention
from ._dropout import Dropout
from ._feedforward import FeedForward
from ._norm import LayerNorm, RMSNorm

_SELF = ("mask", "lengths", "attention_mask")
_CROSS = ("memory", "memory_mask", "memory_lengths")
#: The blocks' normalisations by name.
NORMS: dict[str, type[LayerNorm] | type[RMSNorm]] = {"layer": LayerNorm, "rms": RMSNorm}


class _Block(Layer):
    """Settings and the residual sub-layer shared by the transformer blocks."""

    num_heads: int
    num_kv_heads: int | None = None
    mlp_ratio: int = 4
    dropout: float = 0.0
    causal: bool = True
    rotary: Any = None
    use_bias: bool = True
    norm_first: bool = True
    activation: str = "gelu_tanh"
    epsilon: float = 1e-5
    mlp_features: int | None = None
    attention_kernel: str = "auto"
    norm: str = "layer"
    qkv_bias: bool | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.mlp_ratio, int) or self.mlp_ratio < 1:
            raise ValueError(f"{name} mlp_ratio must be >= 1, got {self.mlp_ratio!r}")
        if self.norm not in NORMS:
            raise ValueError(f"{name} norm must be one of {sorted(NORMS)}, got {self.norm!r}")
        _ = self.attention  # builds it now so bad attention settings fail here
        self._mlp(1)
        _ = self._norm

    @property
    def attention(self) -> MultiHeadAttention:
        return MultiHeadAttention(
            self.num_heads,
            self.num_kv_heads,
            use_bias=self.use_bias if self.qkv_bias is None else self.qkv_bias,
            dropout=self.dropout,
            causal=self.causal,
            rotary=self.rotary,
            attention_kernel=self.attention_kernel,
            out_bias=self.use_bias,
        )

    def _mlp(self, width: int) -> FeedForward:
        hidden = self.mlp_features or self.mlp_ratio * width
        return FeedForward(hidden, self.activation, self.dropout, self.use_bias)

    def _check(self, x: Any) -> None:
        if len(x.shape) != 3:
            raise layer_error(self, f"expected (batch, time, features), got shape {x.shape}")

    def _init_sublayer(
        self, name: str, layer: Layer, key: jax.Array, x: Any, extras: dict[str, Any]
    ) -> Params:
        params = {}
        params[f"{name}_norm"], _, _ = init_child(f"{name}_norm", self._norm, key, x)
        params[name], _, _ = init_child(name, layer, key, x, extras)
        return params

    @property
    def _norm(self) -> LayerNorm | RMSNorm:
        return NORMS[self.norm](epsilon=self.epsilon)

    def _sublayer(
        self,
        name: str,
        layer: Layer,
        params: Params,
        state: State,
        x: jax.Array,
        extras: dict[str, Any],
        key: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, State]:
        """``x + f(norm(x))`` (pre-norm) or ``norm(x + f(x))`` (post-norm), dropout on f."""
        norm, norm_params = self._norm, params[f"{name}_norm"]
        h = x
        if self.norm_first:
            h, _ = apply_child(f"{name}_norm", norm, norm_params, {}, x, key, train)
        h, new_state = apply_child(name, layer, params[name], state, h, key, train, extras)
        h, _ = apply_child(f"{name}_dropout", Dropout(self.dropout), {}, {}, h, key, train)
        if self.norm_first:
            return x + h, new_state
        y, _ = apply_child(f"{name}_norm", norm, norm_params, {}, x + h, key, train)
        return y, new_state


def _pick(extras: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in extras.items() if k in names}


class TransformerBlock(_Block):
    """Self-attention then a feed-forward network, each in a residual branch.

    Pre-norm (``norm_first=True``, GPT-2): ``x + attention(norm(x))`` then
    ``x + mlp(norm(x))``. Post-norm (the original Transformer and BERT):
    ``norm(x + attention(x))`` then ``norm(x + mlp(x))``. Dropout applies to
    both branches, the attention weights and the MLP's hidden layer. With
    ``causal=False`` this is the encoder block (PyTorch's
    ``TransformerEncoderLayer``); with ``causal=True`` a decoder-only block.
    Decoding: ``init_cache(params, batch, max_length)`` gives the attention's KV
    cache as this block's state.

    The input may carry the padding extras ``mask`` or ``lengths`` and an
    ``attention_mask`` (``{"inputs": x, "mask": m}``); they reach the attention.

    Args:
        num_heads: attention heads; must divide the model width.
        num_kv_heads: key/value heads (grouped-query attention), default ``num_heads``.
        mlp_ratio: hidden width of the MLP as a multiple of the model width.
        dropout: dropout rate on the residual branches, the attention weights and
            the MLP's hidden layer.
        causal: causal self-attention (a decoder block).
        rotary: a :class:`RotaryPositions` for queries and keys, or None.
        use_bias: biases in the projections.
        norm_first: pre-norm (True) or post-norm (False).
        activation: the MLP's, one of :class:`FeedForward`'s (``"gelu_tanh"``,
            ``"gelu"``, ``"relu"``, ``"swiglu"``).
        epsilon: the LayerNorms' epsilon.
        mlp_features: the MLP's hidden width, any size; overrides ``mlp_ratio``.
        attention_kernel: :class:`MultiHeadAttention`'s (``"auto"``, ``"cpu"``,
            ``"xla"``, ``"cudnn"``).
        norm: ``"layer"`` (:class:`LayerNorm`) or ``"rms"`` (:class:`RMSNorm`, Llama).
        qkv_bias: biases in the query/key/value projections; default ``use_bias``
            (which then covers the output projection and the MLP only).

    Shapes: ``(batch, time, d) -> (batch, time, d)``. Params: ``attention_norm``,
    ``attention``, ``mlp_norm``, ``mlp`` (``hidden``, ``out``).

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> block = nf.TransformerBlock(num_heads=2)
        >>> params, state = block.init(jax.random.key(0), jnp.zeros((1, 4, 8)))
        >>> sorted(params)
        ['attention', 'attention_norm', 'mlp', 'mlp_norm']
        >>> block.apply(params, state, jnp.ones((3, 4, 8)))[0].shape
        (3, 4, 8)
    """

    extras = frozenset(_SELF)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, extras = split_inputs(self, x)
        self._check(x)
        params = self._init_sublayer("attention", self.attention, key, x, extras)
        params |= self._init_sublayer("mlp", self._mlp(x.shape[-1]), key, x, {})
        return params, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, extras = split_inputs(self, x)
        cache = state.get("attention", {})
        x, cache = self._sublayer("attention", self.attention, params, cache, x, extras, key, train)
        x, _ = self._sublayer("mlp", self._mlp(x.shape[-1]), params, {}, x, {}, key, train)
        return x, ({"attention": cache} if cache else {})

    def init_cache(self, params: Params, batch_size: int, max_length: int) -> State:
        """A KV cache (this block's state) for decoding.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> block = nf.TransformerBlock(num_heads=2)
            >>> params, _ = block.init(jax.random.key(0), jnp.zeros((1, 4, 8)))
            >>> block.init_cache(params, 1, 6)["attention"]["value"].shape
            (1, 6, 2, 4)
        """
        cache = self.attention.init_cache(params["attention"], batch_size, max_length)
        return {"attention": cache}


class DecoderBlock(_Block):
    """Causal self-attention, cross-attention over a memory, then a feed-forward network.

    The decoder block of an encoder-decoder transformer (PyTorch's
    ``TransformerDecoderLayer``): each of the three sub-layers sits in a
    residual branch, pre-norm or post-norm as in :class:`TransformerBlock`.
    The input is ``{"inputs": x, "memory": m}`` with optional ``mask`` /
    ``lengths`` (the target's padding, for the self-attention),
    ``memory_mask`` / ``memory_lengths`` (the source's, for the
    cross-attention) and ``attention_mask``.

    Decoding: ``init_cache(params, batch, max_length, memory)`` returns the
    state ``{"attention": KV cache, "cross_attention": the memory's keys and
    values}``; then feed ``{"inputs": new_steps, "memory_mask": m}`` (no
    memory: its projections are cached).

    Args: those of :class:`TransformerBlock` (``causal`` defaults to True).

    Shapes: ``(batch, time, d)`` with memory ``(batch, memory_time, e)`` ->
    ``(batch, time, d)``. Params: ``attention_norm``, ``attention``,
    ``cross_attention_norm``, ``cross_attention``, ``mlp_norm``, ``mlp``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> block = nf.DecoderBlock(num_heads=2)
        >>> x = {"inputs": jnp.zeros((2, 4, 8)), "memory": jnp.zeros((2, 6, 8))}
        >>> params, state = block.init(jax.random.key(0), x)
        >>> block.apply(params, state, x)[0].shape
        (2, 4, 8)
    """

    extras = frozenset(_SELF + _CROSS)

    @property
    def cross_attention(self) -> MultiHeadAttention:
        heads, kv_heads, bias = self.num_heads, self.num_kv_heads, self.use_bias
        return MultiHeadAttention(
            heads,
            kv_heads,
            use_bias=bias,
            dropout=self.dropout,
            attention_kernel=self.attention_kernel,
        )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, extras = split_inputs(self, x)
        self._check(x)
        self._check_memory(extras, {})
        params = self._init_sublayer("attention", self.attention, key, x, _pick(extras, _SELF))
        cross = _pick(extras, _CROSS)
        params |= self._init_sublayer("cross_attention", self.cross_attention, key, x, cross)
        params |= self._init_sublayer("mlp", self._mlp(x.shape[-1]), key, x, {})
        return params, {}

    def _check_memory(self, extras: dict[str, Any], state: State) -> None:
        if "memory" not in extras and "cross_attention" not in state:
            raise layer_error(
                self,
                "a decoder block attends to a memory, but none was given. Fix: pass "
                "{'inputs': x, 'memory': encoder_output}, or a state from init_cache.",
            )

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, extras = split_inputs(self, x)
        self._check_memory(extras, state)
        new_state = {}
        for name, layer, names in (
            ("attention", self.attention, _SELF),
            ("cross_attention", self.cross_attention, _CROSS),
        ):
            args = (params, state.get(name, {}), x, _pick(extras, names), key, train)
            x, new_state[name] = self._sublayer(name, layer, *args)
        x, _ = self._sublayer("mlp", self._mlp(x.shape[-1]), params, {}, x, {}, key, train)
        return x, {k: v for k, v in new_state.items() if v}

    def init_cache(
        self, params: Params, batch_size: int, max_length: int, memory: jax.Array | None = None
    ) -> State:
        """The decoding state: the self-attention's KV cache and, given ``memory``, its
        keys and values for the cross-attention (computed once).

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> block = nf.DecoderBlock(num_heads=2)
            >>> memory = jnp.ones((1, 6, 8))
            >>> params, _ = block.init(jax.random.key(0), {"inputs": jnp.zeros((1, 4, 8)),
            ...                                           "memory": memory})
            >>> cache = block.init_cache(params, 1, 10, memory)
            >>> cache["attention"]["key"].shape, cache["cross_attention"]["memory_key"].shape
            ((1, 10, 2, 4), (1, 6, 2, 4))
            >>> block.apply(params, cache, jnp.ones((1, 1, 8)))[0].shape
            (1, 1, 8)
        """
        cache = {
            "attention": self.attention.init_cache(params["attention"], batch_size, max_length)
        }
        if memory is not None:
            cross = params["cross_attention"]
            cache["cross_attention"] = self.cross_attention.init_memory_cache(cross, memory)
        return cache
