"""Graph layers with learned messages: graph attention (``GAT``) and the edge network (``MPNN``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import apply_child, init_child
from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error
from ._dense import Dense
from ._graph import check_graph, check_width, with_self_loops
from ._recurrent import GRU
from ._segment import segment_softmax, segment_sum


class GAT(Layer):
    """Graph attention (Velickovic et al. 2018), multi-head, softmax over each node's neighbours.

    Per head ``k``, with ``z = h W_k``::

        e_rs = leaky_relu(a_k . z_r + b_k . z_s)     # edge s -> r
        alpha_rs = softmax over the senders s of r of e_rs
        h'_r = sum_s alpha_rs z_s

    (``[a_k; b_k]`` is the paper's attention vector ``a``.) Heads are
    concatenated (``concat=True``, width ``heads * features``) or averaged.

    Args:
        features: width per head.
        heads: number of attention heads.
        concat: concatenate the heads; else average them (the paper's last layer).
        negative_slope: the leaky ReLU's slope (0.2 in the paper).
        add_self_loops: a node also attends to itself (the paper); without,
            a node with no incoming edges gets only the bias.
        use_bias: add a bias after the aggregation.
        kernel_init: initializer of the ``(in, heads * features)`` kernel.

    Shapes: ``Graph(nodes (N, F)) -> Graph(nodes (N, heads * features))`` (or
    ``(N, features)`` with ``concat=False``).

    Example:
        >>> import jax, numpy as np, nnfun as nf
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.ones((3, 2)), None, np.array([0, 1]),
        ...                           np.array([1, 0]), np.array([3]), np.array([2]))])
        >>> layer = nf.GAT(4, heads=2)
        >>> params, state = layer.init(jax.random.key(0), g)
        >>> layer.apply(params, state, g)[0].nodes.shape
        (4, 8)
    """

    features: int
    heads: int = 1
    concat: bool = True
    negative_slope: float = 0.2
    add_self_loops: bool = True
    use_bias: bool = True
    kernel_init: str | Callable[..., Any] = "glorot_uniform"

    def __post_init__(self) -> None:
        check_width(self, features=self.features, heads=self.heads)
        get_initializer(self.kernel_init, "GAT kernel_init")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        graph = check_graph(self, x)
        k_kernel, k_receiver, k_sender = jax.random.split(key, 3)
        shape = (self.heads, self.features)
        attention_init = jax.nn.initializers.glorot_uniform()
        params = {
            "kernel": get_initializer(self.kernel_init)(
                k_kernel, (graph.nodes.shape[1], self.heads * self.features), jnp.float32
            ),
            "attention_receiver": attention_init(k_receiver, shape, jnp.float32),
            "attention_sender": attention_init(k_sender, shape, jnp.float32),
        }
        if self.use_bias:
            width = self.heads * self.features if self.concat else self.features
            params["bias"] = jnp.zeros((width,), jnp.float32)
        return params, {}

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
        z = (graph.nodes @ params["kernel"]).reshape(n, self.heads, self.features)
        senders, receivers = (
            with_self_loops(graph) if self.add_self_loops else (graph.senders, graph.receivers)
        )
        to_receiver = jnp.sum(z * params["attention_receiver"][None], axis=-1)  # (N, heads)
        from_sender = jnp.sum(z * params["attention_sender"][None], axis=-1)
        logits = jax.nn.leaky_relu(
            to_receiver[receivers] + from_sender[senders], self.negative_slope
        )
        alpha = segment_softmax(logits, receivers, n)  # (E, heads)
        out = segment_sum(alpha[:, :, None] * z[senders], receivers, n)
        out = out.reshape(n, -1) if self.concat else jnp.mean(out, axis=1)
        if self.use_bias:
            out = out + params["bias"][None, :]
        return graph._replace(nodes=out), state


class MPNN(Layer):
    """Edge-conditioned message passing with a GRU update (Gilmer et al. 2017).

    The node features are zero-padded to ``features`` (``h^0``); then, ``steps``
    times with shared weights::

        A_e = reshape(edge_network(e_sr), (features, features))   # per edge s -> r
        m_r = sum_s A_e h_s
        h_r = GRU(h_r, m_r)

    ``edge_network`` is one dense layer ``F_e -> features * features`` and ``GRU``
    is :class:`nnfun.GRU` with ``m`` as its input and ``h`` as its carry, as in
    Keras's "Message-passing neural network (MPNN) for molecular property
    prediction" example. Needs edge features.

    Args:
        features: width of the node state (at least the input's node width).
        steps: message-passing steps (weights shared across them).

    Shapes: ``Graph(nodes (N, F), edges (E, F_e)) -> Graph(nodes (N, features))``.
    Params: ``edge_network`` (``kernel (F_e, features**2)``, ``bias``) and ``gru``.

    Example:
        >>> import jax, numpy as np, nnfun as nf
        >>> g = nf.data.batch_graphs([nf.data.Graph(np.ones((3, 2)), np.ones((2, 1)),
        ...     np.array([0, 1]), np.array([1, 0]), np.array([3]), np.array([2]))])
        >>> params, state = nf.MPNN(8, steps=2).init(jax.random.key(0), g)
        >>> nf.MPNN(8, steps=2).apply(params, state, g)[0].nodes.shape
        (4, 8)
    """

    features: int
    steps: int = 3

    def __post_init__(self) -> None:
        check_width(self, features=self.features, steps=self.steps)

    def _padded(self, graph: Any) -> jax.Array:
        width = graph.nodes.shape[1]
        if width > self.features:
            raise layer_error(
                self,
                f"node features of width {width} do not fit a state of width {self.features}"
                f" (they are zero-padded, not projected). Fix: MPNN({width}) or wider, or "
                f"project first with nf.OnNodes(nf.Dense({self.features})).",
            )
        return jnp.pad(graph.nodes, ((0, 0), (0, self.features - width)))

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        graph = check_graph(self, x, edges=True)
        h = jax.eval_shape(self._padded, graph)
        edge_network, _, _ = init_child("edge_network", Dense(self.features**2), key, graph.edges)
        gru, _, _ = init_child("gru", GRU(self.features), key, (h, h))
        return {"edge_network": edge_network, "gru": gru}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        graph = check_graph(self, x, edges=True)
        h = self._padded(graph)
        n, f = h.shape
        kernel, bias = self._edge_network(params["edge_network"], graph.edges.shape[1], f)
        for _ in range(self.steps):
            messages = _edge_messages(graph.edges, h[graph.senders], kernel, bias)
            total = segment_sum(messages, graph.receivers, n)
            (h, _), _ = apply_child("gru", GRU(f), params["gru"], {}, (h, total), key, train)
        return graph._replace(nodes=h), state

    def _edge_network(self, params: Params, edge_width: int, f: int) -> tuple[jax.Array, jax.Array]:
        kernel, bias = params["kernel"], params["bias"]
        if kernel.shape != (edge_width, f * f) or bias.shape != (f * f,):
            raise layer_error(
                self,
                f"expected edge_network kernel ({edge_width}, {f * f}) and bias ({f * f},) for "
                f"edge features of width {edge_width}, got {kernel.shape} and {bias.shape}. "
                "Fix: re-run init on graphs with these edge features.",
            )
        # A_e[i, j] = sum_k e_k K[k, i, j] + B[i, j]; K rearranged to rows (k, j), columns i.
        stacked = kernel.reshape(edge_width, f, f).transpose(0, 2, 1).reshape(edge_width * f, f)
        return stacked, bias.reshape(f, f).T


def _edge_messages(edges: jax.Array, h: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """``A(e) h`` for every edge without forming the ``(E, F, F)`` matrices ``A(e)``.

    ``A(e) h = (e outer h) K + h B``: one ``(E, F_e F) @ (F_e F, F)`` product, measured
    2.5x faster on XLA:CPU (forward and backward, E=4096, F=64, F_e=6) than building
    ``A`` and a batched matrix-vector product, and without its ``E F^2`` memory.
    """
    outer = (edges[:, :, None] * h[:, None, :]).reshape(h.shape[0], -1)
    return outer @ kernel + h @ bias
