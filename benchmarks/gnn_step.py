"""Graph-network training steps on the solubility set: nnfun against hand-written JAX and jraph.

Run ``python benchmarks/gnn_step.py``. Every contender trains the same network
on the same padded batch (32 molecules, budgets from ``budgets_for``) with Adam;
the table gives milliseconds per step, molecules per second and the ratio to
the hand-written JAX step of the same math. jraph (``GraphConvolution``, GCN
only) appears when it is importable. The last table is the cost of padding
budgets: compile time and step time per budget (one compile per budget).
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import optax

import nnfun.data as nd
from nnfun.models import molecules as mm


def timed(step, args, repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(step(*args))
    compile_s = time.perf_counter() - start
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = step(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return compile_s, best


def make_step(loss_fn, params):
    optimizer = optax.adam(1e-3)

    @jax.jit
    def step(params, opt_state, batch, targets):
        value, grads = jax.value_and_grad(loss_fn)(params, batch, targets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step, (params, optimizer.init(params))


def nnfun_loss(net):
    def loss(params, batch, targets):
        out, _ = net.apply(params, {}, batch)
        return mm.masked_mse(out[:, 0], targets, nd.graph_mask(batch))

    return loss


def naive_gcn_loss(params, batch, targets):
    # Hand-written: three GraphConv layers, relu, sum readout, a two-layer head.
    n, g = batch.nodes.shape[0], batch.n_node.shape[0]
    loops = jnp.arange(n)
    s, r = jnp.concatenate([batch.senders, loops]), jnp.concatenate([batch.receivers, loops])
    degree = jax.ops.segment_sum(jnp.ones(s.shape), r, n)
    norm = (jax.lax.rsqrt(degree)[s] * jax.lax.rsqrt(degree)[r])[:, None]
    h = batch.nodes
    for i in range(3):
        p = params[f"gcn{i}"]
        hw = h @ p["kernel"]
        h = jax.nn.relu(jax.ops.segment_sum(hw[s] * norm, r, n) + p["bias"][None, :])
    graph = jnp.repeat(jnp.arange(g), batch.n_node, total_repeat_length=n)
    graph = jnp.where(jnp.arange(n) < jnp.sum(batch.n_node), graph, g)
    pooled = jax.ops.segment_sum(h, graph, g)
    return _head_loss(params, pooled, targets, batch.n_node > 0)


def _head_loss(params, pooled, targets, mask):
    hidden = jax.nn.relu(pooled @ params["hidden"]["kernel"] + params["hidden"]["bias"][None, :])
    out = (hidden @ params["out"]["kernel"] + params["out"]["bias"][None, :])[:, 0]
    return jnp.sum(jnp.where(mask, (out - targets) ** 2, 0.0)) / jnp.sum(mask)


def naive_mpnn_loss(params, batch, targets, steps=4):
    # Hand-written, as Keras's MPNN example: (E, F, F) edge matrices, GRU, Set2Set.
    p, n, g = params["mpnn"], batch.nodes.shape[0], batch.n_node.shape[0]
    f = p["gru"]["recurrent_kernel"].shape[0]
    h = jnp.pad(batch.nodes, ((0, 0), (0, f - batch.nodes.shape[1])))
    net = p["edge_network"]
    matrices = (batch.edges @ net["kernel"] + net["bias"][None, :]).reshape(-1, f, f)
    for _ in range(steps):
        m = jax.ops.segment_sum(
            jnp.einsum("eij,ej->ei", matrices, h[batch.senders]), batch.receivers, n
        )
        h = _gru(p["gru"], h, m)
    graph = jnp.repeat(jnp.arange(g), batch.n_node, total_repeat_length=n)
    graph = jnp.where(jnp.arange(n) < jnp.sum(batch.n_node), graph, g)
    pooled = _set2set(params["readout"]["lstm"], h, graph, g)
    return _head_loss(params, pooled, targets, batch.n_node > 0)


def _gru(p, h, x):
    xr, xz, xn = jnp.split(x @ p["input_kernel"] + p["bias"][None, :], 3, axis=-1)
    hr, hz, hn = jnp.split(h @ p["recurrent_kernel"] + p["recurrent_bias"][None, :], 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    return (1 - z) * jnp.tanh(xn + r * hn) + z * h


def _set2set(p, m, graph, g, steps=3):
    f = m.shape[1]
    hid, cell, star = jnp.zeros((g + 1, f)), jnp.zeros((g + 1, f)), jnp.zeros((g + 1, 2 * f))
    for _ in range(steps):
        gates = star @ p["input_kernel"] + p["bias"][None, :] + hid @ p["recurrent_kernel"]
        i, fg, c, o = jnp.split(gates, 4, axis=-1)
        cell = jax.nn.sigmoid(fg) * cell + jax.nn.sigmoid(i) * jnp.tanh(c)
        hid = jax.nn.sigmoid(o) * jnp.tanh(cell)
        e = jnp.sum(m * hid[graph], axis=-1)
        e = jnp.exp(e - jax.lax.stop_gradient(jax.ops.segment_max(e, graph, g + 1))[graph])
        a = e / jax.ops.segment_sum(e, graph, g + 1)[graph]
        star = jnp.concatenate([hid, jax.ops.segment_sum(a[:, None] * m, graph, g + 1)], -1)
    return star[:g]


def jraph_gcn_loss(jraph):
    def loss(params, batch, targets):
        g = jraph.GraphsTuple(
            nodes=batch.nodes,
            edges=None,
            senders=batch.senders,
            receivers=batch.receivers,
            n_node=batch.n_node,
            n_edge=batch.n_edge,
            globals=None,
        )
        for i in range(3):
            p = params[f"gcn{i}"]
            layer = jraph.GraphConvolution(lambda x, p=p: x @ p["kernel"], add_self_edges=True)
            g = layer(g)
            g = g._replace(nodes=jax.nn.relu(g.nodes + p["bias"][None, :]))
        n, count = batch.nodes.shape[0], batch.n_node.shape[0]
        graph = jnp.repeat(jnp.arange(count), batch.n_node, total_repeat_length=n)
        graph = jnp.where(jnp.arange(n) < jnp.sum(batch.n_node), graph, count)
        pooled = jax.ops.segment_sum(g.nodes, graph, count)
        return _head_loss(params, pooled, targets, batch.n_node > 0)

    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    train, _ = nd.solubility()
    budgets = mm.budgets_for(train["graphs"], 32)
    batch, targets = next(mm.batches(train["graphs"], train["y"], budgets, shuffle_seed=0))
    cpu = platform.processor() or platform.machine()
    print(f"JAX {jax.__version__} on {jax.default_backend()} ({cpu}), {budgets}")
    rows = []
    for kind in ("gcn", "mpnn"):
        net = mm.model(kind, features=64)
        params, _ = net.init(jax.random.key(0), batch)
        contenders = {"hand-written JAX": naive_gcn_loss if kind == "gcn" else naive_mpnn_loss}
        contenders["nnfun"] = nnfun_loss(net)
        try:
            import jraph

            if kind == "gcn":
                contenders["jraph"] = jraph_gcn_loss(jraph)
        except ImportError:
            pass
        times = {}
        for name, loss in contenders.items():
            step, (p, opt_state) = make_step(loss, params)
            times[name] = timed(step, (p, opt_state, batch, targets), args.repeats)
        for name, (compile_s, step_s) in times.items():
            ratio = step_s / times["hand-written JAX"][1]
            rows.append((kind, name, compile_s, step_s, 32 / step_s, ratio))
    print(f"{'model':6} {'contender':18} {'compile s':>9} {'ms/step':>8} {'mol/s':>8} {'ratio':>6}")
    for kind, name, c, s, rate, ratio in rows:
        print(f"{kind:6} {name:18} {c:9.2f} {1e3 * s:8.2f} {rate:8.0f} {ratio:6.2f}")
    print("\nPadding budgets (nnfun MPNN): one compile per budget")
    net = mm.model("mpnn", features=64)
    for size in (16, 32, 64):
        b = mm.budgets_for(train["graphs"], size)
        graph, y = next(mm.batches(train["graphs"], train["y"], b, shuffle_seed=0))
        params, _ = net.init(jax.random.key(0), graph)
        step, (p, opt_state) = make_step(nnfun_loss(net), params)
        compile_s, step_s = timed(step, (p, opt_state, graph, y), max(args.repeats // 2, 3))
        fill = int(graph.n_node.sum()) / b.n_node
        print(
            f"{b}: compile {compile_s:.2f} s, {1e3 * step_s:.1f} ms/step, "
            f"{int((graph.n_node > 0).sum()) / step_s:.0f} mol/s, nodes filled {fill:.0%}"
        )


if __name__ == "__main__":
    main()
