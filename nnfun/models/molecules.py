"""Graph networks for molecular properties, their training loop, and a fingerprint baseline.

``model(kind)`` builds one of four graph networks (``KINDS``) that map a padded
``Graph`` batch of molecules to one number per graph. ``train`` fits one with
Adam on a masked mean squared error over standardised targets, one jit-compiled
step per batch at fixed padding budgets (so it compiles once); ``predict``
evaluates it; ``random_forest`` is the baseline on Morgan fingerprints.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core import Sequential
from ..data import Graph, batch_graphs, budget, fingerprints, graph_mask, pack
from ..layers import GAT, GIN, MPNN, Dense, GraphConv, OnNodes, Readout, Set2Set

KINDS = ("mpnn", "gcn", "gin", "gat")


def model(kind: str = "mpnn", features: int = 64, steps: int = 4) -> Sequential:
    """A graph network for one number per molecule: graph layers, a readout, an MLP head.

    Args:
        kind: ``"mpnn"`` (edge network + GRU, ``steps`` shared steps, Set2Set
            readout, as Gilmer et al. 2017), ``"gcn"`` (three ``GraphConv``),
            ``"gin"`` (three ``GIN``) or ``"gat"`` (three 4-head ``GAT``), the last
            three with a sum readout.
        features: width of the node states.
        steps: message-passing steps of the MPNN.

    Shapes: ``Graph(nodes (N, F), edges (E, F_e), n_node (G,)) -> (G, 1)``.

    Example:
        >>> import jax, numpy as np, nnfun as nf
        >>> from nnfun.models.molecules import model
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.ones((3, 5)), np.ones((2, 2)),
        ...     np.array([0, 1]), np.array([1, 0]), np.array([3]), np.array([2]))])
        >>> net = model("gin", features=8)
        >>> params, state = net.init(jax.random.key(0), g)
        >>> net.apply(params, state, g)[0].shape
        (1, 1)
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    head = {"hidden": Dense(features), "relu": jax.nn.relu, "out": Dense(1)}
    if kind == "mpnn":
        body = {"mpnn": MPNN(features, steps=steps), "readout": Set2Set(steps=3)}
        return Sequential({**body, **head})
    layer = {
        "gcn": lambda: GraphConv(features),
        "gin": lambda: GIN(features),
        "gat": lambda: GAT(features // 4, heads=4),
    }[kind]
    body = {}
    for i in range(3):
        body[f"{kind}{i}"] = layer()
        body[f"relu{i}"] = OnNodes(jax.nn.relu)
    return Sequential({**body, "readout": Readout("sum"), **head})


class Budgets(NamedTuple):
    """Padding budgets of a batch: nodes, edges and graphs (see ``nnfun.data.batch_graphs``)."""

    n_node: int
    n_edge: int
    n_graph: int


def budgets_for(graphs: Sequence[Graph], batch_size: int) -> Budgets:
    """Padding budgets for batches of about ``batch_size`` graphs (at most that many).

    Nodes and edges get :func:`nnfun.data.budget` of ``batch_size`` times the mean
    graph (at least the largest graph), so packed batches (:func:`batches`) hold
    close to ``batch_size`` graphs with little padding, and every batch has the
    same shapes: the train step compiles once.
    """
    nodes = np.array([int(np.sum(g.n_node)) for g in graphs])
    edges = np.array([int(np.sum(g.n_edge)) for g in graphs])
    n_node = budget(max(int(np.ceil(nodes.mean() * batch_size)), int(nodes.max())) + 1)
    n_edge = budget(max(int(np.ceil(edges.mean() * batch_size)), int(edges.max())))
    return Budgets(n_node, n_edge, batch_size)


def batches(
    graphs: Sequence[Graph],
    y: np.ndarray,
    budgets: Budgets,
    *,
    shuffle_seed: int | None = None,
) -> Iterator[tuple[Graph, np.ndarray]]:
    """Padded ``(Graph, targets (n_graph,))`` batches, packed to the budgets (``nnfun.data.pack``).

    Graphs are visited in order, or in a permutation drawn from ``shuffle_seed``.
    Padding graphs have target 0 and are masked out of the loss by ``graph_mask``.
    """
    order = np.arange(len(graphs))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(graphs))
    for index in pack(graphs, order=order, **budgets._asdict()):
        batch = batch_graphs([graphs[i] for i in index], **budgets._asdict())
        yield batch, np.pad(y[index], (0, budgets.n_graph - len(index))).astype(np.float32)


def masked_mse(predictions: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error over the real graphs (``mask`` True); padding graphs count 0."""
    errors = jnp.where(mask, (predictions - targets) ** 2, 0.0)
    return jnp.sum(errors) / jnp.maximum(jnp.sum(mask), 1)


class Trained(NamedTuple):
    """A trained model: its params and state, the target scaling, and the loss per epoch."""

    params: Any
    state: Any
    mean: float
    std: float
    losses: list[float]


def train(
    net: Sequential,
    graphs: Sequence[Graph],
    y: np.ndarray,
    *,
    epochs: int = 100,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> Trained:
    """Trains ``net`` on standardised targets with Adam and a cosine-decayed learning rate.

    Every batch is padded to the same budgets (:func:`budgets_for`), so the
    step compiles once. Epoch ``e`` is shuffled by the seed ``(seed, e)``.
    """
    mean, std = float(np.mean(y)), float(np.std(y))
    scaled = (np.asarray(y, np.float32) - mean) / std
    budgets = budgets_for(graphs, batch_size)
    steps = epochs * len(pack(graphs, **budgets._asdict()))
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    example, _ = next(batches(graphs, scaled, budgets))
    params, state = net.init(jax.random.key(seed), example)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params: Any, state: Any, opt_state: Any, batch: Graph, targets: jax.Array) -> Any:
        def loss(p: Any) -> tuple[jax.Array, Any]:
            out, new_state = net.apply(p, state, batch, train=True)
            return masked_mse(out[:, 0], targets, graph_mask(batch)), new_state

        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, value

    losses = []
    for epoch in range(epochs):
        total = []
        for batch, targets in batches(graphs, scaled, budgets, shuffle_seed=hash_seed(seed, epoch)):
            params, state, opt_state, value = step(params, state, opt_state, batch, targets)
            total.append(value)
        losses.append(float(np.mean(jax.device_get(total))))
    return Trained(params, state, mean, std, losses)


def hash_seed(seed: int, epoch: int) -> int:
    """A shuffling seed for one epoch, from the run's seed (stable across processes)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def predict(
    net: Sequential, trained: Trained, graphs: Sequence[Graph], batch_size: int = 64
) -> np.ndarray:
    """Predictions in the targets' units, ``(len(graphs),)``."""
    budgets = budgets_for(graphs, batch_size)
    run = jax.jit(lambda p, s, g: net.apply(p, s, g)[0][:, 0])
    zeros = np.zeros(len(graphs), np.float32)
    out = [
        np.asarray(run(trained.params, trained.state, batch))[: int(np.sum(batch.n_node > 0))]
        for batch, _ in batches(graphs, zeros, budgets)
    ]
    return np.concatenate(out) * trained.std + trained.mean


def rmse(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(predictions) - np.asarray(targets)) ** 2)))


def r2(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Coefficient of determination: ``1 - SS_res / SS_tot``."""
    targets = np.asarray(targets)
    residual = np.sum((np.asarray(predictions) - targets) ** 2)
    return float(1.0 - residual / np.sum((targets - targets.mean()) ** 2))


def random_forest(
    train_smiles: Sequence[str],
    train_y: np.ndarray,
    test_smiles: Sequence[str],
    *,
    seed: int = 0,
    trees: int = 500,
) -> np.ndarray:
    """The baseline: a scikit-learn random forest on 2048-bit Morgan fingerprints (radius 2).

    Returns its predictions for ``test_smiles``.
    """
    ensemble = importlib.import_module("sklearn.ensemble")
    forest = ensemble.RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=2)
    forest.fit(fingerprints(train_smiles), train_y)
    return forest.predict(fingerprints(test_smiles))
