# Run: .venv/bin/python benchmarks/research/gpt_variants.py [--quick]
#      [--only steps,components,flags] [--variants attn=bias,attn=ops] [--all] [--no-torch]
#      (findings: benchmarks/NOTES.md)
"""Which formulations make a raw-JAX GPT training step fast on XLA:CPU.

A hand-written GPT (pre-LayerNorm, causal attention, GELU MLP, tied embeddings,
Adam) whose pieces are switched by a ``Variant``: LayerNorm formulation, dense
over 3-D or flattened 2-D activations, attention formulation and layout, loss,
embedding lookup, unrolled blocks or ``lax.scan``. Every contender is compiled
first, then timed in interleaved rounds (each round runs every contender once),
and the median per-step wall time and CPU time (all threads; steadier on a busy
machine) are reported with ratios against the naive variant and against
PyTorch eager (when ``import torch`` works). ``components`` times each piece
alone (forward and forward + backward). XLA flags need a fresh process, so flag
sets run in subprocesses, one after the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnfun import ops
from nnfun.train import softmax_cross_entropy

SIZES = {"small": dict(d=128, heads=4, blocks=4, seq=128, batch=16, vocab=96)}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One formulation of the model; the defaults are the naive hand-written GPT."""

    ln: str = "naive"  # naive | flat | onepass | vjp (nnfun.ops.layer_norm)
    dense: str = "3d"  # 3d | 2d (residual stream kept as (batch*seq, d))
    attn: str = "dpa"  # dpa | where | bias | bhtd | flat | ops
    qkv: str = "separate"  # separate | fused
    loss: str = "optax"  # optax | fused | onehot | ops
    embed: str = "gather"  # gather | onehot
    blocks: str = "unroll"  # unroll (Python loop) | scan | scan-unrolled (lax.scan unroll=True)
    gelu: str = "tanh"  # tanh | erf


# ---------------------------------------------------------------- parameters


def init_params(key, s, fused_qkv):
    d, v = s["d"], s["vocab"]
    keys = iter(jax.random.split(key, 8 * s["blocks"] + 4))

    def dense(n_in, n_out):
        w = jax.random.normal(next(keys), (n_in, n_out)) / np.sqrt(n_in)
        return {"w": w, "b": jnp.zeros((n_out,))}

    def norm():
        return {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))}

    def block():
        attn = {"qkv": dense(d, 3 * d)} if fused_qkv else {n: dense(d, d) for n in "qkv"}
        attn["o"] = dense(d, d)
        return {"ln1": norm(), "attn": attn, "ln2": norm(), "up": dense(d, 4 * d),
                "down": dense(4 * d, d)}  # fmt: skip

    return {
        "wte": jax.random.normal(next(keys), (v, d)) * 0.02,
        "wpe": jax.random.normal(next(keys), (s["seq"], d)) * 0.02,
        "blocks": [block() for _ in range(s["blocks"])],
        "ln_f": norm(),
    }


# ---------------------------------------------------------------- pieces


def layer_norm(p, x, kind, eps=1e-5):
    if kind == "vjp":
        return ops.layer_norm(x, p["scale"], p["bias"], eps)
    shape = x.shape
    if kind in ("flat", "onepass"):
        x = x.reshape(-1, shape[-1])
    bshape = (1,) * (x.ndim - 1) + (shape[-1],)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    if kind == "onepass":
        var = jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean)
        y = (x - mean) * jax.lax.rsqrt(var + eps)
    else:
        centred = x - mean
        y = centred * jnp.reciprocal(
            jnp.sqrt(jnp.mean(jnp.square(centred), -1, keepdims=True) + eps)
        )
    y = y * p["scale"].reshape(bshape) + p["bias"].reshape(bshape)
    return y.reshape(shape)


def dense(p, x, kind):
    if kind == "2d" and x.ndim != 2:
        y = x.reshape(-1, x.shape[-1]) @ p["w"] + p["b"][None, :]
        return y.reshape(*x.shape[:-1], -1)
    return x @ p["w"] + p["b"].reshape((1,) * (x.ndim - 1) + (-1,))


def causal_mask(t):
    return jnp.tril(jnp.ones((t, t), bool))


def attention_core(q, k, v, kind):
    """q, k, v: (B, T, H, Dh) -> (B, T, H, Dh), causal."""
    b, t, h, dh = q.shape
    scale = 1.0 / np.sqrt(dh)
    if kind == "dpa":
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    if kind == "ops":
        return ops.causal_attention(q, k, v)
    mask = causal_mask(t)
    if kind in ("where", "bias"):
        s = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
        if kind == "where":
            s = jnp.where(mask[None, None], s, -1e30)
        else:
            s = s + jnp.where(mask, 0.0, -1e30)[None, None]
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    # bhtd: heads before time, so the batched products have leading batch axes;
    # flat: additionally merge (batch, heads) into one batch axis.
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))
    if kind == "flat":
        q, k, v = (a.reshape(b * h, t, dh) for a in (q, k, v))
        mask = mask[None]
    else:
        mask = mask[None, None]
    s = jnp.where(mask, (q * scale) @ k.swapaxes(-1, -2), -1e30)
    o = jax.nn.softmax(s, axis=-1) @ v
    return o.reshape(b, h, t, dh).transpose(0, 2, 1, 3)


def attention(p, x, var, heads, b, t):
    shape = x.shape  # (B, T, D) or (B*T, D)
    if var.qkv == "fused":
        q, k, v = jnp.split(dense(p["qkv"], x, var.dense), 3, axis=-1)
    else:
        q, k, v = (dense(p[n], x, var.dense) for n in "qkv")
    d = shape[-1]
    q, k, v = (a.reshape(b, t, heads, d // heads) for a in (q, k, v))
    o = attention_core(q, k, v, var.attn).reshape(shape)
    return dense(p["o"], o, var.dense)


def block(p, x, var, heads, b, t):
    x = x + attention(p["attn"], layer_norm(p["ln1"], x, var.ln), var, heads, b, t)
    h = dense(p["up"], layer_norm(p["ln2"], x, var.ln), var.dense)
    h = jax.nn.gelu(h, approximate=var.gelu == "tanh")
    return x + dense(p["down"], h, var.dense)


def loss_fn(logits, targets, kind):
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    if kind == "optax":
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    if kind == "ops":
        return softmax_cross_entropy(logits, targets).mean()  # nnfun's fused loss
    lse = jax.nn.logsumexp(logits, axis=-1)
    if kind == "onehot":
        picked = jnp.sum(logits * jax.nn.one_hot(targets, logits.shape[-1]), axis=-1)
    else:
        picked = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return jnp.mean(lse - picked)


def forward_loss(params, tokens, targets, var, heads):
    b, t = tokens.shape
    wte = params["wte"]
    if var.embed == "onehot":
        x = jax.nn.one_hot(tokens.reshape(-1), wte.shape[0]) @ wte
    else:
        x = wte[tokens.reshape(-1)]
    x = x.reshape(b, t, -1) + params["wpe"][None, :t, :]
    if var.dense == "2d":
        x = x.reshape(b * t, -1)
    if var.blocks.startswith("scan"):  # params["blocks"]: one tree stacked on a leading axis
        body = lambda c, p: (block(p, c, var, heads, b, t), None)  # noqa: E731
        unroll = var.blocks == "scan-unrolled"
        x, _ = jax.lax.scan(body, x, params["blocks"], unroll=unroll)
    else:
        for p in params["blocks"]:
            x = block(p, x, var, heads, b, t)
    x = layer_norm(params["ln_f"], x, var.ln)
    logits = x.reshape(-1, x.shape[-1]) @ wte.T
    return loss_fn(logits, targets, var.loss)


# ---------------------------------------------------------------- timing harness


def make_contender(var, s, seed=0):
    """Compiled train step and forward loss for one variant, with its own state."""
    params = init_params(jax.random.key(seed), s, var.qkv == "fused")
    if var.blocks.startswith("scan"):
        params["blocks"] = jax.tree.map(lambda *a: jnp.stack(a), *params["blocks"])
    opt = optax.adam(1e-3)
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, s["vocab"], (s["batch"], s["seq"])), jnp.int32)
    targets = jnp.roll(tokens, -1, axis=1)
    loss = jax.jit(lambda p, x, y: forward_loss(p, x, y, var, s["heads"]))

    def step(p, o, x, y):
        value, grads = jax.value_and_grad(forward_loss)(p, x, y, var, s["heads"])
        updates, o = opt.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    step = jax.jit(step, donate_argnums=(0, 1))
    box = {"p": params, "o": opt.init(params)}
    compiled = step.lower(box["p"], box["o"], tokens, targets).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost

    def run_step():
        box["p"], box["o"], value = compiled(box["p"], box["o"], tokens, targets)
        return value

    def run_forward():
        return loss(box["p"], tokens, targets)

    run_step().block_until_ready()
    run_forward().block_until_ready()
    return {"step": run_step, "forward": run_forward, "cost": cost, "loss0": float(run_forward())}


def _wait(out):
    if not type(out).__module__.startswith("torch"):  # torch on CPU is synchronous
        jax.block_until_ready(out)


def time_interleaved(contenders, kind, rounds, steps):
    """Per contender: median and min wall ms per call, and median CPU ms per call.

    Each round runs every contender in turn, so load from other processes hits
    all of them alike. CPU time (all threads of this process) counts the work
    done and is far less disturbed by a busy machine than wall time.
    """
    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, c in contenders.items():
            fn = c[kind]
            _wait(fn())
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps):
                out = fn()
            _wait(out)
            wall[name].append((time.perf_counter() - start) / steps * 1e3)
            cpu[name].append((time.process_time() - cpu_start) / steps * 1e3)
    med = statistics.median
    return {n: {"wall": med(wall[n]), "min": min(wall[n]), "cpu": med(cpu[n])} for n in wall}


NAIVE = Variant()
# What the library does before phase 2: Dense flattens, Stack scans, the rest is naive.
LIBRARY_NOW = Variant(dense="2d", blocks="scan")
BEST = Variant(ln="vjp", dense="2d", attn="ops", qkv="fused", loss="fused")
OPS = Variant(ln="vjp", dense="2d", attn="ops", loss="ops", blocks="scan")
ONE_CHANGE = {
    "ln=flat": Variant(ln="flat"),
    "ln=onepass": Variant(ln="onepass"),
    "ln=vjp": Variant(ln="vjp"),
    "dense=2d": Variant(dense="2d"),
    "attn=where": Variant(attn="where"),
    "attn=bias": Variant(attn="bias"),
    "attn=bhtd": Variant(attn="bhtd"),
    "attn=flat": Variant(attn="flat"),
    "attn=ops": Variant(attn="ops"),
    "qkv=fused": Variant(qkv="fused"),
    "loss=fused": Variant(loss="fused"),
    "loss=onehot": Variant(loss="onehot"),
    "loss=ops": Variant(loss="ops"),
    "embed=onehot": Variant(embed="onehot"),
    "blocks=scan": Variant(blocks="scan"),
    "blocks=scan-unrolled": Variant(blocks="scan-unrolled"),
    "gelu=erf": Variant(gelu="erf"),
}
DEFAULT_SET = ("ln=vjp", "dense=2d", "attn=flat", "attn=ops", "qkv=fused", "loss=fused",
               "blocks=scan")  # fmt: skip


COMBINED = {
    "library-now": LIBRARY_NOW,
    "best": BEST,
    "ops+scan": OPS,
    "ops+unroll": dataclasses.replace(OPS, blocks="unroll"),
    "ops+scan-unrolled": dataclasses.replace(OPS, blocks="scan-unrolled"),
}


def step_variants(quick, everything, names=None):
    """The naive variant first (the reference of the ratios), then the chosen ones."""
    known = {**ONE_CHANGE, **COMBINED}
    if names:
        return {"naive": NAIVE, **{n: known[n] for n in names.split(",") if n != "naive"}}
    if quick:
        return {"naive": NAIVE, "ops+scan": OPS}
    chosen = ONE_CHANGE if everything else {n: ONE_CHANGE[n] for n in DEFAULT_SET}
    return {"naive": NAIVE, **chosen, **COMBINED}


# ---------------------------------------------------------------- PyTorch eager


def torch_contender(s, seed=0):
    """The same GPT in PyTorch eager (2 threads), or None when torch is missing."""
    try:
        import torch
        import torch.nn.functional as F
        from torch import nn
    except ImportError:
        return None
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    d, h = s["d"], s["heads"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, _ = x.shape
            a = self.ln1(x)
            q, k, v = (m(a).view(b, t, h, d // h).transpose(1, 2) for m in (self.q, self.k, self.v))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(o.transpose(1, 2).reshape(b, t, d))
            return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(s["vocab"], d)
            self.wpe = nn.Parameter(torch.randn(s["seq"], d) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(s["blocks"]))
            self.ln_f = nn.LayerNorm(d)

        def forward(self, x, y):
            z = self.wte(x) + self.wpe[None, : x.shape[1]]
            for blk in self.blocks:
                z = blk(z)
            logits = self.ln_f(z) @ self.wte.weight.T
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))

    model = GPT()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, s["vocab"], (s["batch"], s["seq"]), generator=gen)
    y = torch.roll(x, -1, dims=1)

    def run_step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        opt.step()
        return loss

    def run_forward():
        with torch.no_grad():
            return model(x, y)

    run_step()
    return {"step": run_step, "forward": run_forward, "cost": {}, "torch": torch.__version__}


# ---------------------------------------------------------------- components


def _grad_contender(fn, *args):
    """jit of forward + backward of ``sum(fn(*args) * w)`` for a fixed random ``w``."""
    out = jax.eval_shape(fn, *args)
    w = jax.random.normal(jax.random.key(1), out.shape, out.dtype)
    diff = [i for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating)]
    g = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * w), argnums=diff))
    f = jax.jit(fn)
    g(*args)
    f(*args)
    return {"step": lambda: g(*args), "forward": lambda: f(*args)}


def component_groups(s):
    b, t, d, h, v = s["batch"], s["seq"], s["d"], s["heads"], s["vocab"]
    keys = jax.random.split(jax.random.key(0), 8)
    x3 = jax.random.normal(keys[0], (b, t, d))
    x2 = x3.reshape(b * t, d)
    scale, bias = jnp.ones((d,)) * 1.1, jnp.zeros((d,)) + 0.1
    ln = {"naive 3-D": (lambda x, s_, b_: layer_norm({"scale": s_, "bias": b_}, x, "naive"), x3)}
    ln["naive 2-D"] = (ln["naive 3-D"][0], x2)
    for kind in ("onepass", "vjp"):
        ln[kind] = (lambda x, s_, b_, k=kind: layer_norm({"scale": s_, "bias": b_}, x, k), x3)
    groups = {"layer norm": {n: _grad_contender(f, x, scale, bias) for n, (f, x) in ln.items()}}
    qkv = [jax.random.normal(k, (b, t, h, d // h)) for k in keys[1:4]]
    groups["attention"] = {
        kind: _grad_contender(lambda q, k, v_, kind=kind: attention_core(q, k, v_, kind), *qkv)
        for kind in ("dpa", "where", "bias", "bhtd", "flat", "ops")
    }
    logits = jax.random.normal(keys[4], (b * t, v))
    labels = jax.random.randint(keys[5], (b * t,), 0, v)
    groups["loss"] = {
        kind: _grad_contender(lambda z, y, kind=kind: loss_fn(z, y, kind), logits, labels)
        for kind in ("optax", "fused", "onehot", "ops")
    }
    wte = jax.random.normal(keys[6], (v, d))
    tokens = labels
    groups["embedding"] = {
        "gather": _grad_contender(lambda e, i: e[i], wte, tokens),
        "one-hot matmul": _grad_contender(lambda e, i: jax.nn.one_hot(i, v) @ e, wte, tokens),
    }
    w = jax.random.normal(keys[7], (d, 4 * d))
    groups["dense (d -> 4d)"] = {
        "3-D x @ w": _grad_contender(lambda x, w_: x @ w_, x3, w),
        "2-D x @ w": _grad_contender(
            lambda x, w_: (x.reshape(-1, d) @ w_).reshape(b, t, -1), x3, w
        ),
    }
    return groups


# ---------------------------------------------------------------- XLA flags (subprocesses)

FLAG_SETS = {
    "default": "",
    "multi_thread_eigen=false": "--xla_cpu_multi_thread_eigen=false",
    "enable_fast_math=true": "--xla_cpu_enable_fast_math=true",
    "ynn_fusion_type=DOT": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
    "use_onednn=true": "--xla_cpu_use_onednn=true",
}
FLAG_VARIANTS = {"naive": NAIVE, "best": BEST}


def run_child(names, rounds, steps):
    """Inside a subprocess with XLA_FLAGS set: time the named variants, print JSON."""
    s = SIZES["small"]
    contenders = {n: make_contender(FLAG_VARIANTS[n], s) for n in names}
    result = {k: time_interleaved(contenders, k, rounds, steps) for k in ("forward", "step")}
    print("RESULT " + json.dumps(result))


def run_flags(rounds, quick):
    """Each round starts one process per flag set (compiling costs ~10 s each).

    Processes cannot be interleaved step by step, so load changes between them
    show up in wall time; the CPU-time column is the steadier comparison.
    """
    sets = FLAG_SETS
    if quick:
        sets = {k: FLAG_SETS[k] for k in ("default", "multi_thread_eigen=false")}
    names = ["naive", "best"]
    samples = {(f, n, m): [] for f in sets for n in names for m in ("wall", "cpu")}
    for _ in range(rounds):
        for label, flags in sets.items():
            env = {**os.environ, "XLA_FLAGS": flags}
            cmd = [sys.executable, __file__, "--child", ",".join(names)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                print(f"flag set {label!r} failed:\n{out.stderr[-2000:]}")
                continue
            res = json.loads(line[-1][len("RESULT ") :])["step"]
            for n in names:
                for m in ("wall", "cpu"):
                    samples[(label, n, m)].append(res[n][m])
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    print("\n### XLA flags: train step, each flag set in a fresh process\n")
    print("| XLA_FLAGS | naive wall ms | naive cpu ms | x default | best wall ms | best cpu ms "
          "| x default |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in sets:
        if (label, "naive", "wall") not in med or ("default", "naive", "wall") not in med:
            continue
        cells = []
        for n in names:
            wall, cpu = med[(label, n, "wall")], med[(label, n, "cpu")]
            ratio = (
                f"{wall / med[('default', n, 'wall')]:.2f} ({cpu / med[('default', n, 'cpu')]:.2f})"
            )
            cells += [f"{wall:.1f}", f"{cpu:.0f}", ratio]
        print(f"| {label} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------- reporting


def print_steps(contenders, fwd, step):
    """Markdown table: wall ms (median, min) and CPU ms, ratios of medians."""
    ref = "naive"
    torch_t = step.get("torch")
    print("\n### Train step and forward (median of interleaved rounds)\n")
    print("wall: median ms (min); cpu: median CPU ms of all threads; x naive/torch: ratio")
    print("of wall medians (cpu medians). GFLOP/MB: XLA cost analysis of the compiled step")
    print("(a lax.scan body is counted once, not once per block).\n")
    print(
        "| variant | fwd wall | fwd x naive | step wall | step cpu | x naive | x torch "
        "| GFLOP | MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, c in contenders.items():
        f, t = fwd[name], step[name]
        vs_torch = _ratio(t, torch_t) if torch_t else "-"
        cost = c["cost"] or {}
        gflop = f"{cost['flops'] / 1e9:.2f}" if "flops" in cost else "-"
        mb = f"{cost['bytes accessed'] / 1e6:.0f}" if "bytes accessed" in cost else "-"
        print(
            f"| {name} | {f['wall']:.1f} | {_ratio(f, fwd[ref])} "
            f"| {t['wall']:.1f} ({t['min']:.1f}) | {t['cpu']:.0f} | {_ratio(t, step[ref])} "
            f"| {vs_torch} | {gflop} | {mb} |"
        )


def _ratio(a, b):
    return f"{a['wall'] / b['wall']:.2f} ({a['cpu'] / b['cpu']:.2f})"


def print_components(groups, rounds, steps):
    print("\n### Components (ms, median of interleaved rounds; x first: wall (cpu) ratio)\n")
    print("| component | formulation | forward | forward + backward | fwd+bwd cpu | x first |")
    print("|---|---|---:|---:|---:|---:|")
    for group, contenders in groups.items():
        fwd = time_interleaved(contenders, "forward", rounds, steps)
        both = time_interleaved(contenders, "step", rounds, steps)
        first = both[next(iter(contenders))]
        for name in contenders:
            f, t = fwd[name], both[name]
            print(
                f"| {group} | {name} | {f['wall']:.3f} | {t['wall']:.3f} ({t['min']:.3f}) "
                f"| {t['cpu']:.3f} | {_ratio(t, first)} |"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two variants, one round")
    parser.add_argument("--all", action="store_true", help="every one-change variant")
    parser.add_argument("--only", default="steps,components,flags", help="sections to run")
    parser.add_argument("--variants", default=None, help="comma list of step variants")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch eager")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    steps = 2 if args.quick else 3
    if args.child:
        run_child(args.child.split(","), rounds=min(rounds, 3), steps=steps)
        return
    s = SIZES["small"]
    sections = args.only.split(",")
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, sizes {s}")
    if "steps" in sections:
        chosen = step_variants(args.quick, args.all, args.variants)
        contenders = {n: make_contender(v, s) for n, v in chosen.items()}
        torch_c = None if args.no_torch else torch_contender(s)
        if torch_c is not None:
            contenders["torch"] = torch_c
            print(f"torch {torch_c['torch']} eager, 2 threads")
        fwd = time_interleaved(contenders, "forward", rounds, steps)
        step = time_interleaved(contenders, "step", rounds, steps)
        print_steps(contenders, fwd, step)
    if "components" in sections:
        print_components(component_groups(s), rounds, 3 if args.quick else 10)
    if "flags" in sections:
        run_flags(1, args.quick)


if __name__ == "__main__":
    main()
