"""The GPT model: stacked vs unrolled, cached decoding, sampling, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.models.gpt import GPT, generate

SMALL = dict(vocab_size=13, d_model=16, num_heads=2, num_layers=2, max_length=12)


def ids(key, shape, vocab=13):
    return jax.random.randint(key, shape, 0, vocab)


@pytest.fixture(scope="module")
def small():
    model = GPT(**SMALL)
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 12), jnp.int32))
    return model, params, state


def test_shapes_and_tied_output(small, key):
    model, params, state = small
    assert sorted(params) == ["blocks", "embedding", "norm", "positions"]
    assert "out" not in params  # the output projection is the embedding table
    logits, _ = model.apply(params, state, ids(key, (3, 7)))
    assert logits.shape == (3, 7, 13)
    # Logits are the final features against the embedding rows: scaling the table scales them.
    scaled = dict(params, embedding={"embedding": params["embedding"]["embedding"] * 0.0})
    assert np.allclose(model.apply(scaled, state, ids(key, (1, 3)))[0], 0.0)


def test_stacked_and_unrolled_agree(small, key):
    model, params, state = small
    unrolled = GPT(**SMALL, stacked=False)
    unrolled_params, _ = unrolled.init(jax.random.key(0), jnp.zeros((1, 12), jnp.int32))
    stack = nf.Stack(model.num_layers, model.block)
    chex.assert_trees_all_equal(stack.unstack(params["blocks"]), unrolled_params["blocks"])
    tokens = ids(key, (2, 9))
    chex.assert_trees_all_close(
        model.apply(params, state, tokens)[0],
        unrolled.apply(unrolled_params, {}, tokens)[0],
        atol=1e-5,
    )


def test_causal(small, key):
    model, params, state = small
    tokens = ids(key, (1, 8))
    changed = tokens.at[0, 5].set((tokens[0, 5] + 1) % 13)
    a, b = model.apply(params, state, tokens)[0], model.apply(params, state, changed)[0]
    np.testing.assert_allclose(a[0, :5], b[0, :5], atol=1e-6)
    assert not np.allclose(a[0, 5:], b[0, 5:])


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
@pytest.mark.parametrize("stacked", [True, False])
def test_cached_decoding_equals_full_pass(key, positions, stacked):
    model = GPT(**SMALL, positions=positions, stacked=stacked, num_kv_heads=1)
    params, state = model.init(key, jnp.zeros((1, 12), jnp.int32))
    tokens = ids(key, (2, 8))
    full, _ = model.apply(params, state, tokens)
    cache = model.init_cache(params, 2)
    step = jax.jit(model.apply)
    outputs = []
    for chunk in (tokens[:, :3], *(tokens[:, t : t + 1] for t in range(3, 8))):
        logits, cache = step(params, cache, chunk)
        outputs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), full, atol=1e-5)


def test_greedy_generation_matches_full_forward_argmax(small, key):
    model, params, state = small
    prompt = ids(key, (2, 3))
    out = generate(model, params, prompt, key, max_new_tokens=6, top_k=1)
    # Reference: re-run the whole sequence without a cache and append the argmax.
    seq = prompt
    for _ in range(6):
        logits, _ = model.apply(params, state, seq)
        seq = jnp.concatenate([seq, jnp.argmax(logits[:, -1], -1)[:, None].astype(seq.dtype)], 1)
    np.testing.assert_array_equal(out, seq)


def test_top_k_sampling_stays_in_top_k(small, key):
    model, params, state = small
    prompt = ids(key, (4, 2))
    out = generate(model, params, prompt, jax.random.key(3), max_new_tokens=5, top_k=2)
    np.testing.assert_array_equal(out[:, :2], prompt)
    logits, _ = model.apply(params, state, out[:, :-1])
    top2 = np.argsort(np.asarray(logits), axis=-1)[..., -2:]
    new = np.asarray(out[:, 2:])
    assert all(new[b, t] in top2[b, t + 1] for b in range(4) for t in range(5))
    again = generate(model, params, prompt, jax.random.key(3), max_new_tokens=5, top_k=2)
    np.testing.assert_array_equal(out, again)


def test_remat_gives_same_gradients(small, key):
    model, params, state = small
    remat = GPT(**SMALL, remat=True)
    tokens = ids(key, (2, 6))

    def grads(m):
        return jax.grad(lambda p: jnp.mean(m.apply(p, state, tokens)[0] ** 2))(params)

    chex.assert_trees_all_close(grads(remat), grads(model), atol=1e-6)


def test_unrolled_scan_gives_same_outputs_and_gradients(small, key):
    _, params, state = small
    model, unrolled = GPT(**SMALL, unroll=1), GPT(**SMALL, unroll=True)
    tokens = ids(key, (2, 6))

    def loss(m, p):
        return jnp.mean(m.apply(p, state, tokens)[0] ** 2)

    value, grads = jax.value_and_grad(loss, 1)(unrolled, params)
    ref_value, ref_grads = jax.value_and_grad(loss, 1)(model, params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    chex.assert_trees_all_close(grads, ref_grads, atol=1e-6)


def _scan_loops(model, tokens):
    """How many while loops the compiled forward pass of ``model`` keeps."""
    params, state = model.init(jax.random.key(0), tokens)
    hlo = jax.jit(model.apply).lower(params, state, tokens).compile().as_text()
    return hlo.count(" while(")


def test_unroll_default_unrolls_shallow_models_only(key):
    tokens = ids(key, (1, 6))
    small = dict(vocab_size=11, d_model=16, num_heads=2, max_length=12)
    shallow, deep = GPT(**small, num_layers=2), GPT(**small, num_layers=13)
    assert (shallow.scan_unroll, deep.scan_unroll) == (True, 1)
    assert GPT(**small, num_layers=2, remat=True).scan_unroll == 1
    assert GPT(**small, num_layers=13, unroll=4).scan_unroll == 4
    assert _scan_loops(shallow, tokens) == 0
    assert _scan_loops(deep, tokens) == 1
    assert _scan_loops(GPT(**small, num_layers=2, unroll=1), tokens) == 1


def test_errors(small, key):
    model, params, state = small
    with pytest.raises(ValueError, match="exceeds the model's max_length 12"):
        generate(model, params, ids(key, (1, 5)), key, max_new_tokens=8)
    with pytest.raises(ValueError, match="top_k must be in"):
        generate(model, params, ids(key, (1, 5)), key, max_new_tokens=2, top_k=0)
    with pytest.raises(ValueError, match="LearnedPositions at 'positions': positions up to 13"):
        model.apply(params, state, ids(key, (1, 13)))
    with pytest.raises(ValueError, match="expected int token ids"):
        model.apply(params, state, jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match="num_heads=3 does not divide d_model=16"):
        GPT(vocab_size=5, d_model=16, num_heads=3)
    with pytest.raises(ValueError, match="positions must be one of"):
        GPT(vocab_size=5, positions="alibi")
