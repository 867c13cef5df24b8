# Run: .venv/bin/python benchmarks/gpt_step.py [--quick]   (ms per GPT training step, CPU)
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
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnfun.host_memory import retain_host_memory
from nnfun.models.gpt import GPT
from nnfun.train import TrainState, scan_steps, softmax_cross_entropy, train_step

CONFIGS = {
    "small": dict(d_model=128, heads=4, layers=4, seq=128, batch=16, vocab=96),
    "large": dict(d_model=256, heads=4, layers=6, seq=128, batch=16, vocab=96),
}


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

    def run(n):
        for _ in range(n):
            state[0], state[1], loss = step(state[0], state[1], batch)
        loss.block_until_ready()

    return run


def nnfun_model(c, stacked=True, unroll=None) -> GPT:
    return GPT(
        vocab_size=c["vocab"],
        d_model=c["d_model"],
        num_heads=c["heads"],
        num_layers=c["layers"],
        max_length=c["seq"],
        stacked=stacked,
        unroll=unroll,
    )


def make_nnfun(c, batch, stacked=True, unroll=None, steps_per_call=1):
    model, opt = nnfun_model(c, stacked, unroll), optax.adam(1e-3)
    ts = [TrainState.create(model, opt, jax.random.key(0), batch["x"])]
    step = train_step(model, softmax_cross_entropy, opt)
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


def make_torch(c, batch):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torch_gpt(torch, c)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(np.array(batch["x"])).long()
    y = torch.from_numpy(np.array(batch["y"])).long()

    def run(n):
        for _ in range(n):
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c["vocab"]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def bench(c, rounds: int, steps: int) -> tuple[dict[str, tuple[float, float]], float]:
    """Median (wall ms, CPU ms) per step of each contender, and page faults per step."""
    rng = np.random.default_rng(0)
    batch = {
        k: jnp.asarray(rng.integers(0, c["vocab"], (c["batch"], c["seq"]), dtype=np.int32))
        for k in "xy"
    }
    contenders = {
        "raw JAX (naive)": make_raw(c, batch),
        "nnfun GPT (default: Stack unrolled)": make_nnfun(c, batch),
        "nnfun GPT(unroll=1) (Stack as a loop)": make_nnfun(c, batch, unroll=1),
        "nnfun GPT(stacked=False) (Sequential)": make_nnfun(c, batch, stacked=False),
        f"nnfun GPT, {steps} steps per call (scan_steps)": make_nnfun(
            c, batch, steps_per_call=steps
        ),
    }
    torch_run = make_torch(c, batch)
    if torch_run is not None:
        contenders["PyTorch eager"] = torch_run
    for run in contenders.values():
        run(steps)  # compile and warm up
    times = {name: ([], []) for name in contenders}
    names = list(contenders)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for r in range(rounds):
        # Rotate the order: torch's threads spin on after its step and slow whoever runs next.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run = contenders[name]
            start, cpu = time.perf_counter(), time.process_time()
            run(steps)
            times[name][0].append((time.perf_counter() - start) / steps * 1000)
            # CPU time of all threads: counts work done, barely moved by other load.
            times[name][1].append((time.process_time() - cpu) / steps * 1000)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    medians = {name: (statistics.median(w), statistics.median(u)) for name, (w, u) in times.items()}
    return medians, faults / (rounds * steps * len(contenders))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small config, few steps (smoke run)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per contender per round")
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
    configs = {"small": CONFIGS["small"]} if args.quick else CONFIGS
    rounds, steps = (2, 2) if args.quick else (args.rounds, args.steps)
    # This script's switch, read here only: the library never reads it.
    retained = os.environ.get("NNFUN_RETAIN_HOST_MEMORY") == "1" and retain_host_memory()
    print(
        f"\n## host memory retained: {'yes' if retained else 'no'} "
        f"(jax {jax.__version__} on {jax.default_backend()}, {rounds} rounds x {steps} steps)"
    )
    for name, c in configs.items():
        result, faults = bench(c, rounds, steps)
        print(f"\n### {name}: {c}; {faults:.0f} page faults per step\n", flush=True)
        print("| contender | ms/step | CPU ms/step | vs raw JAX: wall (CPU) |")
        print("|---|---:|---:|---:|")
        wall0, cpu0 = result["raw JAX (naive)"]
        for contender, (wall, cpu) in result.items():
            ratios = f"{wall / wall0:.2f}x ({cpu / cpu0:.2f}x)"
            print(f"| {contender} | {wall:.1f} | {cpu:.1f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
