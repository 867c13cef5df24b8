"""A GPT-style decoder language model and jit-compiled sampling with a KV cache.

``GPT`` maps token ids ``(batch, time)`` to next-token logits ``(batch, time,
vocab)``: token embedding, positions, a :class:`nnfun.Stack` of pre-norm causal
:class:`nnfun.TransformerBlock` s, a final norm, and the output projection
tied to the embedding (``Embedding.attend``) or its own ``head``. Its settings
cover GPT-2 (the defaults) and the Llama family (``LLAMA_SETTINGS``: RMSNorm,
rotary positions, SwiGLU, no biases, an untied head).

The input may be the ids or ``{"inputs": ids, "mask": m}`` (or ``"lengths"``):
the padding reaches every block's attention. Decoding passes a cache as
``state``: ``{"position": int32, "blocks": the blocks' KV caches}`` from
:meth:`GPT.init_cache`; the position reaches the position encoding as the
``offset`` extra. :func:`generate` does this for you.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, extras_of, init_child, split_inputs
from ..core._combinators import Sequential
from ..core._layer import Layer, Params, State, layer_error
from ..core._stack import Stack
from ..layers._dense import Dense
from ..layers._dropout import Dropout
from ..layers._embedding import Embedding
from ..layers._position import LearnedPositions, RotaryPositions, SinusoidalPositions
from ..layers._transformer import NORMS, TransformerBlock

POSITIONS = ("learned", "sinusoidal", "rotary")
AUTO_UNROLL_MAX_LAYERS = 12  # unroll=None unrolls the Stack up to this depth
#: The settings that make :class:`GPT` a Llama-family model (give ``rotary`` for its base).
LLAMA_SETTINGS: dict[str, Any] = {
    "positions": "rotary",
    "norm": "rms",
    "epsilon": 1e-6,
    "activation": "swiglu",
    "use_bias": False,
    "tied_head": False,
}


def auto_unroll(num_layers: int, remat: bool, unroll: int | bool | None = None) -> int | bool:
    """A Stack's ``lax.scan`` unroll: ``unroll`` when given, else every block compiled up to
    ``AUTO_UNROLL_MAX_LAYERS`` blocks without ``remat``, and a rolled loop (1) beyond."""
    if unroll is not None:
        return unroll
    return True if num_layers <= AUTO_UNROLL_MAX_LAYERS and not remat else 1


def block_stack(
    block: Layer, num_layers: int, stacked: bool, remat: bool, unroll: int | bool | None = None
) -> Stack | Sequential:
    """``num_layers`` copies of ``block``: a :class:`nnfun.Stack` (one ``lax.scan`` over
    stacked params, unrolled as :func:`auto_unroll` says) or, unstacked, a ``Sequential``.
    GPT, Bert and ViT build their blocks with it."""
    if stacked:
        return Stack(num_layers, block, remat=remat, unroll=auto_unroll(num_layers, remat, unroll))
    return Sequential([block] * num_layers)


class GPT(Layer):
    """Decoder-only transformer language model (GPT-2 and Llama families).

    Args:
        vocab_size: number of token ids.
        d_model: model width.
        num_heads: attention heads per block (must divide ``d_model``).
        num_layers: transformer blocks.
        max_length: the longest sequence (prompt plus generated tokens).
        mlp_ratio: MLP hidden width as a multiple of ``d_model``.
        dropout: dropout on the embeddings, residual branches and attention weights.
        num_kv_heads: key/value heads (grouped-query attention), default ``num_heads``.
        positions: ``"learned"`` (GPT-2), ``"sinusoidal"`` or ``"rotary"`` (RoPE
            on queries and keys).
        stacked: blocks in a :class:`nnfun.Stack` (one ``lax.scan``, compile time
            independent of depth); False unrolls them in a ``Sequential``.
        remat: recompute block activations in the backward pass (Stack only).
        unroll: the Stack's ``lax.scan`` unroll (an int >= 1 or True); True
            compiles every block, like ``stacked=False``, but keeps the stacked
            params. ``None`` (the default) picks True for up to
            ``AUTO_UNROLL_MAX_LAYERS`` (12) blocks without ``remat`` and 1
            (a rolled loop) otherwise: on 2 CPU cores the unrolled 4-block
            training step ran at 0.8x the rolled one's time and compiled as
            fast; at 12 blocks it compiles in 4.5 s instead of 2.3 s, at 48 in
            19 s instead of 3 s (``benchmarks/NOTES.md``, phase 3). ``remat``
            keeps the loop, the only place XLA:CPU honours it.
        attention_kernel: the blocks' attention kernel: ``"auto"`` (by backend),
            ``"cpu"``, ``"xla"`` or ``"cudnn"`` (:class:`nnfun.MultiHeadAttention`).
        norm: ``"layer"`` (LayerNorm, GPT-2) or ``"rms"`` (RMSNorm, Llama), in the
            blocks and at the end.
        epsilon: the norms' epsilon.
        activation: the MLP's (:class:`nnfun.FeedForward`): ``"gelu_tanh"``
            (GPT-2), ``"swiglu"`` (Llama), ``"gelu"``, ``"relu"``.
        mlp_features: the MLP's hidden width; overrides ``mlp_ratio``.
        use_bias: biases in the attention and MLP projections.
        qkv_bias: biases in the query/key/value projections only; default
            ``use_bias`` (Qwen2: True with ``use_bias=False``).
        tied_head: the output projection is the embedding table (GPT-2); False
            gives a separate bias-free ``head`` Dense (Llama).
        rotary: the :class:`nnfun.RotaryPositions` settings (base, frequency
            scaling) when ``positions="rotary"``; default
            ``RotaryPositions(max_length=max_length)``.

    Shapes: int ``(batch, time) -> (batch, time, vocab_size)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models.gpt import GPT
        >>> model = GPT(vocab_size=11, d_model=16, num_heads=2, num_layers=2, max_length=8)
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
        >>> params["blocks"]["layer"]["mlp"]["hidden"]["kernel"].shape
        (2, 16, 64)
        >>> model.apply(params, state, jnp.zeros((3, 5), jnp.int32))[0].shape
        (3, 5, 11)
        >>> from nnfun.models.gpt import LLAMA_SETTINGS
        >>> llama = GPT(11, 16, num_heads=2, num_kv_heads=1, num_layers=1, **LLAMA_SETTINGS)
        >>> sorted(llama.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))[0])
        ['blocks', 'embedding', 'head', 'norm']
    """

    vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 4
    max_length: int = 256
    mlp_ratio: int = 4
    dropout: float = 0.0
    num_kv_heads: int | None = None
    positions: str = "learned"
    stacked: bool = True
    remat: bool = False
    unroll: int | bool | None = None
    attention_kernel: str = "auto"
    norm: str = "layer"
    epsilon: float = 1e-5
    activation: str = "gelu_tanh"
    mlp_features: int | None = None
    use_bias: bool = True
    qkv_bias: bool | None = None
    tied_head: bool = True
    rotary: RotaryPositions | None = None

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"GPT positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.rotary is not None and self.positions != "rotary":
            raise ValueError(
                f"GPT: rotary settings were given but positions={self.positions!r}; "
                "pass positions='rotary' with them, or drop rotary"
            )
        if self.d_model % self.num_heads:
            raise ValueError(
                f"GPT: num_heads={self.num_heads} does not divide d_model={self.d_model}; "
                "pick a head count that divides the model width"
            )
        self._children()  # validates the children's settings now

    @property
    def block(self) -> TransformerBlock:
        rotary = None
        if self.positions == "rotary":
            rotary = self.rotary or RotaryPositions(max_length=self.max_length)
        return TransformerBlock(
            self.num_heads,
            self.num_kv_heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            causal=True,
            rotary=rotary,
            use_bias=self.use_bias,
            activation=self.activation,
            epsilon=self.epsilon,
            mlp_features=self.mlp_features,
            attention_kernel=self.attention_kernel,
            norm=self.norm,
            qkv_bias=self.qkv_bias,
        )

    @property
    def scan_unroll(self) -> int | bool:
        """The ``unroll`` the Stack gets: ``unroll``, or the automatic choice when it is None."""
        return auto_unroll(self.num_layers, self.remat, self.unroll)

    def _blocks(self) -> Stack | Sequential:
        return block_stack(self.block, self.num_layers, self.stacked, self.remat, self.unroll)

    def _children(self) -> tuple[tuple[str, Layer], ...]:
        table: dict[str, Layer] = {
            "learned": LearnedPositions(self.max_length),
            "sinusoidal": SinusoidalPositions(self.max_length),
        }
        children: list[tuple[str, Layer]] = [
            ("embedding", Embedding(self.vocab_size, self.d_model))
        ]
        if self.positions in table:
            children.append(("positions", table[self.positions]))
        children += [
            ("embedding_dropout", Dropout(self.dropout)),
            ("blocks", self._blocks()),
            ("norm", NORMS[self.norm](epsilon=self.epsilon)),
        ]
        if not self.tied_head:
            children.append(("head", Dense(self.vocab_size, use_bias=False)))
        return tuple(children)

    def _check(self, ids: Any) -> None:
        if len(ids.shape) != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise layer_error(
                self, f"expected int token ids (batch, time), got {ids.dtype} {tuple(ids.shape)}"
            )

    @property
    def extras(self) -> frozenset[str]:
        return extras_of(*(layer for _, layer in self._children()))

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, extras = split_inputs(self, x)
        self._check(x)
        params: Params = {}
        for name, layer in self._children():
            params[name], _, x = init_child(name, layer, key, x, extras)
        return {k: v for k, v in params.items() if v}, {}

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
        self._check(x)
        if state:  # decoding: the cache's position is the offset of these tokens
            extras = {**extras, "offset": state["position"]}
        new_state: State = {}
        for name, layer in self._children():
            p, s = params.get(name, {}), state.get(name, {})
            x, s = apply_child(name, layer, p, s, x, key, train, extras)
            if s:
                new_state[name] = s
        if state:
            new_state["position"] = state["position"] + x.shape[1]
        if not self.tied_head:
            return x, new_state
        logits = Embedding(self.vocab_size, self.d_model).attend(params["embedding"], x)
        return logits, new_state

    def init_cache(self, params: Params, batch_size: int, max_length: int | None = None) -> State:
        """The decoding state: a KV cache per block and the next position.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from nnfun.models.gpt import GPT
            >>> model = GPT(vocab_size=11, d_model=16, num_heads=2, num_layers=2, max_length=8)
            >>> params, _ = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
            >>> cache = model.init_cache(params, batch_size=3)
            >>> cache["blocks"]["layer"]["attention"]["key"].shape
            (2, 3, 8, 2, 8)
        """
        max_length = self.max_length if max_length is None else max_length
        blocks = self._blocks()
        if isinstance(blocks, Stack):
            caches = blocks.init_cache(params["blocks"], batch_size, max_length)
        else:
            caches = {
                name: self.block.init_cache(params["blocks"][name], batch_size, max_length)
                for name, _ in blocks.layers
            }
        return {"position": jnp.zeros((), jnp.int32), "blocks": caches}


def _sample(logits: jax.Array, key: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "top_k"))
def generate(
    model: GPT,
    params: Params,
    prompt: jax.Array,
    key: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> jax.Array:
    """Samples ``max_new_tokens`` tokens after ``prompt``, under ``jax.jit``, with a KV cache.

    The prompt runs through the model once (filling the cache); then a ``lax.scan``
    feeds back one sampled token at a time.

    Args:
        model: the :class:`GPT` (static).
        params: its params.
        prompt: int ``(batch, prompt_length)``, ``prompt_length >= 1``.
        key: PRNG key.
        max_new_tokens: tokens to add (static); ``prompt_length + max_new_tokens``
            must not exceed ``model.max_length``.
        temperature: divides the logits (lower: more conservative).
        top_k: sample among the ``top_k`` likeliest tokens only; ``top_k=1`` is greedy.

    Returns:
        int32 ``(batch, prompt_length + max_new_tokens)``: the prompt, then the samples.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models.gpt import GPT, generate
        >>> model = GPT(vocab_size=11, d_model=16, num_heads=2, num_layers=1, max_length=8)
        >>> params, _ = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
        >>> generate(model, params, jnp.array([[1, 2]]), jax.random.key(1), 5).shape
        (1, 7)
    """
    batch, length = prompt.shape
    total = length + max_new_tokens
    if length < 1 or total > model.max_length:
        raise ValueError(
            f"generate: prompt length {length} + max_new_tokens {max_new_tokens} = {total} "
            f"exceeds the model's max_length {model.max_length} (or the prompt is empty)"
        )
    if top_k is not None and not 1 <= top_k <= model.vocab_size:
        raise ValueError(f"generate: top_k must be in [1, {model.vocab_size}], got {top_k}")
    if max_new_tokens == 0:
        return prompt.astype(jnp.int32)
    cache = model.init_cache(params, batch, total)
    logits, cache = model.apply(params, cache, prompt)
    keys = jax.random.split(key, max_new_tokens)
    first = _sample(logits[:, -1], keys[0], temperature, top_k)

    def step(
        carry: tuple[jax.Array, State], k: jax.Array
    ) -> tuple[tuple[jax.Array, State], jax.Array]:
        token, cache = carry
        logits, cache = model.apply(params, cache, token[:, None])
        return (_sample(logits[:, -1], k, temperature, top_k), cache), token

    (last, _), tokens = jax.lax.scan(step, (first, cache), keys[1:])
    new = jnp.concatenate([jnp.swapaxes(tokens, 0, 1), last[:, None]], axis=1)
    return jnp.concatenate([prompt.astype(jnp.int32), new], axis=1)
