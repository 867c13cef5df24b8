"""One process of a two-process data-parallel run on loopback, or its single-process twin.

Run by tests/test_distributed.py:
    python tests/_dist_worker.py multi PORT PROCESS_ID OUT.json   (2 processes x 2 devices)
    python tests/_dist_worker.py single - - OUT.json               (1 process x 4 devices)
    python tests/_dist_worker.py lonely PORT 0 -                   (num_processes=2, only 1 starts)
Each writes the final params (float64, flattened) as JSON.
"""

import json
import os
import sys

MODE, PORT, PROCESS_ID, OUT = sys.argv[1:5]
DEVICES = "4" if MODE == "single" else "2"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_enable_x64", True)

from nnfun import parallel as P  # noqa: E402

if MODE != "single":
    timeout = 5 if MODE == "lonely" else 60
    P.initialize(f"127.0.0.1:{PORT}", 2, int(PROCESS_ID), initialization_timeout=timeout)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import PartitionSpec as PS  # noqa: E402

import nnfun as nf  # noqa: E402

MODEL = nf.Sequential([nf.Dense(16), jax.nn.tanh, nf.Dense(3)])
OPTIMIZER = optax.adam(1e-2)
STEPS, BATCH = 20, 16


def step(ts, batch):
    def loss(params):
        logits, _ = MODEL.apply(params, {}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    value, grads = jax.value_and_grad(loss)(ts["params"])
    updates, opt_state = OPTIMIZER.update(grads, ts["opt_state"], ts["params"])
    return {"params": optax.apply_updates(ts["params"], updates), "opt_state": opt_state}, value


def global_batches():
    rng = np.random.default_rng(1)
    for _ in range(STEPS):
        yield {"x": rng.normal(size=(BATCH, 5)), "y": rng.integers(0, 3, size=(BATCH,))}


def local_share(batch):
    """This process's rows: the global batch split evenly in process order."""
    n, i = jax.process_count(), jax.process_index()
    return jax.tree.map(lambda a: a[i * len(a) // n : (i + 1) * len(a) // n], batch)


def train(mesh, rules):
    params, _ = MODEL.init(jax.random.key(0), jnp.zeros((1, 5), jnp.float64))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    ts = P.place_state({"params": params, "opt_state": OPTIMIZER.init(params)}, mesh, rules)
    run = P.data_parallel_step(step, mesh, ts, rules=rules)
    for batch in global_batches():
        ts, loss = run(ts, P.shard_batch(local_share(batch), mesh))
        loss.block_until_ready()  # XLA:CPU collectives deadlock with many steps queued
    return ts, loss


def main():
    mesh = P.make_mesh({"data": -1})
    ts, loss = train(mesh, None)
    # Replicated params: every process holds a full copy on its local devices.
    flat = {
        path: np.asarray(leaf.addressable_data(0)).tolist()
        for path, leaf in nf.flatten_params(ts["params"]).items()
    }
    # FSDP: each process holds half of each kernel; gather the whole for the comparison.
    sharded, _ = train(mesh, {"0/kernel": PS(None, "data")})
    kernel = sharded["params"]["0"]["kernel"]
    gathered = multihost_utils.process_allgather(sharded["params"], tiled=True)
    result = {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "loss": float(np.asarray(loss.addressable_data(0))),
        "params": flat,
        "fsdp_params": {k: np.asarray(v).tolist() for k, v in nf.flatten_params(gathered).items()},
        "fsdp_local_shards": [list(s.data.shape) for s in kernel.addressable_shards],
    }
    with open(OUT, "w") as f:
        json.dump(result, f)
    if MODE != "single":
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
