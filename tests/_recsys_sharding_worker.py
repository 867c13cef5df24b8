"""Row-sharded embedding tables on 8 host CPU devices; prints one JSON line.

Run by tests/test_recsys_sharding.py in a subprocess, because the device count
must be set before JAX starts:
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_recsys_sharding_worker.py
"""

import json
import os
import re
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
from nnfun.models.recsys import MatrixFactorization

jax.config.update("jax_numpy_rank_promotion", "raise")
RULES = {"**/embedding": PS("model")}
OPTIMIZER = optax.adam(1e-2)


def step_fn(model, target):
    def step(ts, x):
        def loss(params):
            y, _ = model.apply(params, {}, x)
            return jnp.mean(jnp.square(y - target))

        grads = jax.grad(loss)(ts["params"])
        updates, opt_state = OPTIMIZER.update(grads, ts["opt_state"], ts["params"])
        return {"params": optax.apply_updates(ts["params"], updates), "opt_state": opt_state}

    return step


def run(model, x, target, mesh, steps=3):
    """Max difference between sharded and single-device training, and what the shards hold."""
    params, _ = model.init(jax.random.key(0), x)
    ts = {"params": params, "opt_state": OPTIMIZER.init(params)}
    step = jax.jit(step_fn(model, target))
    placed = P.place_state(ts, mesh, RULES)
    hlo = step.lower(placed, x).compile().as_text()
    single, sharded = ts, placed
    for _ in range(steps):
        single, sharded = step(single, x), step(sharded, x)
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), single, sharded)
    tables = {
        path: {
            "spec": str(leaf.sharding.spec),
            "shard_rows": sorted({s.data.shape[0] for s in leaf.addressable_shards}),
            "rows": leaf.shape[0],
        }
        for path, leaf in nf.flatten_params(sharded["params"]).items()
        if path.endswith("embedding")
    }
    y_single, _ = model.apply(single["params"], {}, x)
    y_sharded, _ = jax.jit(model.apply)(sharded["params"], {}, x)
    return {
        "max_diff": max(jax.tree.leaves(diffs)),
        "forward_diff": float(jnp.max(jnp.abs(y_single - y_sharded))),
        "tables": tables,
        "all_gathers": len(re.findall(r"all-gather(-start)?\(", hlo)),
        "collective_shapes": re.findall(r"= (\S+) all-reduce(?:-start)?\(", hlo),
    }


def main():
    mesh = P.make_mesh({"model": 8})
    rng = np.random.default_rng(0)
    bag = nf.Sequential({"bag": nf.EmbeddingBag(1024, 16, combiner="mean"), "out": nf.Dense(1)})
    ids = rng.integers(0, 1024, (32, 5)).astype(np.int32)
    x_bag = {"inputs": jnp.asarray(ids), "lengths": jnp.asarray(rng.integers(0, 6, 32), jnp.int32)}
    mf = MatrixFactorization(64, 96, features=8, mean_rating=3.0)
    x_mf = {
        "user": jnp.asarray(rng.integers(0, 64, 32)),
        "item": jnp.asarray(rng.integers(0, 96, 32)),
    }
    out = {
        "devices": jax.device_count(),
        "bag": run(bag, x_bag, jnp.asarray(rng.normal(size=(32, 1)), jnp.float32), mesh),
        "mf": run(mf, x_mf, jnp.asarray(rng.uniform(1, 5, 32), jnp.float32), mesh),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
