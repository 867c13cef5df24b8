"""An encoder-decoder transformer for sequence-to-sequence tasks (translation).

``EncoderDecoder`` maps source ids and teacher-forced target ids to next-token
logits: ``{"inputs": source (batch, S), "lengths": (batch,), "decoder_inputs":
(batch, T), "decoder_lengths": (batch,)} -> (batch, T, target_vocab)``. The
encoder is a :class:`nnfun.Stack` of non-causal :class:`nnfun.TransformerBlock` s,
the decoder a Stack of :class:`nnfun.DecoderBlock` s; padding of either side
travels as extras (``lengths``/``mask`` for the source, ``decoder_lengths``/
``decoder_mask`` for the target).

Decoding: :meth:`EncoderDecoder.init_cache` encodes the sources once and
returns a state holding the decoder's KV caches and the memory's projected keys
and values; ``apply(params, cache, ids)`` then takes the next target ids
``(batch, t)`` and returns their logits and the updated cache.
:func:`nnfun.models.decoding.greedy_search` and ``beam_search`` do this under
``jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, init_child, split_inputs
from ..core._layer import Layer, Params, State, layer_error
from ..core._masks import sequence_mask
from ..core._stack import Stack
from ..layers._dense import Dense
from ..layers._dropout import Dropout
from ..layers._embedding import Embedding
from ..layers._norm import LayerNorm
from ..layers._position import LearnedPositions
from ..layers._transformer import DecoderBlock, TransformerBlock

_SOURCE_PADDING = ("mask", "lengths")


class EncoderDecoder(Layer):
    """Encoder-decoder transformer (Vaswani et al. 2017) with learned positions.

    Args:
        source_vocab_size: number of source token ids.
        target_vocab_size: number of target ids (default: the source's).
        d_model: model width.
        num_heads: attention heads (must divide ``d_model``).
        num_encoder_layers: encoder blocks.
        num_decoder_layers: decoder blocks.
        mlp_features: the feed-forward hidden width (default ``4 * d_model``).
        dropout: on embeddings, residual branches, attention weights, MLPs.
        max_source_length: the longest source.
        max_target_length: the longest target (decoding included).
        norm_first: pre-norm blocks (True) or post-norm (False, the original).
        activation: the feed-forward activation (``"gelu"``, ``"gelu_tanh"``,
            ``"relu"``, ``"swiglu"``).
        share_embeddings: one embedding table for source and target (needs a
            shared vocabulary: ``target_vocab_size`` None or equal).
        tie_output: the output head is the target embedding, transposed;
            False adds a ``head`` Dense layer.
        num_kv_heads: key/value heads (grouped-query attention).
        unroll: the Stacks' ``lax.scan`` unroll (default: fully unrolled, as
            :class:`nnfun.models.gpt.GPT` does for shallow models).

    Shapes: source ``(batch, S)`` and ``decoder_inputs`` ``(batch, T)`` int ->
    ``(batch, T, target_vocab_size)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models.seq2seq import EncoderDecoder
        >>> model = EncoderDecoder(source_vocab_size=12, target_vocab_size=9, d_model=16,
        ...                        num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
        >>> x = {"inputs": jnp.zeros((2, 5), jnp.int32),
        ...      "decoder_inputs": jnp.zeros((2, 4), jnp.int32)}
        >>> params, state = model.init(jax.random.key(0), x)
        >>> model.apply(params, state, x)[0].shape
        (2, 4, 9)
    """

    source_vocab_size: int
    target_vocab_size: int | None = None
    d_model: int = 128
    num_heads: int = 4
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    mlp_features: int | None = None
    dropout: float = 0.0
    max_source_length: int = 64
    max_target_length: int = 64
    norm_first: bool = True
    activation: str = "gelu"
    share_embeddings: bool = False
    tie_output: bool = True
    num_kv_heads: int | None = None
    unroll: int | bool | None = None

    extras = frozenset({"mask", "lengths", "decoder_inputs", "decoder_mask", "decoder_lengths"})

    def __post_init__(self) -> None:
        if self.share_embeddings and self.target_vocab_size not in (None, self.source_vocab_size):
            raise ValueError(
                "EncoderDecoder share_embeddings=True needs one vocabulary, but "
                f"source_vocab_size={self.source_vocab_size} and target_vocab_size="
                f"{self.target_vocab_size}. Fix: target_vocab_size=None, or share_embeddings=False."
            )
        self._layers()  # validates the blocks' settings now

    @property
    def vocab(self) -> int:
        """The target vocabulary size."""
        return self.target_vocab_size or self.source_vocab_size

    def _block_settings(self) -> dict[str, Any]:
        return dict(
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            dropout=self.dropout,
            norm_first=self.norm_first,
            activation=self.activation,
            mlp_features=self.mlp_features or 4 * self.d_model,
        )

    def _layers(self) -> dict[str, Layer]:
        unroll = True if self.unroll is None else self.unroll
        settings = self._block_settings()
        layers: dict[str, Layer] = {
            "source_embedding": Embedding(self.source_vocab_size, self.d_model),
            "source_positions": LearnedPositions(self.max_source_length),
            "encoder": Stack(
                self.num_encoder_layers,
                TransformerBlock(causal=False, **settings),
                unroll=unroll,
            ),
            "encoder_norm": LayerNorm(),
            "target_positions": LearnedPositions(self.max_target_length),
            "decoder": Stack(self.num_decoder_layers, DecoderBlock(**settings), unroll=unroll),
            "decoder_norm": LayerNorm(),
            "dropout": Dropout(self.dropout),
        }
        if not self.share_embeddings:
            layers["target_embedding"] = Embedding(self.vocab, self.d_model)
        if not self.tie_output:
            layers["head"] = Dense(self.vocab)
        return layers

    def _target_embedding(self) -> tuple[str, Embedding]:
        name = "source_embedding" if self.share_embeddings else "target_embedding"
        return name, self._layers()[name]  # type: ignore[return-value]

    def _check_ids(self, name: str, ids: Any) -> None:
        if len(ids.shape) != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise layer_error(
                self, f"expected int {name} ids (batch, time), got {ids.dtype} {tuple(ids.shape)}"
            )

    def _unpack(self, x: Any) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
        source, extras = split_inputs(self, x)
        self._check_ids("source", source)
        if "decoder_inputs" not in extras:
            raise layer_error(
                self,
                "expected {'inputs': source_ids, 'decoder_inputs': target_ids, ...}; "
                "decoder_inputs (the target shifted right, starting with BOS) are missing. "
                "To decode without them, use init_cache and nnfun.models.decoding.",
            )
        target = extras["decoder_inputs"]
        self._check_ids("decoder_inputs", target)
        if target.shape[0] != source.shape[0]:
            raise layer_error(
                self,
                f"source has batch {source.shape[0]} but decoder_inputs have batch "
                f"{target.shape[0]}. Fix: pair each source with its target.",
            )
        source_padding = {k: v for k, v in extras.items() if k in _SOURCE_PADDING}
        target_padding = {
            k.removeprefix("decoder_"): v
            for k, v in extras.items()
            if k in ("decoder_mask", "decoder_lengths")
        }
        # Shapes and lengths checked here, while they are concrete.
        sequence_mask(self, source_padding, source.shape[0], source.shape[1])
        decoder_padding = {f"decoder_{k}": v for k, v in target_padding.items()}
        sequence_mask(self, decoder_padding, target.shape[0], target.shape[1], "decoder_")
        return source, target, source_padding, target_padding

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        source, target, source_padding, target_padding = self._unpack(x)
        layers, params = self._layers(), {}
        h = source
        for name in ("source_embedding", "source_positions"):
            params[name], _, h = init_child(name, layers[name], key, h)
        params["encoder"], _, h = init_child("encoder", layers["encoder"], key, h, source_padding)
        params["encoder_norm"], _, memory = init_child(
            "encoder_norm", layers["encoder_norm"], key, h
        )
        embed_name, embedding = self._target_embedding()
        if embed_name not in params:
            params[embed_name], _, _ = init_child(embed_name, embedding, key, target)
        h = jax.ShapeDtypeStruct((*target.shape, self.d_model), memory.dtype)
        params["target_positions"], _, h = init_child(
            "target_positions", layers["target_positions"], key, h
        )
        extras = {"memory": memory, **target_padding, **_memory_padding(source_padding)}
        params["decoder"], _, h = init_child("decoder", layers["decoder"], key, h, extras)
        params["decoder_norm"], _, h = init_child("decoder_norm", layers["decoder_norm"], key, h)
        if "head" in layers:
            params["head"], _, _ = init_child("head", layers["head"], key, h)
        return params, {}

    def encode(
        self,
        params: Params,
        source: jax.Array,
        padding: dict[str, Any] | None = None,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        """The encoder's output (the memory), ``(batch, S, d_model)``.

        ``padding`` holds the source's ``mask`` or ``lengths`` (or is None).
        """
        layers, padding = self._layers(), padding or {}

        def run(name: str, h: Any, extras: dict[str, Any] | None = None) -> Any:
            return apply_child(name, layers[name], params[name], {}, h, key, train, extras)[0]

        h = run("source_positions", run("source_embedding", source))
        h = apply_child("source_dropout", layers["dropout"], {}, {}, h, key, train)[0]
        return run("encoder_norm", run("encoder", h, padding))

    def _decode(
        self,
        params: Params,
        state: State,
        target: jax.Array,
        extras: dict[str, Any],
        key: jax.Array | None,
        train: bool,
    ) -> tuple[jax.Array, State]:
        layers = self._layers()
        embed_name, embedding = self._target_embedding()
        h, _ = apply_child(embed_name, embedding, params[embed_name], {}, target, key, train)
        offset = {"offset": state["position"]} if state else {}
        positions = layers["target_positions"]
        h, _ = apply_child(
            "target_positions", positions, params["target_positions"], {}, h, key, train, offset
        )
        h = apply_child("target_dropout", layers["dropout"], {}, {}, h, key, train)[0]
        decoder_state = state.get("decoder", {})
        h, decoder_state = apply_child(
            "decoder", layers["decoder"], params["decoder"], decoder_state, h, key, train, extras
        )
        h, _ = apply_child(
            "decoder_norm", layers["decoder_norm"], params["decoder_norm"], {}, h, key, train
        )
        if "head" in layers:
            logits, _ = apply_child("head", layers["head"], params["head"], {}, h, key, train)
        else:
            logits = embedding.attend(params[embed_name], h)
        if not state:
            return logits, {}
        new_state = {
            **state,
            "decoder": decoder_state,
            "position": state["position"] + target.shape[1],
        }
        return logits, new_state

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        if state:  # decoding: x is the next target ids, the source is in the cache
            return self._decode_step(params, state, x, key, train)
        source, target, source_padding, target_padding = self._unpack(x)
        memory = self.encode(params, source, source_padding, key=key, train=train)
        extras = {"memory": memory, **target_padding, **_memory_padding(source_padding)}
        return self._decode(params, {}, target, extras, key, train)

    def _decode_step(
        self, params: Params, state: State, ids: jax.Array, key: jax.Array | None, train: bool
    ) -> tuple[jax.Array, State]:
        if set(state) != {"position", "decoder", "memory_mask"}:
            raise layer_error(
                self, f"expected a decoding state from init_cache, got keys {sorted(state)}"
            )
        self._check_ids("target", ids)
        if ids.shape[0] != state["memory_mask"].shape[0]:
            raise layer_error(
                self,
                f"the cache was built for batch {state['memory_mask'].shape[0]} but the ids have "
                f"batch {ids.shape[0]}. Fix: init_cache for this batch (and beam width).",
            )
        extras = {"memory_mask": state["memory_mask"]}
        return self._decode(params, state, ids, extras, key, train)

    def init_cache(
        self, params: Params, x: Any, max_length: int | None = None, repeat: int = 1
    ) -> State:
        """Encodes the sources once and returns the decoding state.

        Args:
            params: this model's params.
            x: source ids ``(batch, S)``, or ``{"inputs": ids, "lengths": ...}``
                (or ``"mask"``) with their padding.
            max_length: the most target positions to decode (default
                ``max_target_length``).
            repeat: copies of each source, side by side (``beam_width`` for
                beam search): the state's batch is ``batch * repeat``.

        Returns:
            ``{"position": int32, "decoder": the blocks' caches (self-attention KV
            and the memory's keys and values), "memory_mask": (batch * repeat, S)}``.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from nnfun.models.seq2seq import EncoderDecoder
            >>> model = EncoderDecoder(source_vocab_size=12, d_model=16, num_heads=2,
            ...                        num_encoder_layers=1, num_decoder_layers=1)
            >>> x = {"inputs": jnp.ones((2, 5), jnp.int32),
            ...      "decoder_inputs": jnp.ones((2, 3), jnp.int32)}
            >>> params, _ = model.init(jax.random.key(0), x)
            >>> cache = model.init_cache(params, x["inputs"], max_length=6)
            >>> logits, cache = model.apply(params, cache, jnp.ones((2, 1), jnp.int32))
            >>> logits.shape, int(cache["position"])
            ((2, 1, 12), 1)
        """
        max_length = self.max_target_length if max_length is None else max_length
        if max_length > self.max_target_length:
            raise layer_error(
                self,
                f"max_length={max_length} exceeds max_target_length={self.max_target_length}. "
                "Fix: decode fewer steps or build the model with a larger max_target_length.",
            )
        source, padding = split_inputs(self, x)
        self._check_ids("source", source)
        padding = {k: v for k, v in padding.items() if k in _SOURCE_PADDING}
        memory = self.encode(params, source, padding)
        batch, time = source.shape
        mask = jnp.ones((batch, time), bool)
        if "lengths" in padding:
            mask = jnp.arange(time)[None, :] < jnp.asarray(padding["lengths"])[:, None]
        elif "mask" in padding:
            mask = jnp.broadcast_to(padding["mask"], (batch, time))
        memory, mask = jnp.repeat(memory, repeat, axis=0), jnp.repeat(mask, repeat, axis=0)
        decoder = self._layers()["decoder"]
        caches = decoder.init_cache(params["decoder"], batch * repeat, max_length, memory=memory)  # type: ignore[attr-defined]
        return {"position": jnp.zeros((), jnp.int32), "decoder": caches, "memory_mask": mask}


def _memory_padding(source_padding: dict[str, Any]) -> dict[str, Any]:
    return {f"memory_{k}": v for k, v in source_padding.items()}


def reorder_cache(cache: State, indices: jax.Array) -> State:
    """The cache with its rows taken at ``indices`` (beam search keeps its best beams).

    Only the self-attention KV caches change from beam to beam; the memory's
    keys and values and its mask are the same for the beams of one source.
    """

    def take(tree: Any) -> Any:
        return {
            **tree,
            "key": jnp.take(tree["key"], indices, axis=1),
            "value": jnp.take(tree["value"], indices, axis=1),
        }

    layer = cache["decoder"]["layer"]
    return {**cache, "decoder": {"layer": {**layer, "attention": take(layer["attention"])}}}
