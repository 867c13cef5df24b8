"""Sequence losses and metrics (``nnfun.train._sequence``) against NumPy and hand computations."""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun as nf
from nnfun import train

# Two sequences over 5 classes: row 0 has 2 real tokens then padding (id 0), row 1 has 4.
TARGETS = np.array([[3, 2, 0, 0], [1, 4, 2, 3]], np.int32)
LENGTHS = np.array([2, 4], np.int32)


def logits_sample(seed=0, shape=(2, 4, 5)):
    return (np.random.default_rng(seed).normal(size=shape) * 2).astype(np.float32)


def np_smoothed_token_losses(logits, labels, alpha):
    """-sum_k q_k log softmax(logits)_k with q = (1 - alpha) one_hot + alpha / K."""
    classes = logits.shape[-1]
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    q = (1 - alpha) * np.eye(classes)[labels] + alpha / classes
    return -(q * log_probs).sum(-1)


def test_public_names():
    for name in ("sequence_cross_entropy", "token_accuracy", "exact_match", "corpus_bleu"):
        assert getattr(nf, name) is getattr(train, name)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
@pytest.mark.parametrize("jit", [False, True])
def test_cross_entropy_against_numpy(alpha, jit):
    logits = logits_sample()
    tokens = np_smoothed_token_losses(logits.astype(np.float64), TARGETS, alpha)
    mask = np.arange(4)[None, :] < LENGTHS[:, None]
    loss = nf.sequence_cross_entropy(label_smoothing=alpha)
    loss = jax.jit(loss) if jit else loss
    got = loss(logits, TARGETS)
    assert got.shape == (2,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, (tokens * mask).sum(1) / LENGTHS, rtol=1e-5)
    summed = nf.sequence_cross_entropy(label_smoothing=alpha, normalize=False)(logits, TARGETS)
    np.testing.assert_allclose(summed, (tokens * mask).sum(1), rtol=1e-5)


def test_cross_entropy_uses_optax_smoothing():
    logits = logits_sample(1)
    smoothed = optax.smooth_labels(jax.nn.one_hot(TARGETS, 5), 0.2)
    tokens = optax.softmax_cross_entropy(logits, smoothed)
    expected = (tokens * (TARGETS != 0)).sum(1) / LENGTHS
    got = nf.sequence_cross_entropy(label_smoothing=0.2)(logits, TARGETS)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_lengths_mask_and_pad_id_agree():
    logits = logits_sample(2)
    loss = nf.sequence_cross_entropy(label_smoothing=0.1)
    by_pad = loss(logits, TARGETS)
    by_lengths = loss(logits, {"labels": TARGETS, "lengths": LENGTHS})
    mask = np.arange(4)[None, :] < LENGTHS[:, None]
    by_mask = loss(logits, {"labels": TARGETS, "mask": mask})
    np.testing.assert_allclose(by_lengths, by_pad, rtol=1e-6)
    np.testing.assert_allclose(by_mask, by_pad, rtol=1e-6)
    # torch-style ignore index: padded positions hold -100 and are skipped.
    ignored = np.where(mask, TARGETS, -100)
    np.testing.assert_allclose(
        nf.sequence_cross_entropy(pad_id=-100, label_smoothing=0.1)(logits, ignored), by_pad
    )


def test_padding_gets_no_gradient():
    logits = logits_sample(3)
    loss = nf.sequence_cross_entropy(label_smoothing=0.1)
    grad = jax.grad(lambda z: loss(z, TARGETS).mean())(jnp.asarray(logits))
    assert np.all(np.asarray(grad)[0, 2:] == 0) and np.all(np.isfinite(grad))
    assert np.abs(np.asarray(grad)[0, :2]).sum() > 0


def test_same_settings_same_function():
    assert nf.sequence_cross_entropy() is nf.sequence_cross_entropy(pad_id=0, label_smoothing=0)
    assert nf.token_accuracy(pad_id=0) is nf.token_accuracy()
    assert nf.exact_match(pad_id=1) is not nf.exact_match(pad_id=0)
    assert "label_smoothing=0.1" in nf.sequence_cross_entropy(label_smoothing=0.1).__name__


def test_accuracy_metrics_on_a_hand_made_batch():
    predicted = np.array([[3, 1, 4, 4], [1, 4, 2, 3], [2, 2, 2, 0]])
    targets = np.array([[3, 2, 0, 0], [1, 4, 2, 3], [2, 2, 1, 0]])
    logits = np.eye(5, dtype=np.float32)[predicted]
    # Row 0: 1 of 2 right (padding predictions ignored); row 1: 4 of 4; row 2: 2 of 3.
    np.testing.assert_allclose(nf.token_accuracy()(logits, targets), [0.5, 1.0, 2 / 3])
    np.testing.assert_array_equal(nf.exact_match()(logits, targets), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(jax.jit(nf.exact_match())(logits, targets), [0.0, 1.0, 0.0])
    lengths = {"labels": targets, "lengths": np.array([1, 4, 2])}
    np.testing.assert_array_equal(nf.exact_match()(logits, lengths), [1.0, 1.0, 1.0])
    empty = {"labels": targets, "lengths": np.array([0, 4, 3])}
    np.testing.assert_allclose(nf.token_accuracy()(logits, empty), [1.0, 1.0, 2 / 3])
    assert float(nf.sequence_cross_entropy()(logits, empty)[0]) == 0.0


def test_out_of_range_labels_raise_eagerly_and_give_nan_under_jit():
    logits = logits_sample()
    bad = TARGETS.copy()
    bad[1, 3] = 7
    for fn in (nf.sequence_cross_entropy(), nf.token_accuracy(), nf.exact_match()):
        with pytest.raises(ValueError, match=r"targets hold \[7\].*outside \[0, 5\)"):
            fn(logits, bad)
        values = np.asarray(jax.jit(fn)(logits, bad))
        assert np.isfinite(values[0]) and np.isnan(values[1])


def test_bad_arguments_raise():
    logits = logits_sample()
    loss = nf.sequence_cross_entropy()
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        nf.sequence_cross_entropy(label_smoothing=1.0)
    with pytest.raises(TypeError, match="pad_id must be an int"):
        nf.token_accuracy(pad_id=0.0)
    with pytest.raises(TypeError, match="unpack it first"):
        loss((logits, {}), TARGETS)
    with pytest.raises(TypeError, match="integer target ids"):
        loss(logits, TARGETS.astype(np.float32))
    with pytest.raises(ValueError, match=r"logits \(batch, time, classes\)"):
        loss(logits[:, :3], TARGETS)
    with pytest.raises(ValueError, match="'labels' and one of 'mask' or 'lengths'"):
        loss(logits, {"labels": TARGETS})
    with pytest.raises(ValueError, match=r"targets\['lengths'\] must be integers shaped \(2,\)"):
        loss(logits, {"labels": TARGETS, "lengths": LENGTHS[:, None]})
    with pytest.raises(ValueError, match=r"targets\['mask'\] must be bools"):
        loss(logits, {"labels": TARGETS, "mask": np.ones((2, 4), np.int32)})


def test_fit_trains_with_the_sequence_loss_and_metrics():
    # A per-position classifier learns to copy its input ids; padding (0) is ignored.
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 6, size=(64, 5)).astype(np.int32)
    ids[::2, 3:] = 0
    model = nf.Sequential([nf.Embedding(6, 16), nf.Dense(6)])
    metrics = {"token_accuracy": nf.token_accuracy(), "exact_match": nf.exact_match()}
    _, history = nf.fit(
        model,
        nf.sequence_cross_entropy(label_smoothing=0.1),
        optax.adam(3e-2),
        {"x": ids, "y": ids},
        steps=40,
        batch_size=32,
        metrics=metrics,
        eval_data={"x": ids, "y": ids},
        progress=False,
    )
    assert history["eval"]["exact_match"][-1] == 1.0
    assert history["eval"]["loss"][-1] < history["train"]["loss"][0]


def test_bleu_of_one_sentence_by_hand():
    hypothesis = "the quick brown fox jumps over the dog"
    reference = "the quick brown fox jumped over the lazy dog"
    # Clipped n-gram matches / hypothesis n-grams, counted by hand:
    # 1-grams: the x2, quick, brown, fox, over, dog = 7 of 8
    # 2-grams: the quick, quick brown, brown fox, over the = 4 of 7
    # 3-grams: the quick brown, quick brown fox = 2 of 6
    # 4-grams: the quick brown fox = 1 of 5
    precisions = [7 / 8, 4 / 7, 2 / 6, 1 / 5]
    brevity = math.exp(1 - 9 / 8)  # hypothesis 8 words, reference 9
    expected = 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert expected == pytest.approx(37.7079, abs=1e-4)
    assert nf.corpus_bleu([hypothesis], [reference]) == pytest.approx(expected, rel=1e-9)


def test_bleu_sums_counts_over_the_corpus_and_scores_characters():
    hypotheses = ["the quick brown fox jumps over the dog", "a b c d"]
    references = ["the quick brown fox jumped over the lazy dog", "a b c d"]
    # Corpus counts: (7+4)/(8+4), (4+3)/(7+3), (2+2)/(6+2), (1+1)/(5+1); lengths 12 vs 13.
    precisions = [11 / 12, 7 / 10, 4 / 8, 2 / 6]
    expected = 100 * math.exp(1 - 13 / 12) * math.exp(sum(map(math.log, precisions)) / 4)
    assert nf.corpus_bleu(hypotheses, references) == pytest.approx(expected, rel=1e-9)
    assert nf.corpus_bleu(
        ["siebenundneunzig"], ["siebenundneunzig"], tokenize="char"
    ) == pytest.approx(100.0)
    assert nf.corpus_bleu(["siebenundneunzig"], ["neunundsiebzig"], tokenize="char") < 100.0


def test_bleu_errors(monkeypatch):
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        nf.corpus_bleu(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="decode ids first"):
        nf.corpus_bleu([[1, 2]], ["a"])
    with pytest.raises(ValueError, match="tokenize must be one of"):
        nf.corpus_bleu(["a"], ["a"], tokenize="words")
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    with pytest.raises(ImportError, match=r'pip install "nnfun\[data\]"'):
        nf.corpus_bleu(["a"], ["a"])
