"""MovieLens-100K, read offline from the copy the ``recbole`` wheel ships.

``recbole`` (MIT-licensed) ships the full data set as
``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``. We read those
three tab-separated files from the installed distribution with
``importlib.metadata`` and never import ``recbole`` itself (its dependencies
pull PyTorch and Ray), so install it with ``pip install --no-deps
recbole==1.2.1``; the Makefile does. Nothing is downloaded.

MovieLens terms of use (GroupLens, University of Minnesota): research use only,
no commercial or revenue-bearing use without permission, no redistribution
without permission, no implied endorsement, and publications must cite
F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context",
ACM TiiS 5(4), 2015.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import pathlib

import numpy as np

Split = dict[str, np.ndarray]

#: The 19 genres in MovieLens's own order (``u.genre``); ``genres[:, g]`` is genre ``g``.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
NUM_USERS, NUM_ITEMS, NUM_RATINGS = 943, 1682, 100_000
RECBOLE = "recbole==1.2.1"
_FOLDER = "recbole/dataset_example/ml-100k"


@dataclasses.dataclass(frozen=True)
class MovieLens:
    """MovieLens-100K split into train and test ratings, with side features.

    Attributes:
        train, test: ``{"user": int32 (n,), "item": int32 (n,), "rating": float32
            (n,), "timestamp": int64 (n,)}``; users ``0..942`` and items
            ``0..1681`` (the files' ids minus one); ratings are whole stars 1 to 5.
        users: ``{"age": int32 (943,), "gender": int32 (943,) (0 F, 1 M),
            "occupation": int32 (943,)}`` indexed by user.
        items: ``{"genres": bool (1682, 19), "year": int32 (1682,) (0 when
            unknown), "title": str (1682,)}`` indexed by item.
        occupations: the occupation names, in index order.
        genres: :data:`GENRES`.
    """

    train: Split
    test: Split
    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]
    occupations: tuple[str, ...]
    genres: tuple[str, ...] = GENRES


def _folder() -> pathlib.Path:
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError as error:
        raise ImportError(
            "nnfun.data.movielens100k() reads the MovieLens-100K files shipped in the recbole "
            f"wheel, which is not installed. Fix: pip install --no-deps {RECBOLE} (--no-deps: "
            "recbole's own dependencies pull torch and ray, and we only read its data files)."
        ) from error
    folder = pathlib.Path(str(dist.locate_file(_FOLDER)))
    if not (folder / "ml-100k.inter").is_file():
        raise ImportError(
            f"recbole {dist.version} is installed but has no {_FOLDER}/ml-100k.inter. "
            f"Fix: pip install --no-deps {RECBOLE}"
        )
    return folder


def _rows(path: pathlib.Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines[1:] if line]  # line 0 names the columns


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, dict, dict, tuple[str, ...]]:
    folder = _folder()
    inter = np.array(_rows(folder / "ml-100k.inter"), dtype=np.float64)
    ratings = np.zeros(len(inter), [("user", "i4"), ("item", "i4"), ("rating", "f4"), ("t", "i8")])
    ratings["user"], ratings["item"] = inter[:, 0] - 1, inter[:, 1] - 1
    ratings["rating"], ratings["t"] = inter[:, 2], inter[:, 3]
    items = sorted(_rows(folder / "ml-100k.item"), key=lambda r: int(r[0]))
    genres = np.zeros((len(items), len(GENRES)), bool)
    for row, (_, _, _, names) in enumerate(items):
        genres[row, [GENRES.index(g) for g in names.split()]] = True
    year = np.array([int(r[2]) if r[2].isdigit() else 0 for r in items], np.int32)
    users = sorted(_rows(folder / "ml-100k.user"), key=lambda r: int(r[0]))
    occupations = tuple(sorted({r[3] for r in users}))
    user_features = {
        "age": np.array([int(r[1]) for r in users], np.int32),
        "gender": np.array([r[2] == "M" for r in users], np.int32),
        "occupation": np.array([occupations.index(r[3]) for r in users], np.int32),
    }
    item_features = {"genres": genres, "year": year, "title": np.array([r[1] for r in items])}
    _check(ratings, [int(r[0]) for r in users], [int(r[0]) for r in items])
    for array in (ratings, *user_features.values(), *item_features.values()):
        array.flags.writeable = False
    return ratings, user_features, item_features, occupations


def _check(ratings: np.ndarray, user_ids: list[int], item_ids: list[int]) -> None:
    problems = []
    if len(ratings) != NUM_RATINGS:
        problems.append(f"{len(ratings)} ratings, expected {NUM_RATINGS}")
    if user_ids != list(range(1, NUM_USERS + 1)) or item_ids != list(range(1, NUM_ITEMS + 1)):
        problems.append("user or item ids are not 1..943 and 1..1682")
    bad = ~np.isin(ratings["rating"], [1, 2, 3, 4, 5])
    if bad.any():
        problems.append(f"{int(bad.sum())} ratings outside the 1-5 star scale")
    if ratings["user"].max() >= NUM_USERS or ratings["item"].max() >= NUM_ITEMS:
        problems.append("ratings name users or items missing from the side files")
    if problems:
        raise ValueError(
            "nnfun.data.movielens100k: the installed files are not MovieLens-100K: "
            f"{'; '.join(problems)}. Fix: pip install --no-deps {RECBOLE}"
        )


def _as_split(rows: np.ndarray) -> Split:
    return {
        "user": rows["user"].copy(),
        "item": rows["item"].copy(),
        "rating": rows["rating"].copy(),
        "timestamp": rows["t"].copy(),
    }


def movielens100k(split: str = "random", *, test_fraction: float = 0.2, seed: int = 0) -> MovieLens:
    """The 100,000 ratings of 943 users on 1,682 movies (MovieLens-100K), split.

    ``split="random"`` holds out ``round(test_fraction * 100000)`` ratings
    chosen by ``seed`` (rating prediction; a held-out rating's user or movie may
    be rare or absent in training). ``split="last"`` is leave-last-one-out for
    ranking: each user's latest rating by timestamp goes to test (ties, common
    within a second, broken by the larger item id), so ``test`` has one row per
    user in user order and ``train`` the other 99,057; ``seed`` then only
    shuffles ``train``.

    Args:
        split: ``"random"`` or ``"last"``.
        test_fraction: share of ratings held out by ``"random"``, in ``(0, 1)``.
        seed: seed of the random split and of the order of ``train``.

    Returns:
        A :class:`MovieLens` with ``train``, ``test``, user and item features.

    Raises:
        ImportError: ``recbole`` is not installed (``pip install --no-deps recbole==1.2.1``).
        ValueError: an unknown split, a bad ``test_fraction`` or seed.

    Example:
        >>> import nnfun.data as nd
        >>> ml = nd.movielens100k("last")
        >>> len(ml.train["user"]), len(ml.test["user"]), ml.items["genres"].shape
        (99057, 943, (1682, 19))
    """
    if split not in ("random", "last"):
        raise ValueError(
            f"nnfun.data.movielens100k: split must be 'random' or 'last', got {split!r}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"nnfun.data.movielens100k: test_fraction must be in (0, 1), got {test_fraction!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"nnfun.data.movielens100k: seed must be an int >= 0, got {seed!r}")
    ratings, users, items, occupations = _load()
    rng = np.random.default_rng(seed)
    if split == "random":
        order = rng.permutation(len(ratings))
        n_test = round(test_fraction * len(ratings))
        test, train = ratings[np.sort(order[:n_test])], ratings[order[n_test:]]
    else:
        order = np.lexsort((ratings["item"], ratings["t"], ratings["user"]))
        by_user = ratings[order]
        last = np.r_[by_user["user"][1:] != by_user["user"][:-1], True]
        test, train = by_user[last], by_user[~last]
        train = train[rng.permutation(len(train))]
    copy = {k: v.copy() for k, v in users.items()}
    return MovieLens(
        _as_split(train),
        _as_split(test),
        copy,
        {k: v.copy() for k, v in items.items()},
        occupations,
    )
