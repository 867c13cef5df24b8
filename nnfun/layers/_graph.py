"""Graph layers on a padded ``Graph`` batch: the input check, ``OnNodes``, ``GraphConv``, ``GIN``.

A graph layer's main input is a :class:`nnfun.data.Graph`; it returns the same
graph with new ``nodes`` (edges and structure unchanged), so graph layers chain
in a ``Sequential``. A readout (:class:`Readout`, :class:`Set2Set`) ends the
chain with one row per graph. Messages flow from ``senders`` to ``receivers``;
padding edges join padding nodes, so padding never reaches a real node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, init_child
from ..core._combinators import Sequential, as_layer
from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error
from ..core._masks import concrete
from ..data._graphs import Graph
from ._dense import Dense
from ._segment import segment_count, segment_sum


def check_graph(layer: Layer, graph: Any, *, edges: bool = False) -> Graph:
    """Returns ``graph`` if it is a well-formed ``Graph``; else a ``LayerError`` with the fix.

    Shapes are always checked; index ranges and counts only when the arrays are
    concrete (eagerly; under ``jit`` they are traced and not checked).

    Example:
        >>> import numpy as np, nnfun as nf
        >>> from nnfun.layers import check_graph
        >>> g = nf.data.Graph(np.ones((2, 3)), None, np.array([0]), np.array([5]),
        ...                   np.array([2]), np.array([1]))
        >>> check_graph(nf.GraphConv(4), g)
        Traceback (most recent call last):
        ...
        nnfun.core._layer.LayerError: GraphConv at '<root>': receivers out of range: ...
    """
    if not isinstance(graph, Graph):
        raise layer_error(
            layer,
            f"expected a Graph (nnfun.data.Graph), got {type(graph).__name__}. Fix: batch "
            "graphs with nnfun.data.batch_graphs([...]); for features of the nodes alone, "
            "wrap the layer in nf.OnNodes(layer).",
        )
    _check_shapes(layer, graph)
    if edges and graph.edges is None:
        raise layer_error(
            layer,
            "needs edge features, but graph.edges is None. Fix: give every graph edge "
            "features (E, F_e), e.g. np.ones((E, 1)), or use GraphConv, GIN or GAT.",
        )
    _check_values(layer, graph)
    return graph


def _check_shapes(layer: Layer, g: Graph) -> None:
    shapes = {name: tuple(jnp.shape(a)) for name, a in g._asdict().items() if a is not None}
    n_edges = shapes["senders"][:1]
    ok = (
        len(shapes["nodes"]) == 2
        and len(shapes["senders"]) == 1
        and shapes["receivers"] == shapes["senders"]
        and len(shapes["n_node"]) == 1
        and shapes["n_edge"] == shapes["n_node"]
        and all(jnp.issubdtype(getattr(g, n).dtype, jnp.integer) for n in _INDEX_FIELDS)
    )
    if not ok:
        raise layer_error(
            layer,
            f"expected nodes (N, F), senders and receivers (E,) ints, n_node and n_edge (G,) "
            f"ints, got shapes {shapes}. Fix: build the batch with nnfun.data.batch_graphs.",
        )
    if g.edges is not None and (len(shapes["edges"]) != 2 or shapes["edges"][:1] != n_edges):
        raise layer_error(
            layer,
            f"expected edge features (E, F_e) with E = {n_edges[0]} (the number of senders), "
            f"got {shapes['edges']}. Fix: one row of edge features per edge.",
        )


_INDEX_FIELDS = ("senders", "receivers", "n_node", "n_edge")


def _check_values(layer: Layer, g: Graph) -> None:
    n_nodes, n_edges = g.nodes.shape[0], g.senders.shape[0]
    for name in ("senders", "receivers"):
        index = concrete(getattr(g, name))
        bad = [] if index is None else index[(index < 0) | (index >= n_nodes)]
        if len(bad):
            raise layer_error(
                layer,
                f"{name} out of range: {sorted({int(b) for b in bad})[:5]} index a batch of "
                f"{n_nodes} nodes (valid 0..{n_nodes - 1}). Fix: offset each graph's indices "
                "by the nodes before it, as nnfun.data.batch_graphs does.",
            )
    n_node, n_edge = concrete(g.n_node), concrete(g.n_edge)
    if n_node is None or n_edge is None:
        return  # traced: no values to check
    if n_node.sum() > n_nodes or n_edge.sum() > n_edges:
        raise layer_error(
            layer,
            f"n_node sums to {int(n_node.sum())} and n_edge to {int(n_edge.sum())}, but "
            f"the batch has {n_nodes} nodes and {n_edges} edges. Fix: n_node/n_edge count the "
            "real nodes/edges of each graph; padding is what lies past their sums.",
        )


def check_width(layer: Layer, **values: Any) -> None:
    """Raises a ``ValueError`` naming the field unless each value is a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(layer).__name__} {name} must be a positive int, got {value!r}")


def with_self_loops(graph: Graph) -> tuple[jax.Array, jax.Array]:
    """``(senders, receivers)`` with an edge from every node to itself appended."""
    loops = jnp.arange(graph.nodes.shape[0], dtype=graph.senders.dtype)
    return (
        jnp.concatenate([graph.senders, loops]),
        jnp.concatenate([graph.receivers, loops]),
    )


class OnNodes(Layer):
    """Applies a layer (or a function such as ``jax.nn.relu``) to a graph's node features.

    Args:
        layer: any layer mapping ``(N, F)`` to ``(N, F')``, or a plain callable.

    Shapes: ``Graph(nodes (N, F)) -> Graph(nodes (N, F'))``; params are the layer's.

    Example:
        >>> import jax, numpy as np, nnfun as nf
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.ones((3, 2)), None, np.array([0]),
        ...                           np.array([1]), np.array([3]), np.array([1]))])
        >>> layer = nf.OnNodes(nf.Dense(5))
        >>> params, state = layer.init(jax.random.key(0), g)
        >>> layer.apply(params, state, g)[0].nodes.shape
        (4, 5)
    """

    layer: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", as_layer(self.layer))

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        graph = check_graph(self, x)
        return self.layer.init(key, graph.nodes)

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
        nodes, state = self.layer.apply(params, state, graph.nodes, key=key, train=train)
        return graph._replace(nodes=nodes), state


class GraphConv(Layer):
    """Graph convolution of Kipf and Welling (2017): ``H' = D^-1/2 (A + I) D^-1/2 H W + b``.

    ``A[r, s] = 1`` for each edge ``s -> r``, ``D`` the diagonal of ``A + I``'s row
    sums (each node's incoming edges plus its self loop). For undirected graphs
    (each bond as two edges, as ``nnfun.data.molecules`` makes them) this is the
    paper's symmetric normalisation. Edge features are not used.

    Args:
        features: output width.
        use_bias: add a bias.
        add_self_loops: use ``A + I`` (the paper) rather than ``A``; without self
            loops a node with no incoming edges gets only the bias.
        kernel_init: initializer of the ``(in, features)`` kernel.

    Shapes: ``Graph(nodes (N, F)) -> Graph(nodes (N, features))``.

    Example:
        >>> import jax, numpy as np, nnfun as nf
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.ones((3, 2)), None, np.array([0, 1]),
        ...                           np.array([1, 0]), np.array([3]), np.array([2]))])
        >>> params, state = nf.GraphConv(8).init(jax.random.key(0), g)
        >>> nf.GraphConv(8).apply(params, state, g)[0].nodes.shape
        (4, 8)
    """

    features: int
    use_bias: bool = True
    add_self_loops: bool = True
    kernel_init: str | Callable[..., Any] = "glorot_uniform"

    def __post_init__(self) -> None:
        check_width(self, features=self.features)
        get_initializer(self.kernel_init, "GraphConv kernel_init")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        graph = check_graph(self, x)
        return _dense_params(self, key, graph.nodes.shape[1], self.features, self.use_bias), {}

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
        n = graph.nodes.shape[0]
        h = graph.nodes @ params["kernel"]
        senders, receivers = (
            with_self_loops(graph) if self.add_self_loops else (graph.senders, graph.receivers)
        )
        scale = jax.lax.rsqrt(jnp.maximum(segment_count(receivers, n, h.dtype), 1.0))
        messages = h[senders] * (scale[senders] * scale[receivers])[:, None]
        out = segment_sum(messages, receivers, n)
        if self.use_bias:
            out = out + params["bias"][None, :]
        return graph._replace(nodes=out), state


def _dense_params(
    layer: GraphConv, key: jax.Array, fan_in: int, features: int, use_bias: bool
) -> Params:
    params = {"kernel": get_initializer(layer.kernel_init)(key, (fan_in, features), jnp.float32)}
    if use_bias:
        params["bias"] = jnp.zeros((features,), jnp.float32)
    return params


class GIN(Layer):
    """Graph isomorphism network layer (Xu et al. 2019): ``h' = MLP((1 + eps) h + sum_j h_j)``.

    The sum runs over the senders of a node's incoming edges; the MLP is
    ``Dense(hidden) -> relu -> Dense(features)`` (its params under ``"mlp"``).

    Args:
        features: output width.
        hidden: the MLP's hidden width (default ``features``).
        epsilon: the initial ``eps``.
        learn_epsilon: make ``eps`` a parameter (GIN-eps) rather than a constant (GIN-0).

    Shapes: ``Graph(nodes (N, F)) -> Graph(nodes (N, features))``.

    Example:
        >>> import jax, numpy as np, nnfun as nf
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.ones((3, 2)), None, np.array([0, 1]),
        ...                           np.array([1, 0]), np.array([3]), np.array([2]))])
        >>> params, state = nf.GIN(8).init(jax.random.key(0), g)
        >>> sorted(params), nf.GIN(8).apply(params, state, g)[0].nodes.shape
        (['epsilon', 'mlp'], (4, 8))
    """

    features: int
    hidden: int | None = None
    epsilon: float = 0.0
    learn_epsilon: bool = True

    def __post_init__(self) -> None:
        check_width(self, features=self.features, hidden=self.hidden or self.features)

    def _mlp(self) -> Sequential:
        hidden = self.hidden or self.features
        return Sequential([Dense(hidden), jax.nn.relu, Dense(self.features)])

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        graph = check_graph(self, x)
        mlp, state, _ = init_child("mlp", self._mlp(), key, graph.nodes)
        params: Params = {"mlp": mlp}
        if self.learn_epsilon:
            params["epsilon"] = jnp.asarray(self.epsilon, jnp.float32)
        return params, {"mlp": state} if state else {}

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
        epsilon = params["epsilon"] if self.learn_epsilon else self.epsilon
        total = segment_sum(graph.nodes[graph.senders], graph.receivers, graph.nodes.shape[0])
        z = (1.0 + epsilon) * graph.nodes + total
        y, mlp_state = apply_child(
            "mlp", self._mlp(), params["mlp"], state.get("mlp", {}), z, key, train
        )
        return graph._replace(nodes=y), {"mlp": mlp_state} if mlp_state else {}
