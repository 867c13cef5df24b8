# Run: .venv/bin/python benchmarks/checkpoint_save.py [--quick]
"""How long a checkpoint save holds up training: safetensors, nnfun's Orbax path, raw Orbax.

One process, a train-state-like tree of float32 arrays (128 MB; 32 MB with
``--quick``) on the CPU device. Three contenders save it ``--rounds`` times each,
interleaved:

- ``safetensors``: ``CheckpointManager`` in one process (the default there):
  synchronous, so the save's whole time is time training waits.
- ``nnfun orbax``: ``CheckpointManager(format="orbax")``, the path taken when
  arrays span processes: ``save`` returns once the arrays are in host memory
  and the write and commit run in a background thread.
- ``raw orbax``: ``ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler())``
  written by hand on the same tree (what nnfun's path costs over Orbax itself).

For each: "blocks" is the time ``save`` took to return (what a training loop
loses), "committed" the time until the checkpoint is on disk under its final
name (``wait_until_finished``). The first save of each contender is dropped
(Orbax builds its thread and handlers then). Medians and ranges over rounds; the
machine's 2 cores are shared, so read the ranges.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_tree(megabytes: int):
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), 4)
    rows = megabytes * 2**20 // 4 // 4 // 1024  # four float32 arrays of (rows, 1024)
    shapes = {"params/a": (rows, 1024), "params/b": (rows, 1024)}
    shapes |= {"opt/mu": (rows, 1024), "opt/nu": (rows, 1024)}
    return {
        name: jax.random.normal(k, shape, jnp.float32)
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }


class Nnfun:
    def __init__(self, fmt: str):
        from nnfun.checkpoint import CheckpointManager

        self.manager = CheckpointManager(tempfile.mkdtemp(), keep=2, format=fmt)

    def save(self, step, tree):
        self.manager.save(step, tree)

    def wait(self):
        self.manager.wait_until_finished()


class RawOrbax:
    def __init__(self):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.directory = tempfile.mkdtemp()
        self.checkpointer = ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler())

    def save(self, step, tree):
        path = os.path.join(self.directory, str(step))
        self.checkpointer.save(path, args=self.ocp.args.StandardSave(tree))

    def wait(self):
        self.checkpointer.wait_until_finished()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    megabytes = 32 if args.quick else 128
    tree = make_tree(megabytes)
    contenders = {
        "safetensors": Nnfun("auto"),
        "nnfun orbax": Nnfun("orbax"),
        "raw orbax": RawOrbax(),
    }
    times = {name: {"blocks": [], "committed": []} for name in contenders}
    for step in range(args.rounds + 1):
        for name, contender in contenders.items():
            start = time.perf_counter()
            contender.save(step, tree)
            returned = time.perf_counter()
            contender.wait()
            done = time.perf_counter()
            if step:  # the first save sets Orbax up
                times[name]["blocks"].append(1e3 * (returned - start))
                times[name]["committed"].append(1e3 * (done - start))
    print(f"{megabytes} MB tree, {args.rounds} rounds, {cpu_name()}, {os.cpu_count()} cores")
    print(f"{'contender':<14}{'blocks (ms)':>24}{'committed (ms)':>26}")
    for name, row in times.items():
        cells = [
            f"{statistics.median(v):7.0f} ({min(v):.0f}-{max(v):.0f})"
            for v in (row["blocks"], row["committed"])
        ]
        print(f"{name:<14}{cells[0]:>24}{cells[1]:>26}")


if __name__ == "__main__":
    main()
