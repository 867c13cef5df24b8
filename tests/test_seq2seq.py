"""Encoder-decoder: cached decoding equals the full pass; greedy and beam search."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.models.decoding import beam_search, greedy_search, length_penalty
from nnfun.models.seq2seq import EncoderDecoder

BOS, EOS = 1, 2


@pytest.fixture(scope="module")
def tiny():
    model = EncoderDecoder(
        source_vocab_size=6,
        target_vocab_size=5,
        d_model=16,
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=2,
        max_source_length=6,
        max_target_length=6,
    )
    x = {"inputs": jnp.zeros((1, 4), jnp.int32), "decoder_inputs": jnp.zeros((1, 3), jnp.int32)}
    params, _ = model.init(jax.random.key(3), x)
    # Larger weights than the initialisation's make the distributions peaked and varied.
    params = jax.tree.map(lambda a: a * 4.0, params)
    source = {"inputs": jnp.array([[3, 4, 5, 0], [5, 3, 0, 0]]), "lengths": jnp.array([3, 2])}
    return model, params, source


@jax.jit(static_argnums=0)
def _teacher_forced(model, params, source, ids):
    logits, _ = model.apply(params, {}, {**source, "decoder_inputs": ids})
    return jax.nn.log_softmax(logits[:, -1], axis=-1)


def _log_probs(model, params, source, prefix):
    """Teacher-forced log-probabilities of the next token after ``prefix`` (no cache)."""
    batch = source["inputs"].shape[0]
    ids = jnp.array([[BOS, *prefix]] * batch, jnp.int32)
    return np.asarray(_teacher_forced(model, params, source, ids))


def test_cached_decoding_equals_the_teacher_forced_pass(tiny):
    model, params, source = tiny
    targets = jnp.array([[BOS, 3, 4, 3, 2], [BOS, 4, 4, 2, 0]])
    full, _ = model.apply(params, {}, {**source, "decoder_inputs": targets})
    cache = model.init_cache(params, source, max_length=6)
    step = jax.jit(model.apply)
    logits, cache = step(params, cache, targets[:, :2])  # a prefix of two, then one at a time
    outputs = [logits]
    for t in range(2, 5):
        logits, cache = step(params, cache, targets[:, t : t + 1])
        outputs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-4)
    assert int(cache["position"]) == 5


def test_decoder_block_cache_equals_full_pass(key):
    block = nf.DecoderBlock(num_heads=2, norm_first=False, activation="relu", mlp_features=10)
    x = jax.random.normal(key, (2, 5, 8))
    memory = jax.random.normal(jax.random.fold_in(key, 1), (2, 7, 8))
    lengths = jnp.array([7, 4])
    inputs = {"inputs": x, "memory": memory, "memory_lengths": lengths}
    params, _ = block.init(key, inputs)
    full, _ = block.apply(params, {}, inputs)
    cache = block.init_cache(params, 2, 5, memory)
    steps = []
    for t in range(5):
        y, cache = block.apply(
            params, cache, {"inputs": x[:, t : t + 1], "memory_lengths": lengths}
        )
        steps.append(y)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


def test_greedy_equals_a_loop_that_recomputes_the_prefix(tiny):
    model, params, source = tiny
    tokens, scores = greedy_search(model, params, source, max_length=5, bos_id=BOS, eos_id=EOS)
    for b in range(2):
        one = jax.tree.map(lambda a, b=b: a[b : b + 1], source)
        prefix, total = [], 0.0
        for _ in range(5):
            log_probs = _log_probs(model, params, one, prefix)[0]
            token = int(np.argmax(log_probs))
            prefix.append(token)
            total += log_probs[token]
            if token == EOS:
                break
        want = prefix + [0] * (5 - len(prefix))
        assert np.asarray(tokens[b]).tolist() == want
        np.testing.assert_allclose(scores[b], total, rtol=1e-4)


def test_beam_width_one_equals_greedy(tiny):
    model, params, source = tiny
    tokens, scores = greedy_search(model, params, source, max_length=5, bos_id=BOS, eos_id=EOS)
    seqs, beam_scores = beam_search(
        model, params, source, beam_width=1, max_length=5, bos_id=BOS, eos_id=EOS, alpha=0.0
    )
    np.testing.assert_array_equal(seqs[:, 0], tokens)
    np.testing.assert_allclose(beam_scores[:, 0], scores, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_finds_the_exhaustive_best(tiny, alpha):
    model, params, source = tiny
    max_length, vocab = 3, model.vocab
    # Every hypothesis: ends at its first EOS, or is cut at max_length.
    best = []
    for b in range(2):
        one = jax.tree.map(lambda a, b=b: a[b : b + 1], source)
        scored = []
        for n in range(1, max_length + 1):
            for seq in itertools.product(range(vocab), repeat=n):
                if EOS in seq[:-1] or (n < max_length and seq[-1] != EOS):
                    continue
                logp = sum(_log_probs(model, params, one, seq[:t])[0][seq[t]] for t in range(n))
                scored.append((logp / float(length_penalty(n, alpha)), seq))
        best.append(sorted(scored, reverse=True)[:3])
    seqs, scores = beam_search(
        model,
        params,
        source,
        beam_width=vocab**2,
        max_length=max_length,
        bos_id=BOS,
        eos_id=EOS,
        alpha=alpha,
    )
    for b in range(2):
        for rank, (score, seq) in enumerate(best[b]):
            got = [t for t in np.asarray(seqs[b, rank]).tolist()][: len(seq)]
            assert got == list(seq), (b, rank)
            np.testing.assert_allclose(scores[b, rank], score, rtol=1e-4)


def test_bad_inputs(tiny):
    model, params, source = tiny
    ids = source["inputs"]
    with pytest.raises(nf.LayerError, match="source has batch 2 but decoder_inputs have batch 3"):
        model.apply(params, {}, {"inputs": ids, "decoder_inputs": jnp.zeros((3, 2), jnp.int32)})
    with pytest.raises(nf.LayerError, match=r"target_positions.*max_length=6"):
        model.apply(params, {}, {"inputs": ids, "decoder_inputs": jnp.zeros((2, 7), jnp.int32)})
    with pytest.raises(nf.LayerError, match="decoder_inputs .* are missing"):
        model.apply(params, {}, {"inputs": ids})
    with pytest.raises(nf.LayerError, match=r"'lengths' of ints shaped \(2,\)"):
        model.apply(
            params, {}, {"inputs": ids, "lengths": jnp.array([1, 2, 3]), "decoder_inputs": ids}
        )
    target = jnp.zeros((2, 4), jnp.int32)
    with pytest.raises(nf.LayerError, match=r"'decoder_lengths' of ints shaped \(2,\)"):
        model.apply(
            params,
            {},
            {"inputs": ids, "decoder_inputs": target, "decoder_lengths": jnp.array([1, 2, 3])},
        )
    with pytest.raises(nf.LayerError, match=r"'decoder_mask' of bools shaped \(2, 4\)"):
        model.apply(
            params,
            {},
            {"inputs": ids, "decoder_inputs": target, "decoder_mask": jnp.ones((2, 5), bool)},
        )
    with pytest.raises(ValueError, match="beam_width must be an int >= 1"):
        beam_search(model, params, source, beam_width=0, max_length=3, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match=r"eos_id=9 is outside the target vocabulary \[0, 5\)"):
        greedy_search(model, params, source, max_length=3, bos_id=BOS, eos_id=9)
    cache = model.init_cache(params, source, max_length=4)
    with pytest.raises(nf.LayerError, match="cache was built for batch 2 but the ids have batch 3"):
        model.apply(params, cache, jnp.zeros((3, 1), jnp.int32))
    with pytest.raises(nf.LayerError, match="max_length=9 exceeds max_target_length=6"):
        model.init_cache(params, source, max_length=9)
    with pytest.raises(ValueError, match="share_embeddings=True needs one vocabulary"):
        EncoderDecoder(source_vocab_size=6, target_vocab_size=5, share_embeddings=True)


def test_shared_and_untied_embeddings(key):
    x = {"inputs": jnp.ones((2, 3), jnp.int32), "decoder_inputs": jnp.ones((2, 4), jnp.int32)}
    shared = EncoderDecoder(
        source_vocab_size=7,
        d_model=8,
        num_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        share_embeddings=True,
        tie_output=False,
    )
    params, _ = shared.init(key, x)
    assert "target_embedding" not in params and params["head"]["kernel"].shape == (8, 7)
    assert shared.apply(params, {}, x)[0].shape == (2, 4, 7)
