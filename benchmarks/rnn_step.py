# Run: .venv/bin/python benchmarks/rnn_step.py [--quick]  (PyTorch column: torch==2.13.0)
"""Recurrent training steps (GRU and LSTM, Adam): nnfun vs naive raw JAX vs PyTorch eager.

The shape is the ``gru`` recipe of ``nnfun.models.mnist1d``: batch 128, 40 time
steps of 1 feature, a recurrent layer of width 128, every step's output
flattened into a 5120 -> 10 linear head, softmax cross-entropy, Adam. Both
cells are timed, each with the same contenders:

- ``raw JAX (naive)``: the cell written as its textbook step, ``x_t @ W + h @ U
  + b`` inside ``lax.scan``, params in a flat dict, an optax Adam step,
  ``jax.jit``.
- ``nnfun model + own step``: ``nf.RNN(nf.GRU(128))`` (or ``LSTM``) and
  ``nf.Dense`` in the same hand-written step (the layers alone).
- ``nnfun train_step``: ``nf.train_step`` on an ``nf.TrainState``.
- ``PyTorch eager``: ``torch.nn.GRU``/``LSTM`` (``batch_first``) and a linear
  head with ``torch.optim.Adam``, 2 threads, when ``import torch`` works.

Before timing, the nnfun model is checked to compute the raw forward pass when
given the same weights. Each contender is compiled/warmed up first; rounds then
run every contender ``inner`` steps, interleaved in an order rotated every
round; the table gives the median time per step and its ratio to raw JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps import jax_runner, measure, nnfun_runs, own_step, print_table, rounds_and_inner

import nnfun as nf

BATCH, LENGTH, FEATURES, HIDDEN, CLASSES = 128, 40, 1, 128, 10
LEARNING_RATE = 3e-3
CELLS = {"GRU": (nf.GRU, 3), "LSTM": (nf.LSTM, 4)}  # cell class, gate blocks


def nnfun_model(cell: str) -> nf.Sequential:
    layer = CELLS[cell][0](HIDDEN)
    return nf.Sequential({"rnn": nf.RNN(layer), "flatten": nf.Flatten(), "out": nf.Dense(CLASSES)})


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LENGTH, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(BATCH,)).astype(np.int32)
    return x, y


def raw_init(key, cell: str) -> dict:
    gates = CELLS[cell][1]
    k_in, k_rec, k_out = jax.random.split(key, 3)
    return {
        "w": jax.random.normal(k_in, (FEATURES, gates * HIDDEN)) / np.sqrt(FEATURES),
        "u": jax.random.normal(k_rec, (HIDDEN, gates * HIDDEN)) / np.sqrt(HIDDEN),
        "b": jnp.zeros(gates * HIDDEN),
        "b_u": jnp.zeros(gates * HIDDEN),  # GRU only: the bias inside the reset gate
        "w_out": jax.random.normal(k_out, (LENGTH * HIDDEN, CLASSES)) / np.sqrt(LENGTH * HIDDEN),
        "b_out": jnp.zeros(CLASSES),
    }


def raw_gru_step(p, h, x_t):
    xr, xz, xn = jnp.split(x_t @ p["w"] + p["b"], 3, axis=-1)
    hr, hz, hn = jnp.split(h @ p["u"] + p["b_u"], 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h = (1.0 - z) * n + z * h
    return h, h


def raw_lstm_step(p, carry, x_t):
    c, h = carry
    i, f, g, o = jnp.split(x_t @ p["w"] + h @ p["u"] + p["b"], 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


def raw_forward(params, x, cell: str):
    h = jnp.zeros((x.shape[0], HIDDEN))
    if cell == "GRU":
        carry, step = h, raw_gru_step
    else:
        carry, step = (h, h), raw_lstm_step
    _, ys = jax.lax.scan(lambda c, x_t: step(params, c, x_t), carry, x.swapaxes(0, 1))
    flat = ys.swapaxes(0, 1).reshape(x.shape[0], -1)
    return flat @ params["w_out"] + params["b_out"]


def raw_from_nnfun(params: dict, cell: str) -> dict:
    """The raw contender's weights taken from an nnfun model's params."""
    c = params["rnn"]["cell"]
    return {
        "w": c["input_kernel"],
        "u": c["recurrent_kernel"],
        "b": c["bias"],
        "b_u": c.get("recurrent_bias", jnp.zeros_like(c["bias"])),
        "w_out": params["out"]["kernel"],
        "b_out": params["out"]["bias"],
    }


def check_same_model(x, cell: str) -> None:
    model = nnfun_model(cell)
    params, state = model.init(jax.random.key(0), x)
    ours = model.apply(params, state, x)[0]
    raw = raw_forward(raw_from_nnfun(params, cell), x, cell)
    np.testing.assert_allclose(ours, raw, rtol=2e-5, atol=2e-5)


def contenders(x_np, y_np, cell: str) -> dict:
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    optimizer = optax.adam(LEARNING_RATE)
    runs = {}

    params = raw_init(jax.random.key(0), cell)
    raw_step = own_step(lambda p, xs: raw_forward(p, xs, cell), optimizer)
    runs["raw JAX (naive)"] = jax_runner(raw_step, (params, optimizer.init(params)), x, y)

    runs.update(nnfun_runs(nnfun_model(cell), optimizer, x, y, donate=True))
    torch_run = torch_runner(x_np, y_np, cell)
    if torch_run is not None:
        runs["PyTorch eager"] = torch_run
    return runs


def torch_runner(x_np, y_np, cell: str):
    try:
        import torch
    except ImportError:
        print("(PyTorch not installed: pip install torch==2.13.0 for its column)")
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rnn = {"GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}[cell](FEATURES, HIDDEN, batch_first=True)
    head = torch.nn.Linear(LENGTH * HIDDEN, CLASSES)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=LEARNING_RATE)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np.astype(np.int64))

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            ys, _ = rnn(x)
            loss = torch.nn.functional.cross_entropy(head(ys.flatten(1)), y)
            loss.backward()
            optimizer.step()

    return run


def main():
    rounds, inner = rounds_and_inner(__doc__.splitlines()[0], 9, 20, quick=(2, 3))
    x_np, y_np = make_data()
    for cell in CELLS:
        check_same_model(jnp.asarray(x_np), cell)
        medians = measure(contenders(x_np, y_np, cell), rounds, inner)
        title = (
            f"MNIST-1D {cell} train step (batch {BATCH}, {LENGTH} steps, width {HIDDEN}, "
            f"Adam); {jax.default_backend()}, median of {rounds} rounds x {inner} steps"
        )
        print_table(medians, "raw JAX (naive)", title)


if __name__ == "__main__":
    main()
