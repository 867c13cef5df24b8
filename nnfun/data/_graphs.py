"""A batch of graphs as one padded pytree, and the batching that pads it to fixed budgets.

``Graph`` follows jraph's ``GraphsTuple``: the graphs of a batch are concatenated
(node ``i`` of the batch belongs to graph ``g`` when it falls in ``g``'s slice of
``n_node``), and edges point into that concatenation. Padding makes every batch
the same shape, so ``jax.jit`` compiles once per budget:

- padding nodes come after the real ones and belong to no graph
  (``sum(n_node) <= budget``; their graph id is ``n_graph``, which every segment
  operation drops);
- padding edges come after the real ones and join the first padding node to
  itself, so no message reaches a real node;
- padding graphs come after the real ones and have ``n_node = n_edge = 0``.

A real graph has at least one node, so :func:`graph_mask` is ``n_node > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Graph(NamedTuple):
    """A batch of graphs (or one graph): node and edge features with their structure.

    A ``NamedTuple``, hence a pytree: ``jax.jit``, ``jax.vmap`` and ``jax.tree.map``
    see its six arrays. Graph layers take a ``Graph`` as their main input and
    return it with new ``nodes``.

    Attributes:
        nodes: ``(N, node_features)`` float, the nodes of all graphs in order.
        edges: ``(E, edge_features)`` float, or ``None`` for graphs without edge features.
        senders: ``(E,)`` int, the node each edge starts from (an index into ``nodes``).
        receivers: ``(E,)`` int, the node each edge points to; an undirected bond is
            two edges, one each way.
        n_node: ``(G,)`` int, the number of nodes of each graph.
        n_edge: ``(G,)`` int, the number of edges of each graph.

    Example:
        >>> import numpy as np
        >>> from nnfun.data import Graph
        >>> g = Graph(np.ones((2, 3)), None, np.array([0, 1]), np.array([1, 0]),
        ...           np.array([2]), np.array([2]))
        >>> g.nodes.shape, int(g.n_node.sum())
        ((2, 3), 2)
    """

    nodes: Any
    edges: Any
    senders: Any
    receivers: Any
    n_node: Any
    n_edge: Any


def node_graph_ids(graph: Graph) -> jax.Array:
    """The graph each node belongs to, ``(N,)`` int; padding nodes get ``G`` (no graph).

    Example:
        >>> import numpy as np
        >>> from nnfun.data import Graph, node_graph_ids
        >>> g = Graph(np.zeros((4, 1)), None, np.zeros(0, int), np.zeros(0, int),
        ...           np.array([1, 2]), np.array([0, 0]))
        >>> node_graph_ids(g).tolist()
        [0, 1, 1, 2]
    """
    n_graph, n_nodes = graph.n_node.shape[0], graph.nodes.shape[0]
    ids = jnp.repeat(
        jnp.arange(n_graph, dtype=jnp.int32), graph.n_node, total_repeat_length=n_nodes
    )
    # repeat pads with the last id; nodes past sum(n_node) belong to no graph.
    return jnp.where(node_mask(graph), ids, n_graph)


def node_mask(graph: Graph) -> jax.Array:
    """``(N,)`` bool, True at the real (unpadded) nodes."""
    return jnp.arange(graph.nodes.shape[0]) < jnp.sum(graph.n_node)


def edge_mask(graph: Graph) -> jax.Array:
    """``(E,)`` bool, True at the real (unpadded) edges."""
    return jnp.arange(graph.senders.shape[0]) < jnp.sum(graph.n_edge)


def graph_mask(graph: Graph) -> jax.Array:
    """``(G,)`` bool, True at the real graphs (those with at least one node)."""
    return graph.n_node > 0


def budget(count: int, *, minimum: int = 1) -> int:
    """``count`` rounded up to a power of two (at least ``minimum``): few budgets, few compiles.

    Example:
        >>> from nnfun.data import budget
        >>> budget(600), budget(1024), budget(0)
        (1024, 1024, 1)
    """
    count = max(int(count), minimum, 1)
    return 1 << (count - 1).bit_length()


def pack(
    graphs: Sequence[Graph],
    *,
    n_node: int,
    n_edge: int,
    n_graph: int,
    order: Sequence[int] | np.ndarray | None = None,
) -> list[np.ndarray]:
    """Groups graphs, in ``order``, into as few batches as fit the budgets (greedy packing).

    Each group holds consecutive graphs of ``order`` that :func:`batch_graphs`
    can pad to ``(n_node, n_edge, n_graph)``, keeping one node free for the padding
    edges. Packing by nodes and edges rather than a fixed count of graphs keeps
    the padding small when graph sizes vary (jraph's ``dynamically_batch``).

    Returns:
        A list of index arrays into ``graphs``.

    Example:
        >>> import numpy as np
        >>> from nnfun.data import Graph, pack
        >>> g = lambda n: Graph(np.ones((n, 1)), None, np.zeros(0, int), np.zeros(0, int),
        ...                     np.array([n]), np.array([0]))
        >>> [p.tolist() for p in pack([g(3), g(2), g(4), g(1)], n_node=7, n_edge=1, n_graph=4)]
        [[0, 1], [2, 3]]
    """
    visit = np.arange(len(graphs)) if order is None else np.asarray(order)
    groups: list[list[int]] = [[]]
    nodes = edges = 0
    for i in visit.tolist():
        size = int(np.sum(graphs[i].n_node)), int(np.sum(graphs[i].n_edge))
        if size[0] + 1 > n_node or size[1] > n_edge:
            raise ValueError(
                f"pack: graph {int(i)} has {size[0]} nodes and {size[1]} edges, over the "
                f"budgets n_node={n_node} (one node is kept for padding) and n_edge={n_edge}. "
                f"Fix: raise n_node to at least {size[0] + 1} and n_edge to at least {size[1]}."
            )
        full = len(groups[-1]) == n_graph
        if full or nodes + size[0] + 1 > n_node or edges + size[1] > n_edge:
            groups.append([])
            nodes = edges = 0
        groups[-1].append(int(i))
        nodes, edges = nodes + size[0], edges + size[1]
    return [np.asarray(group, np.int64) for group in groups if group]


def batch_graphs(
    graphs: Sequence[Graph],
    *,
    n_node: int | None = None,
    n_edge: int | None = None,
    n_graph: int | None = None,
) -> Graph:
    """Concatenates graphs into one padded ``Graph`` of fixed budgets (NumPy arrays).

    Args:
        graphs: graphs to batch, each a ``Graph`` of one or more graphs with NumPy
            or JAX arrays; all with the same feature widths.
        n_node: node budget ``N``. Default: :func:`budget` of the node count plus one.
            It must exceed the node count when there are padding edges (they need a
            padding node to point at).
        n_edge: edge budget ``E``. Default: :func:`budget` of the edge count.
        n_graph: graph budget ``G``. Default: the number of graphs, exactly.

    Returns:
        A ``Graph`` with ``nodes (N, F)``, ``edges (E, F_e)`` (or ``None``),
        ``senders``/``receivers (E,)`` int32 (offset into the batch), ``n_node``/
        ``n_edge (G,)`` int32; see the module docstring for the padding.

    Raises:
        ValueError: a graph is malformed (senders or receivers out of its range, an
            edge-feature count that is not its edge count, no nodes), widths differ,
            or the batch is over a budget (the message names the budget to raise).

    Example:
        >>> import numpy as np
        >>> from nnfun.data import Graph, batch_graphs
        >>> a = Graph(np.ones((2, 3)), np.ones((2, 1)), np.array([0, 1]), np.array([1, 0]),
        ...           np.array([2]), np.array([2]))
        >>> b = Graph(np.ones((1, 3)), np.ones((0, 1)), np.zeros(0, int), np.zeros(0, int),
        ...           np.array([1]), np.array([0]))
        >>> batch = batch_graphs([a, b], n_node=8, n_edge=4, n_graph=3)
        >>> batch.nodes.shape, batch.senders.tolist(), batch.n_node.tolist()
        ((8, 3), [0, 1, 3, 3], [2, 1, 0])
    """
    if isinstance(graphs, Graph) or not len(graphs):
        raise ValueError(
            "batch_graphs: expected a non-empty list of Graph, got "
            f"{'a single Graph' if isinstance(graphs, Graph) else repr(graphs)}. "
            "Fix: batch_graphs([g1, g2, ...])."
        )
    parts = [_checked(g, i) for i, g in enumerate(graphs)]
    _check_widths(parts)
    counts = np.concatenate([p.n_node for p in parts]), np.concatenate([p.n_edge for p in parts])
    total_nodes, total_edges = int(counts[0].sum()), int(counts[1].sum())
    n_node = budget(total_nodes + 1) if n_node is None else n_node
    n_edge = budget(total_edges) if n_edge is None else n_edge
    n_graph = len(counts[0]) if n_graph is None else n_graph
    _check_budgets(total_nodes, total_edges, len(counts[0]), n_node, n_edge, n_graph)
    offsets = np.cumsum([0] + [p.nodes.shape[0] for p in parts[:-1]])
    senders = np.concatenate([p.senders + o for p, o in zip(parts, offsets)])
    receivers = np.concatenate([p.receivers + o for p, o in zip(parts, offsets)])
    edges = None if parts[0].edges is None else np.concatenate([p.edges for p in parts])
    nodes = np.concatenate([p.nodes for p in parts])
    pad_edges = n_edge - total_edges
    return Graph(
        nodes=_pad_rows(nodes, n_node),
        edges=None if edges is None else _pad_rows(edges, n_edge),
        senders=np.concatenate([senders, np.full(pad_edges, total_nodes)]).astype(np.int32),
        receivers=np.concatenate([receivers, np.full(pad_edges, total_nodes)]).astype(np.int32),
        n_node=_pad_rows(counts[0], n_graph).astype(np.int32),
        n_edge=_pad_rows(counts[1], n_graph).astype(np.int32),
    )


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    pad = [(0, rows - array.shape[0])] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, pad)


def _checked(graph: Any, index: int) -> Graph:
    """``graph`` as NumPy arrays, checked for the mistakes that would corrupt a batch."""
    if not isinstance(graph, Graph):
        raise ValueError(f"batch_graphs: graphs[{index}] is a {type(graph).__name__}, not a Graph")
    g = Graph(*(None if a is None else np.asarray(a) for a in graph))
    where = f"batch_graphs: graphs[{index}]"
    if g.nodes.ndim != 2 or g.senders.ndim != 1 or g.senders.shape != g.receivers.shape:
        raise ValueError(
            f"{where}: expected nodes (N, F) and senders/receivers (E,) of one length, got "
            f"nodes {g.nodes.shape}, senders {g.senders.shape}, receivers {g.receivers.shape}"
        )
    if g.edges is not None and (g.edges.ndim != 2 or g.edges.shape[0] != g.senders.shape[0]):
        raise ValueError(
            f"{where}: edge features {g.edges.shape} do not match its {g.senders.shape[0]} "
            "edges (senders/receivers). Fix: one row of edge features per edge, (E, F_e)."
        )
    if g.n_node.sum() != g.nodes.shape[0] or g.n_edge.sum() != g.senders.shape[0]:
        raise ValueError(
            f"{where}: n_node {g.n_node.tolist()} and n_edge {g.n_edge.tolist()} must add up "
            f"to its {g.nodes.shape[0]} nodes and {g.senders.shape[0]} edges; an unbatched "
            "graph has n_node=[N], n_edge=[E]. (Batches that are already padded cannot be "
            "batched again.)"
        )
    if np.any(g.n_node < 1):
        raise ValueError(
            f"{where}: has a graph with no nodes (n_node {g.n_node.tolist()}); a graph needs "
            "at least one node (a graph with no edges is fine). Fix: drop the empty graph."
        )
    _check_indices(g, where)
    return g


def _check_indices(g: Graph, where: str) -> None:
    if not (np.issubdtype(g.senders.dtype, np.integer) or g.senders.size == 0):
        raise ValueError(f"{where}: senders/receivers must be ints, got {g.senders.dtype}")
    n = g.nodes.shape[0]
    for name in ("senders", "receivers"):
        index = getattr(g, name)
        bad = np.flatnonzero((index < 0) | (index >= n))
        if bad.size:
            raise ValueError(
                f"{where}: {name} out of range: edge {int(bad[0])} has {name[:-1]} "
                f"{int(index[bad[0]])}, but the graph has {n} nodes (valid 0..{n - 1}). "
                "Fix: index nodes from 0 within each graph."
            )


def _check_widths(parts: list[Graph]) -> None:
    first = parts[0]
    for i, g in enumerate(parts):
        if (g.edges is None) != (first.edges is None):
            raise ValueError(
                f"batch_graphs: graphs[{i}] {'has no' if g.edges is None else 'has'} edge "
                "features but graphs[0] " + ("has." if g.edges is None else "has none.")
            )
        widths = (g.nodes.shape[1], None if g.edges is None else g.edges.shape[1])
        want = (first.nodes.shape[1], None if first.edges is None else first.edges.shape[1])
        if widths != want:
            raise ValueError(
                f"batch_graphs: graphs[{i}] has (node, edge) feature widths {widths}, "
                f"graphs[0] has {want}; every graph of a batch needs the same widths."
            )


def _check_budgets(
    nodes: int, edges: int, graphs: int, n_node: int, n_edge: int, n_graph: int
) -> None:
    needed = nodes + 1 if n_edge > edges else nodes
    for name, count, have, note in (
        ("n_graph", graphs, n_graph, ""),
        ("n_edge", edges, n_edge, ""),
        ("n_node", needed, n_node, " (one more than the nodes: padding edges need a node)"),
    ):
        if count > have:
            raise ValueError(
                f"batch_graphs: the batch needs {name} >= {count}{note if needed > nodes else ''}"
                f", but the budget is {name}={have}. Fix: raise {name} to at least {count} "
                f"(budget({count}) = {budget(count)}) or batch fewer graphs."
            )
