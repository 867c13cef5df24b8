"""The pre-norm transformer block."""

from __future__ import annotations

from typing import Any

import jax

from ..core._children import apply_child, init_child, split_inputs
from ..core._combinators import Sequential
from ..core._layer import Layer, layer_error
from ._attention import MultiHeadAttention
from ._dense import Dense
from ._dropout import Dropout
from ._norm import LayerNorm


class TransformerBlock(Layer):
    """``x + attention(norm(x))`` then ``x + mlp(norm(x))``, with dropout on both branches.

    The norms come first (pre-norm, as in GPT-2), which trains stably without
    warm-up tricks at the depths used here. The MLP is ``Dense(mlp_ratio * d)``,
    GELU, ``Dense(d)``. Decoding: ``init_cache(params, batch, max_length)`` gives
    the attention's KV cache as this block's state.

    Args:
        num_heads: attention heads; must divide the model width.
        num_kv_heads: key/value heads (grouped-query attention), default ``num_heads``.
        mlp_ratio: hidden width of the MLP as a multiple of the model width.
        dropout: dropout rate on the residual branches and the attention weights.
        causal: causal self-attention (a decoder block).
        rotary: a :class:`RotaryPositions` for queries and keys, or None.
        use_bias: biases in the projections.

    The input may carry the padding extras ``mask`` or ``lengths`` and an
    ``attention_mask`` (``{"inputs": x, "mask": m}``); they reach the attention.

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

    num_heads: int
    num_kv_heads: int | None = None
    mlp_ratio: int = 4
    dropout: float = 0.0
    causal: bool = True
    rotary: Any = None
    use_bias: bool = True

    def __post_init__(self):
        if not isinstance(self.mlp_ratio, int) or self.mlp_ratio < 1:
            raise ValueError(f"TransformerBlock mlp_ratio must be >= 1, got {self.mlp_ratio!r}")
        _ = self.attention  # builds it now so bad attention settings fail here
        Dropout(self.dropout)

    @property
    def attention(self) -> MultiHeadAttention:
        return MultiHeadAttention(
            self.num_heads,
            self.num_kv_heads,
            use_bias=self.use_bias,
            dropout=self.dropout,
            causal=self.causal,
            rotary=self.rotary,
        )

    def _mlp(self, width: int) -> Sequential:
        hidden = Dense(self.mlp_ratio * width, self.use_bias)
        return Sequential(
            {"hidden": hidden, "act": jax.nn.gelu, "out": Dense(width, self.use_bias)}
        )

    def _children(self, width: int) -> dict[str, Layer]:
        return {
            "attention_norm": LayerNorm(),
            "attention": self.attention,
            "mlp_norm": LayerNorm(),
            "mlp": self._mlp(width),
        }

    extras = frozenset({"mask", "lengths", "attention_mask"})  # type: ignore[assignment]

    def init(self, key, x):
        x, extras = split_inputs(self, x)
        if len(x.shape) != 3:
            raise layer_error(self, f"expected (batch, time, features), got shape {x.shape}")
        params = {}
        for name, layer in self._children(x.shape[-1]).items():
            params[name], _, _ = init_child(name, layer, key, x, extras)
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        x, extras = split_inputs(self, x)
        layers = self._children(x.shape[-1])
        drop = Dropout(self.dropout)

        def run(name, h, layer_state=None):
            layer, p = layers[name], params[name]
            return apply_child(name, layer, p, layer_state or {}, h, key, train, extras)

        h, _ = run("attention_norm", x)
        h, attention_state = run("attention", h, state.get("attention"))
        h, _ = apply_child("attention_dropout", drop, {}, {}, h, key, train)
        x = x + h
        h, _ = run("mlp_norm", x)
        h, _ = run("mlp", h)
        h, _ = apply_child("mlp_dropout", drop, {}, {}, h, key, train)
        new_state = {"attention": attention_state} if attention_state else {}
        return x + h, new_state

    def init_cache(self, params: dict, batch_size: int, max_length: int) -> dict:
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
