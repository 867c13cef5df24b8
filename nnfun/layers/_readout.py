"""Graph readouts: one row per graph from a ``Graph``'s node features (sum, mean, max, Set2Set)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, init_child
from ..core._layer import Layer, Params, State
from ..data._graphs import node_graph_ids
from ._graph import check_graph, check_width
from ._recurrent import LSTM
from ._segment import segment_max, segment_mean, segment_softmax, segment_sum

REDUCTIONS = {"sum": segment_sum, "mean": segment_mean, "max": segment_max}


class Readout(Layer):
    """Reduces each graph's node features to one row: their sum, mean or maximum.

    Padding nodes belong to no graph and are left out; a padding graph (no
    nodes) gets zeros.

    Args:
        reduction: ``"sum"``, ``"mean"`` or ``"max"``.

    Shapes: ``Graph(nodes (N, F), n_node (G,)) -> (G, F)``.

    Example:
        >>> import numpy as np, nnfun as nf
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.array([[1.0], [3.0]]), None,
        ...     np.zeros(0, int), np.zeros(0, int), np.array([2]), np.array([0]))], n_graph=2)
        >>> nf.Readout("mean").apply({}, {}, g)[0].tolist()
        [[2.0], [0.0]]
    """

    reduction: str = "sum"

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(
                f"Readout reduction must be one of {sorted(REDUCTIONS)}, got {self.reduction!r}"
            )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        check_graph(self, x)
        return {}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        graph = check_graph(self, x)
        reduce = REDUCTIONS[self.reduction]
        return reduce(graph.nodes, node_graph_ids(graph), graph.n_node.shape[0]), state


class Set2Set(Layer):
    """Set2Set readout (Vinyals et al. 2016), the readout of Gilmer et al. 2017.

    With ``m_i`` the node features of a graph, ``q*_0 = 0`` and ``steps`` rounds::

        q_t = LSTM(q*_{t-1})                # (G, F); the LSTM's carry persists
        a_i = softmax over the graph's nodes of m_i . q_t
        r_t = sum_i a_i m_i
        q*_t = [q_t, r_t]                   # (G, 2F), the output after the last round

    Args:
        steps: attention rounds.

    Shapes: ``Graph(nodes (N, F), n_node (G,)) -> (G, 2F)``. Params: ``lstm``
    (an :class:`nnfun.LSTM` of width ``F`` on inputs of width ``2F``).

    Example:
        >>> import jax, numpy as np, nnfun as nf
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.ones((3, 4)), None, np.array([0]),
        ...     np.array([1]), np.array([3]), np.array([1]))])
        >>> params, state = nf.Set2Set().init(jax.random.key(0), g)
        >>> nf.Set2Set().apply(params, state, g)[0].shape
        (1, 8)
    """

    steps: int = 3

    def __post_init__(self) -> None:
        check_width(self, steps=self.steps)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        graph = check_graph(self, x)
        g, f = graph.n_node.shape[0], graph.nodes.shape[1]
        carry = (jax.ShapeDtypeStruct((g, f), jnp.float32),) * 2
        star = jax.ShapeDtypeStruct((g, 2 * f), jnp.float32)
        lstm, _, _ = init_child("lstm", LSTM(f), key, (carry, star))
        return {"lstm": lstm}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        graph = check_graph(self, x)
        nodes, g = graph.nodes, graph.n_node.shape[0]
        # Padding nodes (graph id g) form an extra segment of their own, dropped at the end,
        # so every softmax and gather stays in range.
        ids = node_graph_ids(graph)
        lstm, dtype = LSTM(nodes.shape[1]), jnp.result_type(nodes)
        carry = lstm.initial_carry(g + 1, dtype)
        star = jnp.zeros((g + 1, 2 * nodes.shape[1]), dtype)
        for _ in range(self.steps):
            (carry, q), _ = apply_child("lstm", lstm, params["lstm"], {}, (carry, star), key, train)
            attention = segment_softmax(jnp.sum(nodes * q[ids], axis=-1), ids, g + 1)
            r = segment_sum(attention[:, None] * nodes, ids, g + 1)
            star = jnp.concatenate([q, r], axis=-1)
        return star[:g], state
