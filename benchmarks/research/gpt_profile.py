# Run: .venv/bin/python benchmarks/research/gpt_profile.py [--steps 10] [--config small]
"""Where the time of nnfun's GPT training step goes, op by op (XLA:CPU).

Traces ``--steps`` compiled steps with ``jax.profiler``, reads the trace back with
``jax.profiler.ProfileData`` (no TensorBoard needed) and sums the time of each
HLO instruction of the step (the events of XLA's executor thread carry the
instruction names). Each instruction is put in a category from what it computes
(a fusion by the ops inside it): matrix products, softmax (``exp``/``log``:
attention and the loss), norms (``sqrt``), GELU (``tanh``), copies (only data
movement: slices, concatenations, transposes, copies), masks (``select``),
reductions, other element-wise; and in a phase from its ``op_name``: forward (``jvp``), backward
(``transpose(jvp)``), and the rest (the optimizer update, the loss's bookkeeping).
Beside it, the GEMM bound of ``benchmarks/_gemm.py``: the step's products, each
timed alone. The categories are a reading of the compiled program, not exact
(a fusion that mixes a norm's statistics with a residual add counts as a norm).
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.profiler import ProfileData

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _gemm import XlaGemms, products
from gpt_step import CONFIGS

import nnfun as nf
from nnfun.models.gpt import GPT

MOVES = {"slice", "bitcast", "copy", "transpose", "concatenate", "dynamic-slice", "parameter"}
MOVES |= {"dynamic-update-slice", "pad", "broadcast", "reshape", "constant", "tuple"}
MOVES |= {"get-tuple-element", "iota"}


def computations(hlo: str) -> dict[str, list[str]]:
    """Each computation's name -> the opcodes of its instructions."""
    found: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) ", line)
        if head and line.rstrip().endswith("{"):
            name = head.group(1)
            found[name] = []
        elif name and (op := re.search(r"= \S+(?:\{[^}]*\})? ([a-z-]+)\(", line)):
            found[name].append(op.group(1))
    return found


def categories(hlo: str) -> dict[str, tuple[str, str]]:
    """Each instruction of the entry computation -> (category, phase)."""
    comps = computations(hlo)
    entry = hlo[hlo.index("\nENTRY") :]
    table = {}
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?%(\S+) = .*? ([a-z-]+)\(", line)
        if not m:
            continue
        name, op = m.groups()
        called = re.search(r"calls=%(\S+?)[,\s]", line)
        ops = set(comps.get(called.group(1), [])) if called else {op}
        if "dot" in ops or ("custom-call" in ops and "matmul" in line):
            kind = "matrix products"
        elif ops & {"exponential", "log"}:
            kind = "softmax (attention, loss)"
        elif ops & {"sqrt", "rsqrt"}:
            kind = "norms (and Adam's sqrt)"
        elif "tanh" in ops:
            kind = "GELU"
        elif ops <= MOVES:
            kind = "copies, slices, concatenations"
        elif "select" in ops:
            kind = "masks (where), ReLU-like selects"
        elif "reduce" in ops:
            kind = "reductions (bias gradients, norm statistics)"
        else:
            kind = "other element-wise (residual adds, scaling)"
        op_name = re.search(r'op_name="([^"]*)"', line)
        where = op_name.group(1) if op_name else ""
        phase = "backward" if "transpose(jvp" in where else "forward" if "jvp(" in where else "rest"
        if kind == "norms (and Adam's sqrt)" and phase == "rest":
            kind = "optimizer update"
        table[name] = (kind, phase)
    return table


def trace_times(run, steps: int) -> dict[str, float]:
    """Thread-seconds per step of each instruction, from a jax.profiler trace of ``steps``
    steps: summed over XLA's threads, comparable with the process's CPU time."""
    folder = tempfile.mkdtemp()
    with jax.profiler.trace(folder):
        run(steps)
    path = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0]
    totals: dict[str, float] = defaultdict(float)
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):  # XLA's threads run the ops, in parallel
                continue
            for event in line.events:
                totals[event.name] += event.duration_ns / 1e9 / steps
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=12, help="list the slowest instructions")
    args = parser.parse_args()
    c = CONFIGS[args.config]
    model = GPT(c["vocab"], c["d_model"], c["heads"], c["layers"], c["seq"])
    opt = optax.adam(1e-3)
    rng = np.random.default_rng(0)
    batch = {k: jnp.asarray(rng.integers(0, c["vocab"], (c["batch"], c["seq"]))) for k in "xy"}
    box = [nf.TrainState.create(model, opt, jax.random.key(0), batch["x"])]
    plain = nf.train_step(model, nf.softmax_cross_entropy, opt)
    gemms = XlaGemms(products(plain, box[0], batch))
    step = jax.jit(plain, donate_argnums=0)
    table = categories(step.lower(box[0], batch).compile().as_text())

    def run(n):
        for _ in range(n):
            box[0], metrics = step(box[0], batch)
        metrics["loss"].block_until_ready()

    run(3)
    start = time.perf_counter()
    run(args.steps)
    wall = (time.perf_counter() - start) / args.steps
    per_op = trace_times(run, args.steps)
    bound = gemms.seconds(calls=5)[0]
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for name, seconds in per_op.items():
        if name in table:
            sums[table[name]] += seconds
    traced = sum(sums.values())
    print(f"## nnfun GPT step, {args.config} {c}: jax {jax.__version__}, {jax.default_backend()}")
    print(f"\nstep {wall * 1e3:.1f} ms (untraced); ops in the trace {traced * 1e3:.1f} ms; ")
    print(f"GEMM bound (the step's products, each timed alone): {bound * 1e3:.1f} ms\n")
    print("| category | forward ms | backward ms | rest ms | share of traced ops |")
    print("|---|---:|---:|---:|---:|")
    kinds = sorted({k for k, _ in sums}, key=lambda k: -sum(sums[k, p] for p in PHASES))
    for kind in kinds:
        row = [sums[kind, p] * 1e3 for p in PHASES]
        print(
            f"| {kind} | "
            + " | ".join(f"{v:.1f}" for v in row)
            + f" | {sum(row) / traced / 1e3:.0%} |"
        )
    print(f"\n| the {args.top} slowest instructions | ms | category, phase |\n|---|---:|---|")
    slowest = sorted((t, n) for n, t in per_op.items() if n in table)[::-1][: args.top]
    for seconds, name in slowest:
        print(f"| {name} | {seconds * 1e3:.1f} | {', '.join(table[name])} |")


PHASES = ("forward", "backward", "rest")

if __name__ == "__main__":
    main()
