"""Ranking metrics, RMSE and the implicit-feedback losses against hand computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnfun.recsys import (
    bpr_loss,
    hit_rate_at_k,
    ndcg_at_k,
    popularity_scores,
    recall_at_k,
    rmse,
    sampled_softmax_loss,
    top_k_items,
)

# Two users, five items. User 0 saw item 0 in training; holds out items 1 and 3.
# User 1 saw nothing; holds out item 4.
SCORES = jnp.array([[0.9, 0.1, 0.8, 0.7, 0.2], [0.5, 0.4, 0.3, 0.2, 0.1]])
RELEVANT = jnp.array([[False, True, False, True, False], [False, False, False, False, True]])
EXCLUDE = jnp.array([[True, False, False, False, False], [False] * 5])


def test_top_k_skips_excluded_items():
    # User 0 without item 0: 2 (0.8), 3 (0.7), 4 (0.2). User 1: 0, 1, 2.
    assert top_k_items(SCORES, 3, EXCLUDE).tolist() == [[2, 3, 4], [0, 1, 2]]
    assert top_k_items(SCORES, 3).tolist()[0] == [0, 2, 3]
    # Ties go to the lower item index.
    assert top_k_items(jnp.array([[1.0, 2.0, 2.0, 2.0]]), 2).tolist() == [[1, 2]]


def test_recall_hit_rate_ndcg_by_hand():
    # k=3, user 0's list [2, 3, 4]: one hit (item 3, rank 1) of two relevant.
    # user 1's list [0, 1, 2]: no hit.
    np.testing.assert_allclose(recall_at_k(SCORES, RELEVANT, 3, EXCLUDE), [0.5, 0.0])
    np.testing.assert_allclose(hit_rate_at_k(SCORES, RELEVANT, 3, EXCLUDE), [1.0, 0.0])
    ideal = 1 / math.log2(2) + 1 / math.log2(3)  # two relevant items fit in the top 3
    np.testing.assert_allclose(
        ndcg_at_k(SCORES, RELEVANT, 3, EXCLUDE), [(1 / math.log2(3)) / ideal, 0.0], rtol=1e-6
    )
    # k=5: everything is listed. User 0: [2, 3, 4, 1, 0(excluded, last)]; hits at ranks 1 and 3.
    np.testing.assert_allclose(recall_at_k(SCORES, RELEVANT, 5, EXCLUDE), [1.0, 1.0])
    expected0 = (1 / math.log2(3) + 1 / math.log2(5)) / ideal
    expected1 = (1 / math.log2(6)) / 1.0  # item 4 is last (rank 4) of user 1's list
    np.testing.assert_allclose(
        ndcg_at_k(SCORES, RELEVANT, 5, EXCLUDE), [expected0, expected1], rtol=1e-6
    )


def test_one_held_out_item_per_user_as_ids():
    held_out = jnp.array([3, 0])
    # k=1: user 0's best unseen item is 2 (miss); user 1's is 0 (hit, NDCG 1).
    np.testing.assert_allclose(recall_at_k(SCORES, held_out, 1, EXCLUDE), [0.0, 1.0])
    np.testing.assert_allclose(hit_rate_at_k(SCORES, held_out, 2, EXCLUDE), [1.0, 1.0])
    np.testing.assert_allclose(ndcg_at_k(SCORES, held_out, 2, EXCLUDE), [1 / math.log2(3), 1.0])


def test_metrics_under_jit_match_eager():
    run = jax.jit(lambda s: ndcg_at_k(s, RELEVANT, 3, EXCLUDE))
    np.testing.assert_allclose(run(SCORES), ndcg_at_k(SCORES, RELEVANT, 3, EXCLUDE))


def test_k_larger_than_the_catalogue_raises():
    for k in (6, 0):
        with pytest.raises(ValueError, match=r"k must be an int in \[1, 5\].*5 items"):
            recall_at_k(SCORES, RELEVANT, k)


def test_user_without_held_out_item_raises_eagerly_and_is_nan_under_jit():
    relevant = RELEVANT.at[1].set(False)
    for metric in (recall_at_k, ndcg_at_k, hit_rate_at_k):
        with pytest.raises(ValueError, match=r"1 users have no held-out item.*\[1\]"):
            metric(SCORES, relevant, 3)
    # A held-out item that is also excluded does not count either.
    with pytest.raises(ValueError, match="no held-out item"):
        recall_at_k(SCORES, jnp.array([0, 4]), 3, EXCLUDE)
    values = jax.jit(lambda r: recall_at_k(SCORES, r, 3))(relevant)
    assert values[0] == 0.5 and np.isnan(values[1])
    assert np.isnan(jax.jit(lambda r: ndcg_at_k(SCORES, r, 3))(relevant)[1])


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="bool mask"):
        recall_at_k(SCORES, jnp.array([1, 2, 3]), 2)
    with pytest.raises(ValueError, match="exclude of shape"):
        top_k_items(SCORES, 2, jnp.zeros((2, 4), bool))


def test_rmse_by_hand_clips_predictions_and_checks_ratings():
    # Errors after clipping to [1, 5]: 5 - 4 = 1, 2 - 3 = -1, 1 - 1 = 0 -> sqrt(2/3).
    predictions, ratings = jnp.array([6.0, 2.0, 0.5]), jnp.array([4.0, 3.0, 1.0])
    assert float(rmse(predictions, ratings)) == pytest.approx(math.sqrt(2 / 3), rel=1e-6)
    raw = math.sqrt((4 + 1 + 0.25) / 3)
    assert float(rmse(predictions, ratings, scale=None)) == pytest.approx(raw, rel=1e-6)
    with pytest.raises(ValueError, match=r"ratings must lie in the scale \[1.0, 5.0\].*0.0 to 4.0"):
        rmse(jnp.array([3.0, 3.0]), jnp.array([0.0, 4.0]))
    with pytest.raises(ValueError, match="differ in shape"):
        rmse(jnp.zeros((3, 1)), jnp.zeros(3))
    # Under jit the ratings are not checked: the value is computed as given.
    assert float(jax.jit(rmse)(jnp.array([3.0]), jnp.array([6.0]))) == pytest.approx(3.0)


def test_popularity_scores():
    assert popularity_scores(np.array([1, 1, 3]), 5).tolist() == [0, 2, 0, 1, 0]


def test_bpr_by_hand():
    # -log sigmoid(pos - neg): sigmoid(1) = 0.7311 -> 0.3133; sigmoid(-2) -> 2.1269.
    losses = bpr_loss(jnp.array([1.0, -1.0]), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(
        losses, [-math.log(1 / (1 + math.exp(-1))), math.log(1 + math.exp(2))], rtol=1e-6
    )
    several = bpr_loss(jnp.array([1.0]), jnp.array([[0.0, 1.0]]))
    np.testing.assert_allclose(several, [(math.log(1 + math.exp(-1)) + math.log(2)) / 2], rtol=1e-6)
    with pytest.raises(ValueError, match="bpr_loss"):
        bpr_loss(jnp.zeros(2), jnp.zeros(3))


def test_sampled_softmax_by_hand():
    q = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    c = jnp.array([[1.0, 1.0], [0.0, 1.0]])
    # logits = q @ c.T = [[1, 0], [2, 2]]; rows' positives on the diagonal.
    expected = [math.log(1 + math.exp(-1)), math.log(2)]
    np.testing.assert_allclose(sampled_softmax_loss(q, c), expected, rtol=1e-6)
    # log-Q subtracts each candidate's log probability: logits [[1 - a, -b], [2 - a, 2 - b]].
    a, b = math.log(0.8), math.log(0.2)
    row0 = -(1 - a) + math.log(math.exp(1 - a) + math.exp(-b))
    row1 = -(2 - b) + math.log(math.exp(2 - a) + math.exp(2 - b))
    np.testing.assert_allclose(
        sampled_softmax_loss(q, c, log_q=jnp.log(jnp.array([0.8, 0.2]))), [row0, row1], rtol=1e-5
    )
    # The same item in both rows is no negative: each row's softmax is over itself alone.
    np.testing.assert_allclose(
        sampled_softmax_loss(q, c, candidate_ids=jnp.array([7, 7])), [0, 0], atol=1e-6
    )
    # Temperature divides the logits.
    np.testing.assert_allclose(
        sampled_softmax_loss(q, c, temperature=0.5),
        [math.log(1 + math.exp(-2)), math.log(2)],
        rtol=1e-6,
    )
    # The same numbers as optax's listwise loss, which it is built on.
    logits = q @ c.T
    np.testing.assert_allclose(
        sampled_softmax_loss(q, c),
        optax.losses.ranking_softmax_loss(logits, jnp.eye(2), reduce_fn=None),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="one shape"):
        sampled_softmax_loss(q, c[:1])
    with pytest.raises(ValueError, match=r"log_q shaped \(2,\)"):
        sampled_softmax_loss(q, c, log_q=jnp.zeros(3))
