"""Data-parallel and sharded training on 8 host CPU devices; prints one JSON line.

Run by tests/test_parallel.py in a subprocess, because the device count must be set
before JAX starts:
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_parallel_worker.py
"""

import functools
import json
import os
import sys

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    sys.exit("set XLA_FLAGS=--xla_force_host_platform_device_count=8 first")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as PS

import nnfun as nf
from nnfun import parallel as P

jax.config.update("jax_numpy_rank_promotion", "raise")
MODEL = nf.Sequential([nf.Dense(16), jax.nn.relu, nf.Dense(8)])
OPTIMIZER = optax.adam(1e-2)
BATCH, FEATURES = 32, 8


def make_step():
    def step(ts, batch):
        def loss(params):
            logits, _ = MODEL.apply(params, {}, batch["x"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

        value, grads = jax.value_and_grad(loss)(ts["params"])
        updates, opt_state = OPTIMIZER.update(grads, ts["opt_state"], ts["params"])
        return {"params": optax.apply_updates(ts["params"], updates), "opt_state": opt_state}, {
            "loss": value
        }

    return step


def batches(n, dtype):
    rng = np.random.default_rng(0)
    for _ in range(n):
        x = rng.normal(size=(BATCH, FEATURES)).astype(dtype)
        yield {"x": x, "y": rng.integers(0, 8, size=(BATCH,)).astype(np.int32)}


def initial_state(dtype):
    params, _ = MODEL.init(jax.random.key(0), jnp.zeros((1, FEATURES)))
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    return {"params": params, "opt_state": OPTIMIZER.init(params)}


def train(n_steps, dtype, mesh=None, rules=None):
    """Params after each step: single-device jit when mesh is None, else data parallel."""
    ts, step = initial_state(dtype), make_step()
    if mesh is None:
        run, put = jax.jit(step), lambda b: b
    else:
        ts = P.place_state(ts, mesh, rules)
        run, put = (
            P.data_parallel_step(step, mesh, ts, rules=rules),
            lambda b: P.shard_batch(b, mesh),
        )
    history = []
    for batch in batches(n_steps, dtype):
        ts, _ = run(ts, put(batch))
        history.append(jax.tree.map(np.asarray, ts["params"]))
    return ts, history


def max_diffs(a, b):
    return [
        max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)))
        for pa, pb in zip(a, b)
    ]


def layout(tree):
    """Per parameter path: its spec and the shape of each addressable shard."""
    return {
        path: {
            "spec": str(leaf.sharding.spec),
            "shards": sorted({tuple(s.data.shape) for s in leaf.addressable_shards}),
            "devices": len(leaf.sharding.device_set),
        }
        for path, leaf in nf.flatten_params(tree).items()
    }


@functools.cache
def reference(n_steps, dtype):
    return train(n_steps, dtype)[1]


def compare(n_steps, dtype, mesh, rules=None):
    reference_history = reference(n_steps, dtype)
    ts, history = train(n_steps, dtype, mesh, rules)
    return {
        "diffs": max_diffs(reference_history, history),
        "params": layout(ts["params"]),
        "mu": layout(ts["opt_state"][0].mu),
    }


def attention_tensor_parallel(mesh):
    """nf.MultiHeadAttention with heads split over "model": layout, and training vs one device."""
    model = nf.Residual(nf.MultiHeadAttention(num_heads=4))
    rules = {  # Megatron: q/k/v columns (head-major) and out rows split by head
        "layer/out/kernel": PS("model"),
        "layer/out/bias": PS(),
        "layer/*/kernel": PS(None, "model"),
        "layer/*/bias": PS("model"),
    }
    x = np.random.default_rng(2).normal(size=(8, 5, 16)).astype(np.float32)
    # SGD, not Adam: the key bias gets an exactly-zero gradient (softmax ignores a shift
    # shared by all keys), and Adam's first step turns its rounding noise into +-lr.
    optimizer = optax.sgd(0.1)
    ts = nf.TrainState.create(model, optimizer, jax.random.key(0), x)
    step = nf.train_step(model, nf.mse, optimizer)
    batch = {"x": x, "y": np.zeros_like(x)}
    single, _ = jax.jit(step)(ts, batch)
    sharded = P.place_state(ts, mesh, rules)
    sharded, _ = P.data_parallel_step(step, mesh, sharded, rules=rules)(
        sharded, P.shard_batch(batch, mesh)
    )
    return {
        "layout": layout(sharded.params),
        "diff": max_diffs([single.params], [sharded.params])[0],
    }


def with_train_module(mesh):
    """nf.TrainState + nf.train_step (dropout: the key is replicated) and nf.fit(mesh=)."""
    model = nf.Sequential([nf.Dense(16), jax.nn.relu, nf.Dropout(0.25), nf.Dense(8)])
    step = nf.train_step(model, nf.softmax_cross_entropy, OPTIMIZER)
    batch_list = list(batches(3, np.float32))
    single = nf.TrainState.create(model, OPTIMIZER, jax.random.key(0), jnp.zeros((1, FEATURES)))
    sharded = P.place_state(single, mesh)
    run, reference = P.data_parallel_step(step, mesh, sharded), jax.jit(step)
    for batch in batch_list:
        single, _ = reference(single, batch)
        sharded, _ = run(sharded, P.shard_batch(batch, mesh))
    data = {k: np.concatenate([b[k] for b in batch_list]) for k in ("x", "y")}
    fits = [
        nf.fit(
            model,
            nf.softmax_cross_entropy,
            OPTIMIZER,
            data,
            steps=4,
            batch_size=BATCH,
            steps_per_call=2,
            progress=False,
            mesh=m,
        )[0]
        for m in (None, mesh)
    ]
    return {
        "step_diff": max_diffs([single.params], [sharded.params])[0],
        "fit_diff": max_diffs([fits[0].params], [fits[1].params])[0],
        "fit_spec": str(jax.tree.leaves(fits[1].params)[0].sharding.spec),
        "fit_devices": len(jax.tree.leaves(fits[1].params)[0].sharding.device_set),
    }


def main():
    data_mesh = P.make_mesh({"data": 8})
    two_d = P.make_mesh({"data": 4, "model": 2})
    params = initial_state(np.float32)["params"]
    megatron = {"0/kernel": PS(None, "model"), "0/bias": PS("model"), "2/kernel": PS("model")}
    batch = P.shard_batch(next(batches(1, np.float32)), data_mesh)
    result = {
        "devices": jax.device_count(),
        "replicated": compare(4, np.float32, data_mesh),
        "fsdp_rules": {k: str(v) for k, v in P.fsdp_rules(params, data_mesh).items()},
        "fsdp": compare(4, np.float32, data_mesh, P.fsdp_rules(params, data_mesh)),
        "tensor": compare(4, np.float32, two_d, megatron),
        "attention": attention_tensor_parallel(two_d),
        "batch": layout({"x": batch["x"]})["x"],
        "train_module": with_train_module(data_mesh),
    }
    with jax.enable_x64(True):
        result["x64"] = compare(30, np.float64, data_mesh)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
