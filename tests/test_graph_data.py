"""Graph batches: padding layout, budgets, packing, masks, segment operations and bad input."""

import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.data import Graph, batch_graphs, budget, edge_mask, graph_mask, node_graph_ids, pack
from nnfun.layers import segment_max, segment_mean, segment_softmax, segment_sum


def graph(n, edges, node_width=3, edge_width=2, seed=0):
    rng = np.random.default_rng(seed)
    pairs = np.asarray(edges, np.int64).reshape(-1, 2)
    return Graph(
        nodes=rng.normal(size=(n, node_width)).astype(np.float32),
        edges=rng.normal(size=(len(pairs), edge_width)).astype(np.float32),
        senders=pairs[:, 0],
        receivers=pairs[:, 1],
        n_node=np.array([n]),
        n_edge=np.array([len(pairs)]),
    )


def test_batch_layout_offsets_and_padding():
    a, b = graph(3, [(0, 1), (1, 2)]), graph(2, [(1, 0)], seed=1)
    batch = batch_graphs([a, b], n_node=8, n_edge=5, n_graph=4)
    np.testing.assert_array_equal(batch.senders, [0, 1, 4, 5, 5])  # b's nodes start at 3
    np.testing.assert_array_equal(batch.receivers, [1, 2, 3, 5, 5])  # padding: node 5 to itself
    np.testing.assert_array_equal(batch.n_node, [3, 2, 0, 0])
    np.testing.assert_array_equal(batch.n_edge, [2, 1, 0, 0])
    np.testing.assert_array_equal(batch.nodes[:3], a.nodes)
    np.testing.assert_array_equal(batch.nodes[5:], 0)
    np.testing.assert_array_equal(batch.edges[2], b.edges[0])
    assert batch.senders.dtype == np.int32 and batch.n_node.dtype == np.int32
    np.testing.assert_array_equal(node_graph_ids(batch), [0, 0, 0, 1, 1, 4, 4, 4])
    np.testing.assert_array_equal(graph_mask(batch), [True, True, False, False])
    np.testing.assert_array_equal(edge_mask(batch), [True] * 3 + [False] * 2)


def test_default_budgets_are_powers_of_two():
    batch = batch_graphs([graph(3, [(0, 1)] * 3), graph(4, [(1, 0)] * 2)])
    assert batch.nodes.shape[0] == 8 and batch.senders.shape[0] == 8 and len(batch.n_node) == 2
    assert [budget(n) for n in (0, 1, 2, 3, 500, 512, 513)] == [1, 1, 2, 4, 512, 512, 1024]


def test_exact_budgets_need_no_padding_node():
    batch = batch_graphs([graph(2, [(0, 1)])], n_node=2, n_edge=1, n_graph=1)
    assert batch.nodes.shape == (2, 3)


def test_graph_without_edges_and_without_edge_features():
    g = Graph(np.ones((2, 3)), None, np.zeros(0, int), np.zeros(0, int), [2], [0])
    batch = batch_graphs([g, g], n_edge=2)
    assert batch.edges is None
    np.testing.assert_array_equal(batch.senders, [4, 4])


@pytest.mark.parametrize(
    "budgets, fix",
    [
        ({"n_graph": 1}, "raise n_graph to at least 2"),
        ({"n_edge": 2}, "raise n_edge to at least 3"),
        ({"n_node": 5}, "raise n_node to at least 6"),  # 5 nodes + 1 for the padding edges
    ],
)
def test_over_budget_names_the_budget_to_raise(budgets, fix):
    graphs = [graph(3, [(0, 1), (1, 2)]), graph(2, [(1, 0)])]
    with pytest.raises(ValueError, match=fix):
        batch_graphs(graphs, **{"n_node": 16, "n_edge": 8, "n_graph": 4, **budgets})


@pytest.mark.parametrize(
    "bad, message",
    [
        (graph(3, [(0, 3)]), "receivers out of range: edge 0 has receiver 3.*3 nodes"),
        (graph(3, [(-1, 0)]), "senders out of range"),
        (graph(3, [(0, 1)])._replace(edges=np.ones((2, 2))), r"edge features \(2, 2\).*1 edges"),
        (graph(3, [(0, 1)])._replace(n_node=np.array([2])), "must add up"),
        (Graph(np.ones((0, 3)), None, np.zeros(0, int), np.zeros(0, int), [0], [0]), "no nodes"),
        (graph(3, [(0, 1)])._replace(nodes=np.ones(3)), "expected nodes"),
    ],
)
def test_malformed_graphs_are_named(bad, message):
    with pytest.raises(ValueError, match=r"graphs\[1\].*" + message):
        batch_graphs([graph(2, [(0, 1)]), bad])


def test_mixed_widths_and_edge_features_are_rejected():
    with pytest.raises(ValueError, match="widths"):
        batch_graphs([graph(2, [(0, 1)]), graph(2, [(0, 1)], node_width=4)])
    with pytest.raises(ValueError, match="has no edge features"):
        batch_graphs([graph(2, [(0, 1)]), graph(2, [(0, 1)])._replace(edges=None)])
    with pytest.raises(ValueError, match="non-empty list"):
        batch_graphs(graph(2, [(0, 1)]))


def test_pack_fills_budgets_and_keeps_order():
    sizes = [3, 5, 2, 6, 1, 4]
    graphs = [graph(n, [(0, 0)] * n) for n in sizes]
    groups = pack(graphs, n_node=9, n_edge=8, n_graph=3, order=[5, 4, 3, 2, 1, 0])
    assert np.concatenate(groups).tolist() == [5, 4, 3, 2, 1, 0]
    for group in groups:
        batch = batch_graphs([graphs[i] for i in group], n_node=9, n_edge=8, n_graph=3)
        assert batch.nodes.shape == (9, 3)
    with pytest.raises(ValueError, match="raise n_node to at least 7"):
        pack(graphs, n_node=6, n_edge=8, n_graph=3)


def test_segment_operations_against_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 2)).astype(np.float32)
    ids = np.array([0, 0, 2, 2, 2, 3, 4])  # segment 1 is empty, id 4 is dropped
    for fn, reduce in [(segment_sum, np.sum), (segment_mean, np.mean), (segment_max, np.max)]:
        want = np.stack(
            [reduce(data[ids == s], 0) if (ids == s).any() else 0 * data[0] for s in range(4)]
        )
        np.testing.assert_allclose(fn(jnp.asarray(data), ids, 4), want, rtol=1e-6)
    logits = rng.normal(size=(6, 2)).astype(np.float32) * 30
    groups = np.array([1, 1, 1, 0, 2, 2])
    got = segment_softmax(jnp.asarray(logits), groups, 3)
    for s in range(3):
        z = np.exp(logits[groups == s] - logits[groups == s].max(0))
        np.testing.assert_allclose(got[groups == s], z / z.sum(0), rtol=1e-5)


def test_graph_is_a_pytree_and_exported():
    batch = batch_graphs([graph(2, [(0, 1)])])
    assert nf.Graph is Graph
    assert len(__import__("jax").tree.leaves(batch)) == 6
