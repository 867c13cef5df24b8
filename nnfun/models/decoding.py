"""Greedy and beam-search decoding of an :class:`~nnfun.models.seq2seq.EncoderDecoder`.

Both run under ``jax.jit`` end to end: the sources are encoded once
(``model.init_cache``), then a ``lax.while_loop`` feeds one token per step
through the decoder's KV cache, so no prefix is ever recomputed. They stop at
``max_length`` tokens or, earlier, once every sequence has finished.

Beam search keeps, per source, ``beam_width`` alive hypotheses ranked by their
log-probability and ``beam_width`` finished ones (ended by EOS, or cut at
``max_length``) ranked by the length-normalised score of Wu et al. (2016):
``log P(Y) / lp(Y)`` with ``lp(Y) = ((5 + |Y|) / 6) ** alpha``. It stops early
when no alive hypothesis can beat the worst finished one.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ..core._layer import Params
from .seq2seq import EncoderDecoder, reorder_cache

NEG_INF = -1.0e9  # finite: -inf - -inf would give NaN in the score arithmetic


def length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
    """Wu et al. (2016)'s ``((5 + length) / 6) ** alpha``; 1 when ``alpha`` is 0.

    Example:
        >>> from nnfun.models.decoding import length_penalty
        >>> round(float(length_penalty(7, 0.6)), 4)
        1.5157
    """
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _check(model: Any, max_length: int, bos_id: int, eos_id: int, beam_width: int = 1) -> None:
    if not isinstance(model, EncoderDecoder):
        raise TypeError(f"expected an EncoderDecoder, got {type(model).__name__}")
    vocab = model.vocab
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if not 0 <= value < vocab:
            raise ValueError(f"{name}={value} is outside the target vocabulary [0, {vocab})")
    if not 1 <= max_length <= model.max_target_length:
        raise ValueError(
            f"max_length={max_length} must lie in [1, max_target_length={model.max_target_length}]"
        )
    if not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be an int >= 1, got {beam_width!r}")


def _step(model: EncoderDecoder, params: Params, cache: Any, tokens: jax.Array) -> Any:
    logits, cache = model.apply(params, cache, tokens[:, None])
    return jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1), cache


@functools.partial(jax.jit, static_argnames=("model", "max_length", "bos_id", "eos_id", "pad_id"))
def greedy_search(
    model: EncoderDecoder,
    params: Params,
    source: Any,
    *,
    max_length: int,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """The likeliest token at every step, with a KV cache, under ``jit``.

    Args:
        model: the :class:`EncoderDecoder` (static).
        params: its params.
        source: ids ``(batch, S)`` or ``{"inputs": ids, "lengths": (batch,)}``.
        max_length: the most tokens generated, EOS included (static).
        bos_id: the id fed first.
        eos_id: ends a sequence; later positions hold ``pad_id``.
        pad_id: fills the positions after EOS.

    Returns:
        ``(tokens, scores)``: int32 ``(batch, max_length)`` (without BOS, with
        EOS) and float32 ``(batch,)``, the log-probability of each sequence.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models.seq2seq import EncoderDecoder
        >>> from nnfun.models.decoding import greedy_search
        >>> model = EncoderDecoder(source_vocab_size=7, d_model=8, num_heads=2,
        ...                        num_encoder_layers=1, num_decoder_layers=1)
        >>> ids = jnp.ones((2, 3), jnp.int32)
        >>> x = {"inputs": ids, "decoder_inputs": ids}
        >>> params, _ = model.init(jax.random.key(0), x)
        >>> tokens, scores = greedy_search(model, params, x["inputs"], max_length=4,
        ...                                bos_id=1, eos_id=2)
        >>> tokens.shape, scores.shape
        ((2, 4), (2,))
    """
    _check(model, max_length, bos_id, eos_id)
    cache = model.init_cache(params, source, max_length)
    batch = cache["memory_mask"].shape[0]
    init = (
        jnp.zeros((), jnp.int32),
        jnp.full((batch,), bos_id, jnp.int32),
        cache,
        jnp.full((batch, max_length), pad_id, jnp.int32),
        jnp.zeros((batch,), bool),
        jnp.zeros((batch,), jnp.float32),
    )

    def cond(carry: tuple[Any, ...]) -> jax.Array:
        step, _, _, _, done, _ = carry
        return (step < max_length) & ~jnp.all(done)

    def body(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        step, tokens, cache, out, done, scores = carry
        log_probs, cache = _step(model, params, cache, tokens)
        best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
        picked = jnp.take_along_axis(log_probs, best[:, None], axis=-1)[:, 0]
        scores = scores + jnp.where(done, 0.0, picked)
        out = out.at[:, step].set(jnp.where(done, pad_id, best))
        return step + 1, best, cache, out, done | (best == eos_id), scores

    _, _, _, out, _, scores = jax.lax.while_loop(cond, body, init)
    return out, scores


def _gather(tree: Any, indices: jax.Array) -> Any:
    # indices (batch, k) into axis 1 of every (batch, n, ...) leaf.
    def take(a: jax.Array) -> jax.Array:
        shape = indices.shape + (1,) * (a.ndim - 2)
        return jnp.take_along_axis(a, indices.reshape(shape), axis=1)

    return jax.tree.map(take, tree)


@functools.partial(
    jax.jit,
    static_argnames=("model", "beam_width", "max_length", "bos_id", "eos_id", "pad_id"),
)
def beam_search(
    model: EncoderDecoder,
    params: Params,
    source: Any,
    *,
    beam_width: int,
    max_length: int,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    alpha: float = 0.6,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with Wu et al.'s length penalty, a KV cache, under ``jit``.

    Args:
        model: the :class:`EncoderDecoder` (static).
        params: its params.
        source: ids ``(batch, S)`` or ``{"inputs": ids, "lengths": (batch,)}``.
        beam_width: hypotheses kept per source (static, >= 1).
        max_length: the most tokens generated, EOS included (static); a
            hypothesis that reaches it unfinished ends there.
        bos_id: the id fed first.
        eos_id: ends a hypothesis.
        pad_id: fills the positions after EOS.
        alpha: the length penalty's exponent (0: plain log-probability).

    Returns:
        ``(sequences, scores)``: int32 ``(batch, beam_width, max_length)`` best
        first (without BOS, with EOS, then ``pad_id``) and float32
        ``(batch, beam_width)``: ``log P / lp`` of each.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models.seq2seq import EncoderDecoder
        >>> from nnfun.models.decoding import beam_search
        >>> model = EncoderDecoder(source_vocab_size=7, d_model=8, num_heads=2,
        ...                        num_encoder_layers=1, num_decoder_layers=1)
        >>> ids = jnp.ones((2, 3), jnp.int32)
        >>> x = {"inputs": ids, "decoder_inputs": ids}
        >>> params, _ = model.init(jax.random.key(0), x)
        >>> seqs, scores = beam_search(model, params, x["inputs"], beam_width=3, max_length=4,
        ...                            bos_id=1, eos_id=2)
        >>> seqs.shape, scores.shape
        ((2, 3, 4), (2, 3))
    """
    _check(model, max_length, bos_id, eos_id, beam_width)
    width = beam_width
    cache = model.init_cache(params, source, max_length, repeat=width)
    batch = cache["memory_mask"].shape[0] // width
    vocab = model.vocab
    alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (width - 1)), (batch, 1))
    init = dict(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        alive=jnp.full((batch, width, max_length), pad_id, jnp.int32),
        alive_logp=alive_logp,
        last=jnp.full((batch, width), bos_id, jnp.int32),
        finished=jnp.full((batch, width, max_length), pad_id, jnp.int32),
        finished_scores=jnp.full((batch, width), NEG_INF),
    )

    def cond(s: dict[str, Any]) -> jax.Array:
        # The best an alive hypothesis can still reach: its log-probability only
        # falls, and the penalty is largest at max_length.
        bound = s["alive_logp"][:, 0] / length_penalty(max_length, alpha)
        worst_finished = s["finished_scores"][:, -1]
        return (s["step"] < max_length) & ~jnp.all(worst_finished >= bound)

    def body(s: dict[str, Any]) -> dict[str, Any]:
        step = s["step"]
        log_probs, cache = _step(model, params, s["cache"], s["last"].reshape(-1))
        candidates = s["alive_logp"][:, :, None] + log_probs.reshape(batch, width, vocab)
        top_logp, top_index = jax.lax.top_k(candidates.reshape(batch, -1), 2 * width)
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        seqs = _gather(s["alive"], parent).at[:, :, step].set(token)
        ended = (token == eos_id) | (step + 1 == max_length)
        # Alive: the best non-EOS continuations (2 * width candidates hold >= width).
        keep_logp, keep = jax.lax.top_k(jnp.where(token == eos_id, NEG_INF, top_logp), width)
        # Finished: the best of the old and the newly ended, by normalised score.
        new_scores = jnp.where(ended, top_logp / length_penalty(step + 1, alpha), NEG_INF)
        pool = jnp.concatenate([s["finished_scores"], new_scores], axis=1)
        finished_scores, best = jax.lax.top_k(pool, width)
        pool_seqs = jnp.concatenate([s["finished"], seqs], axis=1)
        rows = (jnp.arange(batch)[:, None] * width + _gather(parent, keep)).reshape(-1)
        return dict(
            step=step + 1,
            cache=reorder_cache(cache, rows),
            alive=_gather(seqs, keep),
            alive_logp=keep_logp,
            last=_gather(token, keep),
            finished=_gather(pool_seqs, best),
            finished_scores=finished_scores,
        )

    final: dict[str, Any] = jax.lax.while_loop(cond, body, init)
    return final["finished"], final["finished_scores"]
