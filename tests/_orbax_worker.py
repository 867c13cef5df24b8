"""One process of the multi-process checkpoint tests (tests/test_orbax_checkpoint.py).

    python tests/_orbax_worker.py train PORT PROCESS_ID DIR     2 processes x 2 devices
    python tests/_orbax_worker.py resume PORT PROCESS_ID DIR    2 processes x 2 devices
    python tests/_orbax_worker.py kill PORT PROCESS_ID DIR      2 processes x 2 devices
    python tests/_orbax_worker.py restore - - DIR               1 process x 4 devices

train: fit with the first kernel sharded over all 4 devices (FSDP-style), 6 steps with
checkpoints every 3 into DIR/a (uninterrupted), and 3 steps into DIR/b (interrupted).
resume: fit to 6 steps from DIR/b's checkpoint of step 3. kill: saves step 1, starts saving
step 2 and waits to be killed. restore: reads DIR/a onto 4 devices and onto 1. Results go
to DIR as .npz (arrays, compared bitwise) and .json (error messages).
"""

import json
import os
import signal
import sys
import time

MODE, PORT, PROCESS_ID, DIR = sys.argv[1:5]
DEVICES = "4" if MODE == "restore" else "2"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from nnfun import parallel as P  # noqa: E402

if MODE != "restore":
    P.initialize(f"127.0.0.1:{PORT}", 2, int(PROCESS_ID), initialization_timeout=60)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as PS  # noqa: E402

import nnfun as nf  # noqa: E402
from nnfun.checkpoint import CheckpointError, CheckpointManager  # noqa: E402

MODEL = nf.Sequential([nf.Dense(16), jax.nn.tanh, nf.Dense(3)])
RULES = {"0/kernel": PS(None, "data")}  # (5, 16): 4 columns on each of the 4 devices
STEPS, EVERY = 6, 3


def data():
    """This process's own rows (each process feeds its share of every global batch)."""
    rng = np.random.default_rng(10 + jax.process_index())
    x = rng.normal(size=(64, 5)).astype(np.float32)
    return {"x": x, "y": rng.integers(0, 3, size=(64,)).astype(np.int32)}


def train(directory, steps):
    mesh = P.make_mesh({"data": -1})
    ts, _ = nf.fit(
        MODEL,
        nf.softmax_cross_entropy,
        optax.adam(1e-2),
        data(),
        steps=steps,
        batch_size=8,
        progress=False,
        mesh=mesh,
        rules=RULES,
        checkpoint_dir=directory,
        checkpoint_every=EVERY,
    )
    return ts


def gathered(tree):
    return {
        k: np.asarray(v)
        for k, v in nf.flatten_params(multihost_utils.process_allgather(tree, tiled=True)).items()
    }


def save_results(name, arrays, messages=None):
    if jax.process_index() == 0:
        np.savez(os.path.join(DIR, f"{name}.npz"), **arrays)
        if messages is not None:
            with open(os.path.join(DIR, f"{name}.json"), "w") as f:
                json.dump(messages, f)


def message(fn):
    try:
        fn()
    except (CheckpointError, ImportError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def main_train():
    ts = train(os.path.join(DIR, "a"), STEPS)
    kernel = ts.params["0"]["kernel"]
    shards = sorted({tuple(s.data.shape) for s in kernel.addressable_shards})
    train(os.path.join(DIR, "b"), EVERY)  # the interrupted run: stops after its checkpoint
    # Orbax missing while arrays span processes: the error names the extra.
    sys.modules["orbax"] = sys.modules["orbax.checkpoint"] = None  # type: ignore[assignment]
    missing = message(lambda: CheckpointManager(os.path.join(DIR, "c")).save(0, ts))
    messages = {"orbax_missing": missing, "kernel_shards": [list(s) for s in shards]}
    save_results("uninterrupted", gathered(ts.params), messages)


def main_resume():
    ts = train(os.path.join(DIR, "b"), STEPS)
    # Without like, every process reads the whole checkpoint into host memory.
    host = CheckpointManager(os.path.join(DIR, "b")).restore()
    arrays = gathered(ts.params)
    arrays.update({f"host/{k}": v for k, v in nf.flatten_params(host["params"]).items()})
    save_results("resumed", arrays)


def big_tree(step):
    mesh = P.make_mesh({"data": -1})
    sharding = NamedSharding(mesh, PS("data"))
    # 128 MB over 4 devices: writing it takes long enough to be killed in the middle.
    rows = jnp.arange(8192, dtype=jnp.int32)[:, None]
    w = jax.jit(
        lambda: rows * 4096 + jnp.arange(4096, dtype=jnp.int32) + step, out_shardings=sharding
    )()
    return {"w": w, "step": step}


def main_kill():
    mgr = CheckpointManager(DIR, keep=3)
    mgr.save(1, big_tree(1))
    mgr.wait_until_finished()
    print("saved 1", flush=True)
    mgr.save(2, big_tree(2))
    print("saving 2", flush=True)  # the save returned: the shards are written in the background
    if jax.process_index() == 1:
        # Frozen mid-save (every thread), so that the test's SIGKILL surely lands before the
        # commit, however long a loaded machine takes to deliver it.
        os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(600)


def targets(like, mesh):
    """``like`` as ShapeDtypeStructs on ``mesh``: every ``0/kernel`` split like RULES."""

    def target(path, leaf):
        name = nf.checkpoint.leaf_name(path)
        spec = RULES["0/kernel"] if name.endswith("0/kernel") else PS()
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(target, like)


def main_restore():
    mgr = CheckpointManager(os.path.join(DIR, "a"))
    like = nf.TrainState.create(MODEL, optax.adam(1e-2), jax.random.key(0), jnp.zeros((1, 5)))
    mesh = P.make_mesh({"data": 4})
    on_mesh = mgr.restore(like=P.place_state(like, mesh, RULES))
    kernel_spec = str(on_mesh.params["0"]["kernel"].sharding.spec)
    on_one = mgr.restore(like=jax.device_put(like, jax.devices()[0]))
    # A mesh of 3 devices cannot split the (5, 16) kernel's 16 columns (place_state would
    # refuse such a layout itself, so the target is written as ShapeDtypeStructs).
    too_small = message(lambda: mgr.restore(like=targets(like, P.make_mesh({"data": 3}))))
    no_sharding = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)
    no_target = message(lambda: mgr.restore(like=no_sharding))
    nf.checkpoint.orbax_to_safetensors(mgr.path(STEPS), os.path.join(DIR, "a.safetensors"))
    arrays = {f"mesh/{k}": np.asarray(v) for k, v in nf.flatten_params(on_mesh.params).items()}
    arrays.update({f"one/{k}": np.asarray(v) for k, v in nf.flatten_params(on_one.params).items()})
    messages = {
        "kernel_spec": kernel_spec,
        "too_small": too_small,
        "no_target": no_target,
        "steps": [int(on_mesh.step), int(on_one.step)],
    }
    save_results("restored", arrays, messages)


if __name__ == "__main__":
    {"train": main_train, "resume": main_resume, "kill": main_kill, "restore": main_restore}[MODE]()
    if MODE != "restore":
        jax.distributed.shutdown()
