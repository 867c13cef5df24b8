# Run: .venv/bin/python benchmarks/cnn_step.py [--quick]  (PyTorch column: torch==2.13.0)
"""One training step of the MNIST-1D paper's CNN (Adam, batch 100): nnfun vs raw JAX vs PyTorch.

Contenders, all on the same shapes (input ``(100, 40, 1)``, three stride-2
convolutions of 25 channels, kernels 5/3/3, a 125 -> 10 linear head):

- ``raw JAX``: a hand-written forward pass with ``lax.conv_general_dilated``,
  params in a flat dict, an optax Adam step, ``jax.jit``.
- ``nnfun model + own step``: the same network as ``nf.Conv``/``nf.Dense`` layers
  (the ``cnn`` recipe of ``nnfun.models.mnist1d`` without its dropout), its
  ``apply`` in the same hand-written step (measures the layers alone).
- ``nnfun train_step``: ``nf.train_step`` on an ``nf.TrainState`` (the layers
  plus our step: metrics, per-step key folding, the state pytree).
- ``PyTorch eager``: the same network as ``torch.nn`` modules and
  ``torch.optim.Adam``, 2 threads, when ``import torch`` works.

Each contender is compiled/warmed up first; then rounds run every contender once
each (interleaved, so machine noise hits all alike, in an order rotated every
round), a round being ``inner`` consecutive steps; the table shows the median
time per step and its ratio to raw JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps import jax_runner, measure, nnfun_runs, own_step, print_table, rounds_and_inner

import nnfun as nf

BATCH, LENGTH, CHANNELS, CLASSES = 100, 40, 25, 10
CONVS = ((5, 1), (3, CHANNELS), (3, CHANNELS))  # (kernel, input channels)
LEARNING_RATE = 1e-3


def nnfun_model() -> nf.Sequential:
    """The paper's CNN in nnfun layers (the ``cnn`` recipe without its dropout)."""
    layers = {}
    for i, (kernel, _) in enumerate(CONVS):
        layers[f"conv{i + 1}"] = nf.Conv(CHANNELS, (kernel,), strides=2, padding=((1, 1),))
        layers[f"relu{i + 1}"] = jax.nn.relu
    return nf.Sequential({**layers, "flatten": nf.Flatten(), "out": nf.Dense(CLASSES)})


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LENGTH, 1)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(BATCH,)).astype(np.int32)
    return x, y


def raw_init(key):
    keys = jax.random.split(key, len(CONVS) + 1)
    params = {}
    for i, ((kernel, cin), k) in enumerate(zip(CONVS, keys)):
        scale = 1.0 / np.sqrt(kernel * cin)
        params[f"w{i}"] = scale * jax.random.normal(k, (kernel, cin, CHANNELS))
        params[f"b{i}"] = jnp.zeros((CHANNELS,))
    params["w_out"] = jax.random.normal(keys[-1], (5 * CHANNELS, CLASSES)) / np.sqrt(125)
    params["b_out"] = jnp.zeros((CLASSES,))
    return params


def raw_forward(params, x):
    h = x
    for i in range(len(CONVS)):
        h = jax.lax.conv_general_dilated(
            h, params[f"w{i}"], (2,), ((1, 1),), dimension_numbers=("NWC", "WIO", "NWC")
        )
        h = jax.nn.relu(h + params[f"b{i}"][None, None, :])
    h = h.reshape(h.shape[0], -1)
    return h @ params["w_out"] + params["b_out"][None, :]


def contenders(x_np, y_np):
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    optimizer = optax.adam(LEARNING_RATE)
    runs = {}

    params = raw_init(jax.random.key(0))
    runs["raw JAX"] = jax_runner(
        own_step(raw_forward, optimizer), (params, optimizer.init(params)), x, y
    )

    runs.update(nnfun_runs(nnfun_model(), optimizer, x, y))
    torch_run = torch_runner(x_np, y_np)
    if torch_run is not None:
        runs["PyTorch eager"] = torch_run
    return runs


def torch_runner(x_np, y_np):
    try:
        import torch
    except ImportError:
        print("(PyTorch not installed: pip install torch==2.13.0 for its column)")
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    layers = []
    for kernel, cin in CONVS:
        layers += [torch.nn.Conv1d(cin, CHANNELS, kernel, stride=2, padding=1), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(125, CLASSES))
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    # PyTorch convolutions are channels-first: (batch, channels, length).
    x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 2, 1)))
    y = torch.from_numpy(y_np.astype(np.int64))

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()

    return run


def check_same_model(x_np, y_np):
    """The nnfun model computes the raw forward pass when given the same weights."""
    model = nnfun_model()
    params, state = model.init(jax.random.key(0), jnp.asarray(x_np))
    raw = {}
    for i, name in enumerate(("conv1", "conv2", "conv3")):
        raw[f"w{i}"], raw[f"b{i}"] = params[name]["kernel"], params[name]["bias"]
    raw["w_out"], raw["b_out"] = params["out"]["kernel"], params["out"]["bias"]
    ours = model.apply(params, state, jnp.asarray(x_np))[0]
    np.testing.assert_allclose(ours, raw_forward(raw, jnp.asarray(x_np)), rtol=1e-5, atol=1e-5)


def main():
    rounds, inner = rounds_and_inner(__doc__.splitlines()[0], 15, 50, quick=(3, 5))
    x_np, y_np = make_data()
    check_same_model(x_np, y_np)
    medians = measure(contenders(x_np, y_np), rounds, inner)
    title = (
        f"MNIST-1D CNN train step, batch {BATCH}, Adam; {jax.default_backend()}, "
        f"median of {rounds} rounds x {inner} steps"
    )
    print_table(medians, "raw JAX", title)


if __name__ == "__main__":
    main()
