"""Recommendation models: matrix factorization, a two-tower retrieval model, a DCN ranker.

Every model is built from public layers, and every table is an ``embedding``
param, so one sharding rule (``{"**/embedding": PartitionSpec("model")}``)
splits all of them by rows. The ``movielens_*`` functions turn
:func:`nnfun.data.movielens100k` into the models' inputs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._children import apply_child, init_child
from ..core._combinators import Sequential
from ..core._layer import Layer, Params, State, layer_error
from ..layers import CrossNetwork, Dense, Embedding, EmbeddingBag

#: Age buckets (MovieLens-1M's): under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
#: Release decades: 0 is "unknown", then before 1930, the 1930s ... the 1990s.
YEAR_EDGES = (1930, 1940, 1950, 1960, 1970, 1980, 1990)


class Features(Layer):
    """Applies one layer to each entry of a dict input and concatenates the results.

    ``Features({"id": nf.Embedding(943, 32), "age": nf.Embedding(7, 8)})`` maps
    ``{"id": (batch,), "age": (batch,)}`` to ``(batch, 40)``. An entry may be a
    ``{"inputs": ..., "lengths": ...}`` dict for a layer that reads extras (an
    :class:`~nnfun.EmbeddingBag`). Params are keyed by the entry names, and the
    outputs are concatenated in sorted name order (as the params and configs list
    them), whatever the dict's insertion order.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> from nnfun.models.recsys import Features
        >>> layer = Features({"id": nf.Embedding(5, 3), "age": nf.Embedding(2, 1)})
        >>> x = {"id": jnp.array([0, 4]), "age": jnp.array([1, 0])}
        >>> params, state = layer.init(jax.random.key(0), x)
        >>> layer.apply(params, state, x)[0].shape
        (2, 4)
    """

    layers: dict[str, Layer]

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.layers.items())))

    def _check(self, x: Any) -> None:
        if not isinstance(x, dict) or set(x) != set(self.layers):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise layer_error(
                self,
                f"expected a dict with the entries {sorted(self.layers)}, got {got}. Fix: one "
                "input per feature layer, under the same names.",
            )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check(x)
        params, state = {}, {}
        for name, layer in sorted(self.layers.items()):
            p, s, _ = init_child(name, layer, key, x[name])
            params[name], state[name] = p, s
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        self._check(x)
        outs, new_state = [], {}
        for name, layer in sorted(self.layers.items()):
            y, new_state[name] = apply_child(
                name, layer, params.get(name, {}), state.get(name, {}), x[name], key, train
            )
            outs.append(y.reshape(y.shape[0], -1))
        return jnp.concatenate(outs, axis=-1), new_state


class MatrixFactorization(Layer):
    """Biased matrix factorization: ``rating = bias + b_u + b_i + <p_u, q_i>``.

    The classic model of the Netflix prize (Koren et al. 2009). Regularise it by
    adding ``l2 * (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)`` of each example to the
    squared error (see ``nnfun.examples.movielens``).

    Args:
        num_users, num_items: table sizes.
        features: width of the user and item vectors.
        mean_rating: the initial global bias (the training mean is a good start).

    Shapes: ``{"user": int (batch,), "item": int (batch,)} -> (batch,)``;
    params ``user``, ``item`` (``{"embedding": (n, features)}``), ``user_bias``,
    ``item_bias`` (``{"embedding": (n, 1)}``) and ``bias`` ``()``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from nnfun.models.recsys import MatrixFactorization
        >>> mf = MatrixFactorization(3, 4, features=2, mean_rating=3.5)
        >>> x = {"user": jnp.array([0, 2]), "item": jnp.array([3, 3])}
        >>> params, state = mf.init(jax.random.key(0), x)
        >>> mf.apply(params, state, x)[0].shape
        (2,)
    """

    num_users: int
    num_items: int
    features: int = 64
    mean_rating: float = 0.0

    def _tables(self) -> dict[str, Embedding]:
        return {
            "user": Embedding(self.num_users, self.features),
            "item": Embedding(self.num_items, self.features),
            "user_bias": Embedding(self.num_users, 1, embedding_init="zeros"),
            "item_bias": Embedding(self.num_items, 1, embedding_init="zeros"),
        }

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        params = {}
        for name, table in self._tables().items():
            ids = x["user"] if name.startswith("user") else x["item"]
            params[name] = init_child(name, table, key, ids)[0]
        return {**params, "bias": jnp.asarray(self.mean_rating, jnp.float32)}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        rows = {}
        for name, table in self._tables().items():
            ids = x["user"] if name.startswith("user") else x["item"]
            rows[name] = apply_child(name, table, params[name], {}, ids, None, False)[0]
        dot = jnp.sum(rows["user"] * rows["item"], axis=-1)
        biases = rows["user_bias"][:, 0] + rows["item_bias"][:, 0]
        return params["bias"] + biases + dot, state


class TwoTower(Layer):
    """Two towers that embed users and items into one space; the score is a dot product.

    ``apply`` maps ``{"user": user_features, "item": item_features}`` to
    ``{"user": (batch, d), "item": (batch, d)}``, the pairs a
    :func:`~nnfun.recsys.sampled_softmax_loss` trains on. For retrieval, run each
    tower alone (``model.item_tower.apply(params["item"], state["item"], x)``)
    over the whole catalogue and take ``users @ items.T``.

    Args:
        user_tower: any layer from user features to ``(batch, d)``.
        item_tower: any layer from item features to ``(batch, d)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> from nnfun.models.recsys import TwoTower
        >>> model = TwoTower(nf.Embedding(3, 4), nf.Embedding(5, 4))
        >>> x = {"user": jnp.array([0, 1]), "item": jnp.array([4, 2])}
        >>> params, state = model.init(jax.random.key(0), x)
        >>> {k: v.shape for k, v in model.apply(params, state, x)[0].items()}
        {'user': (2, 4), 'item': (2, 4)}
    """

    user_tower: Layer
    item_tower: Layer

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        pu, su, _ = init_child("user", self.user_tower, key, x["user"])
        pi, si, _ = init_child("item", self.item_tower, key, x["item"])
        return {"user": pu, "item": pi}, {"user": su, "item": si}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[dict[str, jax.Array], State]:
        out, new_state = {}, {}
        for name, tower in (("user", self.user_tower), ("item", self.item_tower)):
            out[name], new_state[name] = apply_child(
                name, tower, params[name], state.get(name, {}), x[name], key, train
            )
        return out, new_state


def _mlp(hidden: tuple[int, ...], out: int) -> list[Any]:
    layers: list[Any] = []
    for width in hidden:
        layers += [Dense(width), jax.nn.relu]
    return [*layers, Dense(out)]


def user_tower(num_occupations: int, features: int = 32, hidden: tuple[int, ...] = (64,)) -> Layer:
    """MovieLens user tower: id, age bucket, gender and occupation embeddings, then an MLP.

    Input: :func:`movielens_user_features` rows. Output ``(batch, features)``.
    """
    embed = Features(
        {
            "id": Embedding(943, features),
            "age": Embedding(len(AGE_EDGES) + 1, 8),
            "gender": Embedding(2, 4),
            "occupation": Embedding(num_occupations, 8),
        }
    )
    return Sequential([embed, *_mlp(hidden, features)])


def item_tower(features: int = 32, hidden: tuple[int, ...] = (64,)) -> Layer:
    """MovieLens item tower: id and decade embeddings and a mean bag of genres, then an MLP.

    Input: :func:`movielens_item_features` rows. Output ``(batch, features)``.
    """
    embed = Features(
        {
            "id": Embedding(1682, features),
            "genres": EmbeddingBag(19, 16, combiner="mean"),
            "year": Embedding(len(YEAR_EDGES) + 2, 8),
        }
    )
    return Sequential([embed, *_mlp(hidden, features)])


def dcn_ranker(num_occupations: int, features: int = 16, cross_layers: int = 2) -> Layer:
    """A DCN-v2 ranking model: every feature's embedding, cross layers, then an MLP to one score.

    Input ``{"user": user rows, "item": item rows}`` flattened into one
    :class:`Features` dict (see :func:`ranker_inputs`); output ``(batch, 1)``.
    """
    embed = Features(
        {
            "user_id": Embedding(943, features),
            "age": Embedding(len(AGE_EDGES) + 1, 4),
            "gender": Embedding(2, 2),
            "occupation": Embedding(num_occupations, 4),
            "item_id": Embedding(1682, features),
            "genres": EmbeddingBag(19, 8, combiner="mean"),
            "year": Embedding(len(YEAR_EDGES) + 2, 4),
        }
    )
    return Sequential([embed, CrossNetwork(cross_layers), *_mlp((64,), 1)])


def movielens_user_features(data: Any) -> dict[str, np.ndarray]:
    """Per-user model inputs from a :class:`nnfun.data.MovieLens`: ``(943,)`` int arrays."""
    users = data.users
    return {
        "id": np.arange(len(users["age"]), dtype=np.int32),
        "age": np.digitize(users["age"], AGE_EDGES).astype(np.int32),
        "gender": users["gender"].astype(np.int32),
        "occupation": users["occupation"].astype(np.int32),
    }


def movielens_item_features(data: Any) -> dict[str, Any]:
    """Per-item model inputs: ids, padded genre ids with lengths, release decade."""
    genres = data.items["genres"]
    lengths = genres.sum(1).astype(np.int32)
    padded = np.full((len(genres), int(lengths.max())), -1, np.int32)
    for row, ids in enumerate(genres):
        found = np.flatnonzero(ids)
        padded[row, : len(found)] = found
    year = data.items["year"]
    decade = np.where(year > 0, np.digitize(year, YEAR_EDGES) + 1, 0).astype(np.int32)
    return {
        "id": np.arange(len(genres), dtype=np.int32),
        "genres": {"inputs": padded, "lengths": lengths},
        "year": decade,
    }


def ranker_inputs(users: dict[str, Any], items: dict[str, Any]) -> dict[str, Any]:
    """The flat feature dict :func:`dcn_ranker` reads, from user rows and item rows."""
    return {
        "user_id": users["id"],
        "age": users["age"],
        "gender": users["gender"],
        "occupation": users["occupation"],
        "item_id": items["id"],
        "genres": items["genres"],
        "year": items["year"],
    }


def take_rows(features: Any, index: Any) -> Any:
    """Rows ``index`` of every array in a feature tree (``jax.tree.map`` of ``a[index]``)."""
    return jax.tree.map(lambda a: a[index], features)
