"""Smoke runs of the sequence examples: char_lm and the MNIST-1D GRU recipe (tiny settings)."""

import math

import jax
import jax.numpy as jnp
import pytest

import nnfun.data as nd
from nnfun.examples import char_lm
from nnfun.models.mnist1d import RECIPES


@pytest.mark.slow
def test_char_lm_learns_and_samples(capsys):
    result = char_lm.main(
        [
            "--steps",
            "40",
            "--eval-every",
            "20",
            "--d-model",
            "32",
            "--layers",
            "1",
            "--heads",
            "2",
            "--seq-len",
            "32",
            "--batch-size",
            "16",
            "--eval-batches",
            "2",
            "--samples",
            "2",
            "--lr",
            "1e-2",
        ]
    )
    vocab = nd.CharTokenizer.from_text(nd.pydoc_text()).vocab_size
    uniform_bits = math.log2(vocab)  # the loss of a model that knows nothing
    assert result["val_bpc"] < uniform_bits - 1.0
    assert len(result["samples"]) == 2 and all(len(s) == 32 for s in result["samples"])
    out = capsys.readouterr().out
    assert "validation" in out and "bits/char" in out


def test_gru_recipe_shapes(key):
    recipe = RECIPES["gru"]()
    assert recipe.input_shape == (40, 1)
    params, state = recipe.model.init(key, jnp.zeros((1, 40, 1)))
    logits, _ = recipe.model.apply(params, state, jnp.ones((3, 40, 1)))
    assert logits.shape == (3, 10)
    assert jnp.all(jnp.isfinite(logits))


@pytest.mark.slow
def test_mnist1d_example_runs_gru(capsys):
    from nnfun.examples import mnist1d

    mnist1d.main(
        [
            "--model",
            "gru",
            "--steps",
            "20",
            "--eval-every",
            "20",
            "--steps-per-call",
            "10",
            "--no-progress",
        ]
    )
    assert "test accuracy" in capsys.readouterr().out
    jax.clear_caches()
