"""MovieLens-100K read from the recbole wheel's files: counts, splits, features, errors."""

import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest

import nnfun.data as nd
from nnfun.data import _movielens

try:
    importlib.metadata.distribution("recbole")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("needs: pip install --no-deps recbole==1.2.1", allow_module_level=True)


def test_random_split_counts_and_scale():
    ml = nd.movielens100k("random", seed=0)
    assert len(ml.train["user"]) == 80_000 and len(ml.test["user"]) == 20_000
    both = {k: np.concatenate([ml.train[k], ml.test[k]]) for k in ml.train}
    assert len(np.unique(both["user"])) == 943 and len(np.unique(both["item"])) == 1682
    assert both["user"].min() == 0 and both["item"].max() == 1681
    assert set(np.unique(both["rating"]).tolist()) == {1, 2, 3, 4, 5}
    # Every rating once: no duplicated (user, item) pairs across the split.
    pairs = both["user"].astype(np.int64) * 2000 + both["item"]
    assert len(np.unique(pairs)) == 100_000
    assert ml.train["rating"].dtype == np.float32 and ml.train["user"].dtype == np.int32


def test_random_split_depends_on_seed_only():
    a, b, c = (nd.movielens100k(seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.test["user"], b.test["user"])
    assert not np.array_equal(a.test["item"], c.test["item"])


def test_leave_last_out_holds_out_each_users_latest_rating():
    ml = nd.movielens100k("last", seed=3)
    test, train = ml.test, ml.train
    np.testing.assert_array_equal(test["user"], np.arange(943))
    assert len(train["user"]) == 100_000 - 943
    latest = np.full(943, -1, np.int64)
    np.maximum.at(latest, train["user"], train["timestamp"])
    assert np.all(test["timestamp"] >= latest)
    # Ties within a second go to the larger item id: no later-or-equal train rating beats it.
    tied = (train["timestamp"] == test["timestamp"][train["user"]]) & (
        train["item"] > test["item"][train["user"]]
    )
    assert not tied.any()


def test_side_features():
    ml = nd.movielens100k("last")
    assert ml.users["age"].shape == (943,) and ml.users["age"].min() >= 7
    assert set(np.unique(ml.users["gender"]).tolist()) == {0, 1}
    assert len(ml.occupations) == 21 and ml.users["occupation"].max() == 20
    genres = ml.items["genres"]
    assert genres.shape == (1682, 19) and genres.sum(1).min() == 1
    assert ml.genres[0] == "unknown" and len(ml.genres) == 19
    assert ml.items["title"][0] == "Toy Story" and ml.items["year"][0] == 1995
    assert genres[0, ml.genres.index("Animation")] and genres[0, ml.genres.index("Comedy")]
    assert ml.items["year"][266] == 0  # item 267's year is unknown in the files


def test_returned_arrays_are_private_copies():
    ml = nd.movielens100k("last")
    ml.items["genres"][:] = False
    ml.train["rating"][:] = 0
    assert nd.movielens100k("last").items["genres"].any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "time"}, "split must be 'random' or 'last'"),
        ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
        ({"seed": -1}, "seed must be an int"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        nd.movielens100k(**kwargs)


def test_missing_recbole_names_the_no_deps_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_movielens.importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install --no-deps recbole==1\.2\.1"):
        _movielens._folder()


def test_reading_never_imports_recbole():
    code = (
        "import sys, nnfun.data as nd; nd.movielens100k('last'); "
        "print(any(m == 'recbole' or m.startswith('recbole.') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_files_with_ratings_outside_the_scale_are_refused():
    # _check guards what the loader returns: whole stars 1-5, 100,000 ratings, known ids.
    ratings = np.zeros(100_000, [("user", "i4"), ("item", "i4"), ("rating", "f4"), ("t", "i8")])
    ratings["rating"] = 4
    users, items = list(range(1, 944)), list(range(1, 1683))
    _movielens._check(ratings, users, items)  # a valid table passes
    ratings["rating"][[3, 7]] = [0, 5.5]
    with pytest.raises(ValueError, match=r"2 ratings outside the 1-5 star scale.*--no-deps"):
        _movielens._check(ratings, users, items)
    with pytest.raises(ValueError, match="99999 ratings, expected 100000"):
        _movielens._check(ratings[1:], users, items)
