"""A BERT-style transformer encoder: token, position and token-type embeddings, post-norm blocks.

``Bert`` maps token ids ``(batch, time)`` to ``{"hidden": (batch, time,
d_model), "pooled": (batch, d_model)}``: the sum of the word, learned position
and token-type embeddings, a LayerNorm, a :class:`nnfun.Stack` of post-norm
non-causal :class:`nnfun.TransformerBlock` s, and a pooler (``tanh`` of a
Dense layer on the first token, BERT's ``[CLS]``).

The input may be the ids or a dict with extras: ``{"inputs": ids,
"token_types": types, "mask": m}`` (or ``"lengths"``, or an
``"attention_mask"``). ``token_types`` are BERT's token type ids (the segment
of each token, sentence A = 0 and B = 1), zeros when absent; the padding
reaches every block's attention, so padded tokens are never attended to.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, init_child, split_inputs
from ..core._combinators import Sequential
from ..core._layer import Layer, Params, State, layer_error
from ..core._masks import concrete
from ..core._stack import Stack
from ..layers._dense import Dense
from ..layers._dropout import Dropout
from ..layers._embedding import Embedding
from ..layers._norm import LayerNorm
from ..layers._position import LearnedPositions
from ..layers._transformer import TransformerBlock
from .gpt import block_stack

_PADDING = ("mask", "lengths", "attention_mask")


class Bert(Layer):
    """BERT-style encoder (Devlin et al. 2019); the defaults are BERT-base's.

    Args:
        vocab_size: number of token ids.
        d_model: model width (Hugging Face's ``hidden_size``).
        num_heads: attention heads (must divide ``d_model``).
        num_layers: transformer blocks.
        mlp_features: the feed-forward hidden width (``intermediate_size``);
            default ``4 * d_model``.
        max_length: rows of the position table: the longest input.
        type_vocab_size: number of token types (segments).
        dropout: on the embeddings, the residual branches, the attention
            weights and the MLP's hidden layer (in training).
        activation: the feed-forward activation (``"gelu"`` is BERT's exact GELU;
            ``"gelu_tanh"``, ``"relu"``).
        epsilon: the LayerNorms' epsilon.
        pooler: add the pooler (``tanh(Dense(first token))``) and its ``"pooled"`` output.
        stacked: blocks in a :class:`nnfun.Stack` (one ``lax.scan``); False
            unrolls them in a ``Sequential`` (params keyed ``"0"``, ``"1"``, ...).
        remat: recompute block activations in the backward pass (Stack only).

    Shapes: int ``(batch, time)`` -> ``{"hidden": (batch, time, d_model),
    "pooled": (batch, d_model)}`` (no ``"pooled"`` without the pooler). Params:
    ``embedding``, ``positions``, ``token_types``, ``embedding_norm``,
    ``blocks``, ``pooler``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models import Bert
        >>> model = Bert(vocab_size=30, d_model=16, num_heads=2, num_layers=2, max_length=8)
        >>> ids = jnp.array([[2, 5, 7, 0], [2, 9, 0, 0]])
        >>> x = {"inputs": ids, "token_types": jnp.array([[0, 0, 1, 1], [0, 1, 1, 1]]),
        ...      "lengths": jnp.array([4, 2])}
        >>> params, state = model.init(jax.random.key(0), x)
        >>> out, _ = model.apply(params, state, x)
        >>> out["hidden"].shape, out["pooled"].shape
        ((2, 4, 16), (2, 16))
    """

    vocab_size: int
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    mlp_features: int | None = None
    max_length: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.0
    activation: str = "gelu"
    epsilon: float = 1e-12
    pooler: bool = True
    stacked: bool = True
    remat: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_layers", "max_length", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Bert {name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"Bert: num_heads={self.num_heads} does not divide d_model={self.d_model}; "
                "pick a head count that divides the model width"
            )
        _ = self.block, self._blocks()  # validates the blocks' settings now

    @property
    def block(self) -> TransformerBlock:
        """One encoder block: post-norm, non-causal self-attention and an MLP."""
        return TransformerBlock(
            self.num_heads,
            dropout=self.dropout,
            causal=False,
            norm_first=False,
            activation=self.activation,
            epsilon=self.epsilon,
            mlp_features=self.mlp_features or 4 * self.d_model,
        )

    def _blocks(self) -> Stack | Sequential:
        # Unrolled as GPT's: every block compiled up to 12 blocks without remat.
        return block_stack(self.block, self.num_layers, self.stacked, self.remat)

    def _embeddings(self) -> dict[str, Layer]:
        return {
            "embedding": Embedding(self.vocab_size, self.d_model),
            "positions": LearnedPositions(self.max_length),
            "token_types": Embedding(self.type_vocab_size, self.d_model),
            "embedding_norm": LayerNorm(epsilon=self.epsilon),
        }

    @property
    def extras(self) -> frozenset[str]:
        return frozenset({*_PADDING, "token_types"})

    def _inputs(self, x: Any) -> tuple[Any, Any, dict[str, Any]]:
        """``(ids, token types, padding extras)``, checked."""
        ids, extras = split_inputs(self, x)
        if len(ids.shape) != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise layer_error(
                self,
                f"expected 'inputs' of int token ids (batch, time), got {ids.dtype} "
                f"{tuple(ids.shape)}. Fix: ids.astype(jnp.int32), with a batch axis.",
            )
        types = extras.pop("token_types", None)
        if types is None:
            return ids, jax.ShapeDtypeStruct(ids.shape, jnp.int32), extras
        if tuple(types.shape) != tuple(ids.shape) or not jnp.issubdtype(types.dtype, jnp.integer):
            raise layer_error(
                self,
                f"expected 'token_types' of ints shaped like the ids {tuple(ids.shape)}, got "
                f"{types.dtype} {tuple(types.shape)}. Fix: one token type per token.",
            )
        values = concrete(types)
        if (
            values is not None
            and values.size
            and not 0 <= values.min() <= values.max() < self.type_vocab_size
        ):
            raise layer_error(
                self,
                f"'token_types' must lie in [0, {self.type_vocab_size}) (type_vocab_size), got "
                f"values from {values.min()} to {values.max()}. Fix: 0 for the first segment, "
                "1 for the second.",
            )
        return ids, types, extras

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        ids, types, extras = self._inputs(x)
        layers = self._embeddings()
        params: Params = {}
        params["embedding"], _, h = init_child("embedding", layers["embedding"], key, ids)
        params["positions"], _, _ = init_child("positions", layers["positions"], key, h)
        params["token_types"], _, _ = init_child("token_types", layers["token_types"], key, types)
        params["embedding_norm"], _, _ = init_child(
            "embedding_norm", layers["embedding_norm"], key, h
        )
        params["blocks"], _, h = init_child("blocks", self._blocks(), key, h, extras)
        if self.pooler:
            first = jax.ShapeDtypeStruct((h.shape[0], h.shape[2]), h.dtype)
            params["pooler"], _, _ = init_child("pooler", Dense(self.d_model), key, first)
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
        ids, types, extras = self._inputs(x)
        if isinstance(types, jax.ShapeDtypeStruct):
            types = jnp.zeros(ids.shape, jnp.int32)
        layers = self._embeddings()

        def run(name: str, layer: Layer, h: Any, extras: dict[str, Any] | None = None) -> Any:
            return apply_child(name, layer, params.get(name, {}), {}, h, key, train, extras)[0]

        h = run("positions", layers["positions"], run("embedding", layers["embedding"], ids))
        h = h + run("token_types", layers["token_types"], types)
        h = run("embedding_norm", layers["embedding_norm"], h)
        h = run("embedding_dropout", Dropout(self.dropout), h)
        h = run("blocks", self._blocks(), h, extras)
        out = {"hidden": h}
        if self.pooler:
            out["pooled"] = jnp.tanh(run("pooler", Dense(self.d_model), h[:, 0]))
        return out, state
