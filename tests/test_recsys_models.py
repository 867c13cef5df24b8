"""Recommendation models against NumPy, and a short run of the MovieLens example."""

import importlib.metadata
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.models import recsys as rm


def test_matrix_factorization_matches_the_formula(key):
    model = rm.MatrixFactorization(4, 5, features=3, mean_rating=3.5)
    x = {"user": jnp.array([0, 3, 3]), "item": jnp.array([4, 0, 2])}
    params, state = model.init(key, x)
    params = jax.tree.map(lambda a: a + 0.3 * jnp.ones_like(a), params)  # nonzero biases
    y, _ = model.apply(params, state, x)
    p = jax.tree.map(np.asarray, params)
    u, i = np.asarray(x["user"]), np.asarray(x["item"])
    expected = (
        p["bias"]
        + p["user_bias"]["embedding"][u, 0]
        + p["item_bias"]["embedding"][i, 0]
        + np.sum(p["user"]["embedding"][u] * p["item"]["embedding"][i], axis=1)
    )
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert float(model.init(key, x)[0]["bias"]) == 3.5


def test_matrix_factorization_names_a_bad_id(key):
    model = rm.MatrixFactorization(4, 5, features=3)
    x = {"user": jnp.array([0, 4]), "item": jnp.array([1, 1])}
    params, state = model.init(key, x)
    with pytest.raises(nf.LayerError, match=r"'user'.*ids in \[0, 4\)"):
        model.apply(params, state, x)


def test_two_tower_and_features(key):
    tower = rm.Features({"id": nf.Embedding(5, 3), "genres": nf.EmbeddingBag(4, 2)})
    model = rm.TwoTower(nf.Embedding(3, 5), nf.Sequential([tower, nf.Dense(5)]))
    item = {
        "id": jnp.array([1, 2]),
        "genres": {"inputs": jnp.array([[0, -1], [1, 3]]), "lengths": jnp.array([1, 2])},
    }
    x = {"user": jnp.array([0, 2]), "item": item}
    params, state = model.init(key, x)
    out, _ = model.apply(params, state, x)
    assert out["user"].shape == (2, 5) and out["item"].shape == (2, 5)
    features, _ = tower.apply(params["item"]["0"], {}, item)
    p = jax.tree.map(np.asarray, params["item"]["0"])
    genres = p["genres"]["embedding"]
    bags = np.stack([genres[0], genres[1] + genres[3]])
    # Entries are concatenated in sorted name order: genres, then id.
    expected = np.concatenate([bags, p["id"]["embedding"][[1, 2]]], axis=1)
    np.testing.assert_allclose(features, expected, rtol=1e-6)
    with pytest.raises(nf.LayerError, match=r"entries \['genres', 'id'\], got \['id'\]"):
        tower.apply(params["item"]["0"], {}, {"id": item["id"]})


needs_data = pytest.mark.skipif(
    not any(d.metadata["Name"] == "recbole" for d in importlib.metadata.distributions()),
    reason="needs: pip install --no-deps recbole==1.2.1",
)


@needs_data
def test_movielens_features_fit_the_towers(key):
    data = nf.data.movielens100k("last")
    users, items = rm.movielens_user_features(data), rm.movielens_item_features(data)
    assert items["genres"]["inputs"].shape == (1682, 6) and items["year"].max() == 8
    assert users["age"].max() == 6 and items["year"][266] == 0
    model = rm.dcn_ranker(len(data.occupations))
    x = rm.ranker_inputs(users, rm.take_rows(items, np.arange(943)))
    params, state = model.init(key, x)
    y, _ = model.apply(params, state, x)  # every id in range (checked eagerly)
    assert y.shape == (943, 1)


@needs_data
@pytest.mark.slow
def test_movielens_example_short_run(capsys):
    from nnfun.examples import movielens

    movielens.main(["--mf-epochs", "2", "--dcn-epochs", "1", "--tower-epochs", "2"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    number = r"(\d\.\d{3})"
    found = re.fullmatch(
        rf"movielens: test RMSE {number}, recall@10 {number}, NDCG@10 {number} "
        rf"\(popularity baseline recall@10 {number}, NDCG@10 {number}; .*\)",
        last,
    )
    assert found, last
    rmse, recall, _, popular, _ = (float(v) for v in found.groups())
    assert rmse < 1.0  # predicting the training mean gives about 1.13
    assert recall > 0.02 and popular == pytest.approx(0.05, abs=0.01)
