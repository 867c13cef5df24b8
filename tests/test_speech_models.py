"""Speech models: frame lengths, padding invariance, errors; a smoke run of the example."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.examples import speech as example
from nnfun.models.speech import CTCModel, KeywordClassifier, SpeechEncoder, keyword_recipe

TINY = SpeechEncoder(channels=(8, 8), strides=(2, 1), rnn_features=8, rnn_layers=1)


@pytest.fixture(scope="module")
def ctc_model():
    model = CTCModel(TINY)
    x = {"inputs": jnp.zeros((2, 8000)), "lengths": jnp.array([8000, 8000])}
    params, state = model.init(jax.random.key(0), x)
    return model, params, state


def test_frame_lengths_follow_hop_and_strides(ctc_model):
    model, params, state = ctc_model
    rng = np.random.default_rng(0)
    audio = jnp.asarray(rng.standard_normal((3, 8000)) * 0.1, jnp.float32)
    lengths = jnp.array([8000, 5000, 1601])
    y, _ = jax.jit(model.apply)(params, state, {"inputs": audio, "lengths": lengths})
    # 1 + n // 160 frames from the centred STFT, then ceil(frames / 2) after the stride.
    expected = [(1 + n // 160 + 1) // 2 for n in (8000, 5000, 1601)]
    assert (
        y["lengths"].tolist()
        == expected
        == model.frame_lengths(np.array([8000, 5000, 1601])).tolist()
    )
    assert y["logits"].shape == (3, 26, nf.models.speech.CHAR_CLASSES)


def test_padding_never_changes_the_real_frames(ctc_model):
    model, params, state = ctc_model
    rng = np.random.default_rng(1)
    short = jnp.asarray(rng.standard_normal((1, 4800)) * 0.1, jnp.float32)
    run = jax.jit(model.apply)
    alone, _ = run(params, state, short)
    padded = jnp.pad(short, ((0, 0), (0, 3200)))
    noise = jnp.asarray(rng.standard_normal((1, 8000)) * 0.1, jnp.float32)
    batch = {"inputs": jnp.concatenate([padded, noise]), "lengths": jnp.array([4800, 8000])}
    together, _ = run(params, state, batch)
    n = int(alone["lengths"][0])
    assert int(together["lengths"][0]) == n
    np.testing.assert_allclose(together["logits"][0, :n], alone["logits"][0], atol=2e-5)


def test_keyword_classifier_pools_real_frames_only():
    model = KeywordClassifier(TINY)
    rng = np.random.default_rng(2)
    audio = jnp.asarray(rng.standard_normal((1, 4000)) * 0.1, jnp.float32)
    params, state = model.init(jax.random.key(1), audio)
    run = jax.jit(model.apply)
    alone, _ = run(params, state, audio)
    padded = {"inputs": jnp.pad(audio, ((0, 0), (0, 4000))), "lengths": jnp.array([4000])}
    together, _ = run(params, state, padded)
    assert alone.shape == (1, 10)
    np.testing.assert_allclose(together, alone, atol=2e-5)
    assert keyword_recipe().model.classes == 10


def test_speech_models_reject_bad_inputs(ctc_model):
    model, params, state = ctc_model
    with pytest.raises(nf.LayerError, match=r"expected audio \(batch, samples\)"):
        model.apply(params, state, jnp.zeros(8000))
    with pytest.raises(nf.LayerError, match=r"lengths.*must lie in \[1, 8000\]"):
        model.apply(params, state, {"inputs": jnp.zeros((1, 8000)), "lengths": jnp.array([9000])})
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SpeechEncoder(kernel_size=4)
    with pytest.raises(ValueError, match="one entry per convolution"):
        SpeechEncoder(channels=(8, 8), strides=(2,))


def test_speech_example_smoke_run(tmp_path, capsys):
    args = "--train-size 48 --test-size 12 --steps 3 --channels 8 --rnn 8 --rnn-layers 1"
    example.main([*args.split(), "--buckets", "60000", "--cache-dir", str(tmp_path), "--beam", "2"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    pattern = (
        r"^speech: test CER (\d\.\d{3}), WER (\d\.\d{3}), digit-string accuracy (\d\.\d{3}) "
        r"\(unseen voices, greedy, beam-2 CER \d\.\d{3} accuracy \d\.\d{3}, seed=0, "
    )
    match = re.match(pattern, last)
    assert match, last
    assert 0 <= float(match[3]) <= 1 and float(match[1]) > 0  # 3 steps learn nothing yet


def test_example_scores_by_hand():
    s = example.scores(["one two", "three"], ["one too", "three"])
    assert s["cer"] == pytest.approx(1 / 12) and s["wer"] == pytest.approx(1 / 3)
    assert s["accuracy"] == 0.5


def test_keyword_task_smoke_run(tmp_path, capsys):
    args = "--task keyword --train-size 24 --test-size 8 --steps 2 --channels 8 --rnn 8"
    example.main([*args.split(), "--buckets", "20000", "--cache-dir", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.match(r"^speech keywords: test accuracy (\d\.\d{3}) \(unseen voices, seed=0, ", last)
    assert match and 0 <= float(match[1]) <= 1, last
