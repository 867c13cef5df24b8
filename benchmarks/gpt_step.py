# Run: .venv/bin/python benchmarks/gpt_step.py [--quick]   (ms per GPT training step)
"""The GPT training step: nnfun vs a naive hand-written raw-JAX GPT vs PyTorch eager.

Same architecture everywhere: token + learned position embeddings, pre-norm
blocks (causal multi-head attention, GELU MLP of width 4d), final LayerNorm,
output tied to the token embedding, mean cross-entropy, Adam (lr 1e-3). Each
contender is warmed up (compiled) first, then timed in interleaved rounds (each
round runs every contender for ``--steps`` steps); the table gives the median
ms/step and the ratio to raw JAX. PyTorch runs only if ``import torch`` works,
with 2 threads. One nnfun contender runs ``--steps`` optimizer steps per
compiled call (``nnfun.train.scan_steps``, what ``fit(steps_per_call=K)``
does): XLA:CPU then allocates its scratch buffer once per call instead of once
per step.

Against the machine's own limit: the script lists each JAX step's matrix
products (``benchmarks/_gemm.py``: every ``dot_general`` of its jaxpr, by shape
and layout), times each product alone on the backend, and sums them: the
GEMM-bound time, what the step would take if it did nothing but its products at
the speed the backend reaches on those shapes. PyTorch's bound times the same
products (the naive JAX step's, the same network) with ``torch.einsum``. The
bound is measured in every round, interleaved with the steps, and the table
gives each contender's step time over its bound (median, and the range over
rounds). bfloat16 rows: nnfun's GPT in ``nf.MixedPrecision`` (float32 params,
bfloat16 compute) against the PyTorch model under ``torch.autocast("cpu",
torch.bfloat16)``. Model FLOPs utilisation (MFU) counts the naive step's
product FLOPs (full attention, the usual convention) per second, against the
throughput of one large square product measured here and, on a GPU or TPU whose
peak is known (``PEAK_TFLOPS``), against that.

By default the whole comparison runs twice, each time in a fresh process: once
as a process starts, and once with ``NNFUN_RETAIN_HOST_MEMORY=1``, this script's
switch for calling :func:`nnfun.host_memory.retain_host_memory` before any JAX
computation (freed host memory stays in the process, so XLA:CPU stops mapping
and zeroing fresh pages for its scratch buffer at every step; ``import nnfun``
itself reads no environment variable). The setting is process-wide, so within
one run it applies to every contender alike, PyTorch included.
``--host-memory this`` runs once, in this process, with whatever the
environment says.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _gemm import TorchGemms, XlaGemms, products, square, total_flops

import nnfun as nf
from nnfun.host_memory import retain_host_memory
from nnfun.models.gpt import GPT
from nnfun.train import TrainState, scan_steps, softmax_cross_entropy, train_step

CONFIGS = {
    "small": dict(d_model=128, heads=4, layers=4, seq=128, batch=16, vocab=96),
    "large": dict(d_model=256, heads=4, layers=6, seq=128, batch=16, vocab=96),
    # A smoke run (benchmarks/accelerator.sh --quick): checks the script, measures nothing.
    "tiny": dict(d_model=32, heads=2, layers=1, seq=16, batch=2, vocab=16),
    # Large enough to fill a GPU (issue 21's MFU target); run only on an accelerator.
    "gpu": dict(d_model=1024, heads=16, layers=12, seq=1024, batch=8, vocab=32768),
}
# Dense bfloat16 peak of accelerators (vendor data sheets), by jax device_kind prefix.
PEAK_TFLOPS = {
    "NVIDIA H200": 989.0,
    "NVIDIA H100": 989.0,
    "NVIDIA A100": 312.0,
    "NVIDIA L4": 121.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,
    "TPU v5": 459.0,
}
BF16 = nf.Policy("float32", "bfloat16", "float32")
SQUARE = 4096 if jax.default_backend() != "cpu" else 1024  # the peak's product size


def raw_init(key, c):
    """Params of the hand-written GPT: a dict per block in a Python list."""
    d, keys = c["d_model"], iter(jax.random.split(key, 4 + 8 * c["layers"]))

    def normal(shape, std=0.02):
        return std * jax.random.normal(next(keys), shape)

    def block():
        return {
            "ln1": (jnp.ones(d), jnp.zeros(d)),
            "qkv": (normal((d, 3 * d)), jnp.zeros(3 * d)),
            "proj": (normal((d, d)), jnp.zeros(d)),
            "ln2": (jnp.ones(d), jnp.zeros(d)),
            "fc": (normal((d, 4 * d)), jnp.zeros(4 * d)),
            "out": (normal((4 * d, d)), jnp.zeros(d)),
        }

    return {
        "tok": normal((c["vocab"], d)),
        "pos": normal((c["seq"], d)),
        "blocks": [block() for _ in range(c["layers"])],
        "ln_f": (jnp.ones(d), jnp.zeros(d)),
    }


def raw_layer_norm(x, p, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p[0] + p[1]


def raw_attention(x, p, heads):
    b, t, d = x.shape
    q, k, v = jnp.split(x @ p["qkv"][0] + p["qkv"][1], 3, axis=-1)
    q, k, v = (a.reshape(b, t, heads, d // heads) for a in (q, k, v))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads)
    logits = jnp.where(jnp.tril(jnp.ones((t, t), bool)), logits, -1e9)
    y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v).reshape(b, t, d)
    return y @ p["proj"][0] + p["proj"][1]


def raw_forward(params, ids, heads):
    x = params["tok"][ids] + params["pos"][: ids.shape[1]]
    for p in params["blocks"]:
        x = x + raw_attention(raw_layer_norm(x, p["ln1"]), p, heads)
        h = jax.nn.gelu(raw_layer_norm(x, p["ln2"]) @ p["fc"][0] + p["fc"][1])
        x = x + h @ p["out"][0] + p["out"][1]
    return raw_layer_norm(x, params["ln_f"]) @ params["tok"].T


def raw_step_fn(c, opt):
    def loss(params, batch):
        logits = raw_forward(params, batch["x"], c["heads"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1))


def make_raw(c, batch):
    opt = optax.adam(1e-3)
    params = raw_init(jax.random.key(0), c)
    state = [params, opt.init(params)]
    step = raw_step_fn(c, opt)
    counts = products(step, *state, batch)

    def run(n):
        for _ in range(n):
            state[0], state[1], loss = step(state[0], state[1], batch)
        loss.block_until_ready()

    return run, counts


def nnfun_model(c, stacked=True, unroll=None):
    return GPT(
        vocab_size=c["vocab"],
        d_model=c["d_model"],
        num_heads=c["heads"],
        num_layers=c["layers"],
        max_length=c["seq"],
        stacked=stacked,
        unroll=unroll,
    )


def make_nnfun(c, batch, stacked=True, unroll=None, steps_per_call=1, bf16=False):
    model, opt = nnfun_model(c, stacked, unroll), optax.adam(1e-3)
    model = nf.MixedPrecision(model, BF16) if bf16 else model
    ts = [TrainState.create(model, opt, jax.random.key(0), batch["x"])]
    step = train_step(model, softmax_cross_entropy, opt)
    counts = products(step, ts[0], batch)
    if steps_per_call == 1:
        step = jax.jit(step, donate_argnums=0)
    else:  # one compiled call runs K steps (what fit(steps_per_call=K) does)
        step = jax.jit(scan_steps(step), donate_argnums=0)
        batch = jax.tree.map(lambda a: jnp.stack([a] * steps_per_call), batch)

    def run(n):
        if n % steps_per_call:
            raise ValueError(f"{n} steps are not a multiple of {steps_per_call} per call")
        for _ in range(n // steps_per_call):
            ts[0], metrics = step(ts[0], batch)
        metrics["loss"].block_until_ready()

    return run, counts


def make_fit(c, batch, steps_per_call):
    """``nf.fit`` end to end (NaN guard, host reads, one call late) on the same batch
    repeated: ``steps_per_call="auto"`` (the default since issue 20) or 1 (before)."""
    model, opt = nnfun_model(c), optax.adam(1e-3)
    ts = [TrainState.create(model, opt, jax.random.key(0), batch["x"])]
    host = jax.device_get(batch)

    def run(n):
        ts[0], _ = nf.fit(model, softmax_cross_entropy, opt, itertools.repeat(host),
                          steps=int(ts[0].step) + n, train_state=ts[0],
                          steps_per_call=steps_per_call, progress=False)  # fmt: skip
        jax.block_until_ready(ts[0])

    return run


def torch_gpt(torch, c):
    """The same GPT as an idiomatic PyTorch module (torch is imported only if present)."""
    nn, functional = torch.nn, torch.nn.functional
    d, heads = c["d_model"], c["heads"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
            q, k, v = (a.view(b, t, heads, d // heads).transpose(1, 2) for a in (q, k, v))
            y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.out(functional.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(c["vocab"], d), nn.Embedding(c["seq"], d)
            self.blocks = nn.ModuleList(Block() for _ in range(c["layers"]))
            self.ln_f = nn.LayerNorm(d)

        def forward(self, ids):
            x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))[None]
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.tok.weight.T

    return Model()


def make_torch(torch, c, batch, bf16=False):
    if jax.default_backend() == "cpu":
        torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torch_gpt(torch, c)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(np.array(batch["x"])).long()
    y = torch.from_numpy(np.array(batch["y"])).long()

    def run(n):
        for _ in range(n):
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, c["vocab"]), y.reshape(-1)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def contenders(c, batch, steps, bf16, torch_rows=True):
    """``{name: (run, gemm key)}`` and ``{gemm key: GEMM-bound timer}``."""
    raw, raw_counts = make_raw(c, batch)
    nnfun, counts = make_nnfun(c, batch)
    runs = {
        "raw JAX (naive)": (raw, "XLA, raw JAX's products"),
        "nnfun GPT (default: Stack unrolled)": (nnfun, "XLA, nnfun's products"),
    }
    gemms = {
        "XLA, raw JAX's products": XlaGemms(raw_counts),
        "XLA, nnfun's products": XlaGemms(counts),
        "float32": XlaGemms(square(SQUARE, "float32")),  # the measured peak, for the MFU
    }
    if c in (CONFIGS["small"], CONFIGS["large"]):  # the layouts of the Stack, and scan_steps
        runs["nnfun GPT(unroll=1) (Stack as a loop)"] = (
            make_nnfun(c, batch, unroll=1)[0],
            "XLA, nnfun's products",
        )
        runs["nnfun GPT(stacked=False) (Sequential)"] = (
            make_nnfun(c, batch, stacked=False)[0],
            "XLA, nnfun's products",
        )
        runs[f"nnfun GPT, {steps} steps per call (scan_steps)"] = (
            make_nnfun(c, batch, steps_per_call=steps)[0],
            "XLA, nnfun's products",
        )
    if c == CONFIGS["small"]:  # fit's default against its old default, end to end
        runs['nf.fit, steps_per_call="auto" (default)'] = (
            make_fit(c, batch, "auto"),
            "XLA, nnfun's products",
        )
        runs["nf.fit, steps_per_call=1 (old default)"] = (
            make_fit(c, batch, 1),
            "XLA, nnfun's products",
        )
    if bf16:
        run, counts = make_nnfun(c, batch, bf16=True)
        runs["nnfun GPT bfloat16 (MixedPrecision)"] = (run, "XLA bfloat16, nnfun's products")
        gemms["XLA bfloat16, nnfun's products"] = XlaGemms(counts)
        gemms["bfloat16"] = XlaGemms(square(SQUARE, "bfloat16"))
    try:
        if not torch_rows:
            raise ImportError("--no-torch")
        import torch
    except ImportError:
        return runs, gemms, raw_counts
    if jax.default_backend() != "cpu":  # the PyTorch rows compare CPU steps
        return runs, gemms, raw_counts
    runs["PyTorch eager"] = (make_torch(torch, c, batch), "torch, raw JAX's products")
    gemms["torch, raw JAX's products"] = TorchGemms(torch, raw_counts)
    if bf16:
        runs["PyTorch eager, autocast(bfloat16)"] = (
            make_torch(torch, c, batch, bf16=True),
            "torch bfloat16, raw JAX's products",
        )
        gemms["torch bfloat16, raw JAX's products"] = TorchGemms(torch, raw_counts, torch.bfloat16)
    return runs, gemms, raw_counts


def bench(c, rounds: int, steps: int, bf16: bool, torch_rows: bool = True):
    """Per contender: lists over rounds of (wall ms, CPU ms) per step; per GEMM bound: list of
    ms; the model FLOPs of one step; page faults per step."""
    rng = np.random.default_rng(0)
    batch = {
        k: jnp.asarray(rng.integers(0, c["vocab"], (c["batch"], c["seq"]), dtype=np.int32))
        for k in "xy"
    }
    runs, gemms, model_counts = contenders(c, batch, steps, bf16, torch_rows)
    for run, _ in runs.values():
        run(steps)  # compile and warm up
    for gemm in gemms.values():
        gemm.seconds(1)
    times = {name: [] for name in runs}
    bounds = {name: [] for name in gemms}
    names = list(runs) + list(gemms)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for r in range(rounds):
        # Rotate the order: torch's threads spin on after its step and slow whoever runs next.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name in gemms:
                bounds[name].append(gemms[name].seconds(calls=2) * 1000)  # (wall, CPU) ms
                continue
            start, cpu = time.perf_counter(), time.process_time()
            runs[name][0](steps)
            # CPU time of all threads: counts work done, barely moved by other load.
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            times[name].append((wall / steps * 1000, cpu / steps * 1000))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    per_step = faults / (rounds * steps * len(runs))
    keys = {name: key for name, (_, key) in runs.items()}
    return times, keys, bounds, total_flops(model_counts), per_step


def sheet_peak() -> float | None:
    """The data-sheet bfloat16 peak FLOP/s of the device, if ``PEAK_TFLOPS`` knows it."""
    kind = jax.devices()[0].device_kind
    known = [tf for name, tf in PEAK_TFLOPS.items() if kind.startswith(name)]
    return known[0] * 1e12 if known else None


def report(name, c, rounds, steps, bf16, torch_rows=True):
    times, keys, bounds, model_flops, faults = bench(c, rounds, steps, bf16, torch_rows)
    print(f"\n### {name}: {c}; {faults:.0f} page faults per step", flush=True)
    print(
        f"model FLOPs per step (the naive step's products): {model_flops / 1e9:.2f} G. "
        "Ratios to the GEMM bound and MFU: median over rounds of the wall-clock ratio "
        "(of the CPU-time ratio), then the range of the wall-clock ratio.\n"
    )
    print(
        "| contender | ms/step | CPU ms/step | vs raw JAX: wall (CPU) | GEMM-bound ms "
        "| step / GEMM bound | MFU vs measured peak | MFU vs data sheet |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    wall0, cpu0 = np.median(np.array(times["raw JAX (naive)"]), axis=0)
    square_flops = 2 * SQUARE**3
    sheet = sheet_peak()
    for contender, rows in times.items():
        step = np.array(rows)  # (rounds, 2): wall, CPU ms
        bound = np.array(bounds[keys[contender]])
        ratio = step / bound
        peak = square_flops / np.array(bounds["bfloat16" if "bfloat16" in contender else "float32"])
        mfu = model_flops / step / peak
        wall, cpu = np.median(step, axis=0)
        mfu_sheet = f"{model_flops / (wall / 1000) / sheet:.1%}" if sheet else "n/a"
        print(
            f"| {contender} | {wall:.1f} | {cpu:.1f} | {wall / wall0:.2f}x ({cpu / cpu0:.2f}x) "
            f"| {np.median(bound[:, 0]):.1f} | {np.median(ratio[:, 0]):.2f}x "
            f"({np.median(ratio[:, 1]):.2f}x), {ratio[:, 0].min():.2f}-{ratio[:, 0].max():.2f} "
            f"| {np.median(mfu[:, 0]):.0%} ({np.median(mfu[:, 1]):.0%}) | {mfu_sheet} |",
            flush=True,
        )
    for dtype in ("float32", "bfloat16"):
        if dtype in bounds:
            wall, cpu = np.median(np.array(bounds[dtype]), axis=0)
            print(
                f"\n{dtype} {SQUARE}^3 product: {square_flops / wall / 1e6:.0f} GFLOP/s wall, "
                f"{square_flops / cpu / 1e6:.0f} GFLOP/s of CPU time"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small config, few steps (smoke run)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per contender per round")
    parser.add_argument("--configs", nargs="*", choices=sorted(CONFIGS), help="which sizes")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 rows")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    parser.add_argument(
        "--host-memory",
        choices=("both", "this"),
        default="both",
        help="both: run once without and once with NNFUN_RETAIN_HOST_MEMORY=1, each in a "
        "fresh process (default); this: run once here, as the environment says",
    )
    args = parser.parse_args()
    if args.host_memory == "both":
        argv = [a for a in sys.argv[1:] if not a.startswith("--host-memory")]
        for retain in ("0", "1"):
            env = dict(os.environ, NNFUN_RETAIN_HOST_MEMORY=retain)
            command = [sys.executable, __file__, *argv, "--host-memory=this"]
            subprocess.run(command, env=env, check=True)
        return
    accelerator = jax.default_backend() != "cpu"
    names = args.configs or (["small"] if args.quick else ["small", "large"])
    if accelerator and not args.quick and not args.configs:
        names.append("gpu")
    rounds, steps = (2, 2) if args.quick else (args.rounds, args.steps)
    # This script's switch, read here only: the library never reads it.
    retained = os.environ.get("NNFUN_RETAIN_HOST_MEMORY") == "1" and retain_host_memory()
    device = jax.devices()[0]
    print(
        f"\n## host memory retained: {'yes' if retained else 'no'} "
        f"(jax {jax.__version__} on {jax.default_backend()}: {device.device_kind}, "
        f"{rounds} rounds x {steps} steps)"
    )
    for name in names:
        report(name, CONFIGS[name], rounds, steps, not args.no_bf16, not args.no_torch)


if __name__ == "__main__":
    main()
