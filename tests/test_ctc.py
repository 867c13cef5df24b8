"""CTC loss against a NumPy forward algorithm and PyTorch; decoders and error rates by hand."""

import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.train import (
    character_error_rate,
    ctc,
    ctc_beam_search,
    ctc_greedy_decode,
    ctc_loss,
    ctc_prefix_beam_search,
    edit_distance,
    word_error_rate,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _forward_nll(logits, labels, blank=0):
    """-log p(labels | logits) by the CTC forward (alpha) recursion, in log space."""
    lp = _log_softmax(logits)
    ext = [blank]
    for c in labels:
        ext += [c, blank]
    s, t_max = len(ext), len(lp)
    alpha = np.full((t_max, s), -np.inf)
    alpha[0, 0] = lp[0, blank]
    if s > 1:
        alpha[0, 1] = lp[0, ext[1]]
    for t in range(1, t_max):
        for i in range(s):
            terms = [alpha[t - 1, i]]
            if i >= 1:
                terms.append(alpha[t - 1, i - 1])
            if i >= 2 and ext[i] != blank and ext[i] != ext[i - 2]:
                terms.append(alpha[t - 1, i - 2])
            alpha[t, i] = np.logaddexp.reduce(terms) + lp[t, ext[i]]
    return -np.logaddexp(alpha[-1, -1], alpha[-1, -2] if s > 1 else -np.inf)


def test_ctc_loss_matches_the_forward_algorithm():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10, 5)).astype(np.float32)
    labels = np.array([[1, 2, 2, 3], [4, 4, 0, 0], [3, 0, 0, 0], [1, 2, 3, 4]])
    label_lengths = np.array([4, 2, 1, 4])
    logit_lengths = np.array([10, 6, 10, 8])
    loss = ctc_loss(jnp.asarray(logits), logit_lengths, labels, label_lengths)
    for b in range(4):
        expected = _forward_nll(
            logits[b, : logit_lengths[b]], labels[b, : label_lengths[b]].tolist()
        )
        np.testing.assert_allclose(loss[b], expected, rtol=1e-5)


def test_ctc_loss_matches_torch_losses_and_gradients():
    data = np.load(FIXTURES / "ctc_torch.npz")
    args = (data["logit_lengths"], data["labels"], data["label_lengths"])

    def total(logits):
        loss = ctc_loss(logits, *(jnp.asarray(a) for a in args))
        return loss.sum(), loss

    (_, loss), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(data["logits"]))
    np.testing.assert_allclose(loss, data["loss"], rtol=1e-5)
    np.testing.assert_allclose(grad, data["grad"], rtol=1e-4, atol=1e-5)


def test_ctc_loss_is_never_negative_and_exact_for_a_certain_alignment():
    # A one-hot alignment "blank 1 blank 2" is certain: optax gives a tiny negative value.
    logits = jnp.asarray(np.eye(3)[[0, 1, 0, 2]][None] * 50.0, jnp.float32)
    loss = ctc_loss(logits, jnp.array([4]), jnp.array([[1, 2]]), jnp.array([2]))
    assert 0.0 <= float(loss[0]) < 1e-5


def test_ctc_function_for_fit_divides_per_label_and_jits():
    rng = np.random.default_rng(1)
    outputs = {"logits": jnp.asarray(rng.standard_normal((2, 6, 4))), "lengths": jnp.array([6, 5])}
    targets = {"labels": jnp.array([[1, 2, 3], [2, 0, 0]]), "lengths": jnp.array([3, 1])}
    per_seq, per_label = jax.jit(lambda o, t: (ctc()(o, t), ctc(per_label=True)(o, t)))(
        outputs, targets
    )
    for b, (labels, n) in enumerate([([1, 2, 3], 6), ([2], 5)]):
        expected = _forward_nll(np.asarray(outputs["logits"][b, :n]), labels)
        np.testing.assert_allclose(per_seq[b], expected, rtol=1e-5)
        np.testing.assert_allclose(per_label[b], expected / len(labels), rtol=1e-5)
    assert ctc() is ctc()


def test_ctc_loss_bad_inputs_raise_clear_errors():
    logits = jnp.zeros((1, 4, 3))
    with pytest.raises(ValueError, match=r"needing 6 frames.*only 4 frames.*downsampling"):
        ctc_loss(logits, jnp.array([4]), jnp.array([[1, 1, 2, 2]]), jnp.array([4]))
    with pytest.raises(ValueError, match="5 labels.*only 4 frames"):
        ctc_loss(jnp.zeros((1, 4, 3)), jnp.array([4]), jnp.array([[1, 2, 1, 2, 1]]), jnp.array([5]))
    with pytest.raises(ValueError, match="never be the blank id 0"):
        ctc_loss(logits, jnp.array([4]), jnp.array([[1, 0]]), jnp.array([2]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        ctc_loss(logits, jnp.array([4]), jnp.array([[1, 3]]), jnp.array([2]))
    with pytest.raises(ValueError, match=r"logit_lengths must lie in \[0, 4\]"):
        ctc_loss(logits, jnp.array([5]), jnp.array([[1]]), jnp.array([1]))
    with pytest.raises(ValueError, match=r"label_lengths must lie in \[0, 1\]"):
        ctc_loss(logits, jnp.array([4]), jnp.array([[1]]), jnp.array([2]))
    with pytest.raises(ValueError, match="blank_id=3"):
        ctc_loss(logits, jnp.array([4]), jnp.array([[1]]), jnp.array([1]), blank_id=3)
    with pytest.raises(ValueError, match=r"logits \(batch, frames, classes\)"):
        ctc_loss(jnp.zeros((4, 3)), jnp.array([4]), jnp.array([[1]]), jnp.array([1]))
    with pytest.raises(ValueError, match="outputs must be a dict"):
        ctc()(logits, {"labels": jnp.array([[1]]), "lengths": jnp.array([1])})


def _all_paths_best(probs, blank=0):
    """The label sequence with the highest total probability, by summing over every path."""
    totals = {}
    for path in itertools.product(range(probs.shape[1]), repeat=probs.shape[0]):
        p = np.prod([probs[t, c] for t, c in enumerate(path)])
        labels = tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or path[i - 1] != c))
        totals[labels] = totals.get(labels, 0.0) + p
    return max(totals, key=totals.get), totals


def test_greedy_and_beam_on_hand_made_posteriors():
    # Greedy takes blank twice (P("") = 0.36); the paths giving "1" add up to 0.64.
    probs = np.array([[[0.6, 0.4], [0.6, 0.4]]])
    assert ctc_greedy_decode(np.log(probs)) == [[]]
    assert ctc_beam_search(np.log(probs), beam_width=2) == [[1]]
    [(best, logp), (second, logp2)] = ctc_prefix_beam_search(np.log(probs[0]), beam_width=2)
    assert best == (1,) and second == ()
    np.testing.assert_allclose([np.exp(logp), np.exp(logp2)], [0.64, 0.36])
    # Repeats merge unless a blank separates them; lengths cut the frames.
    frames = np.eye(3)[[[1, 1, 0, 1, 2, 2, 0, 0]]]
    assert ctc_greedy_decode(frames) == [[1, 1, 2]]
    assert ctc_greedy_decode(frames, merge_repeated=False) == [[1, 1, 1, 2, 2]]
    assert ctc_greedy_decode(frames, np.array([4])) == [[1, 1]]
    assert ctc_beam_search(np.log(frames * 0.97 + 0.01), np.array([5])) == [[1, 1, 2]]
    assert ctc_beam_search(np.log(frames * 0.97 + 0.01), merge_repeated=False) == [[1, 1, 1, 2, 2]]


def test_beam_search_finds_the_most_probable_labels():
    rng = np.random.default_rng(3)
    for _ in range(5):
        probs = rng.dirichlet(np.ones(3) * 0.7, size=5)  # 5 frames, blank + 2 labels
        best, totals = _all_paths_best(probs)
        found = ctc_prefix_beam_search(np.log(probs), beam_width=40)
        assert found[0][0] == best
        np.testing.assert_allclose(np.exp(found[0][1]), totals[best], rtol=1e-9)


def test_decoders_reject_bad_lengths():
    with pytest.raises(ValueError, match="exceed the 2 frames"):
        ctc_greedy_decode(np.zeros((1, 2, 3)), np.array([3]))
    with pytest.raises(ValueError, match="beam_width"):
        ctc_beam_search(np.zeros((1, 2, 3)), beam_width=0)
    with pytest.raises(ValueError, match=r"\(batch, frames, classes\)"):
        ctc_beam_search(np.zeros((2, 3)))


def test_edit_distance_and_error_rates():
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2 and edit_distance("same", "same") == 0
    assert edit_distance([1, 2, 3], [1, 3, 3]) == 1
    # 1 substitution + 1 deletion over 3 + 4 reference characters.
    assert character_error_rate(["abc", "defg"], ["abd", "dfg"]) == pytest.approx(2 / 7)
    assert word_error_rate(["one two three", "four"], ["one three", "four five"]) == 0.5
    with pytest.raises(ValueError, match="as many hypotheses as references"):
        word_error_rate(["a"], [])
    assert nf.train.ctc_loss is ctc_loss
