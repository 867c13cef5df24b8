"""Loading a 500M-parameter Llama-shaped bfloat16 checkpoint: time and peak host memory.

Writes a sharded Hugging Face directory (random bfloat16 weights, about 1 GB, in
shards of about 250 MB) to a temporary directory, then loads it in a fresh
process per run, three ways:

- ``safetensors``: ``safetensors.flax.load_file`` on every shard, the tensors as
  stored (no renaming, transposing or stacking): the floor.
- ``by hand``: the same, then the mapping a user would write by hand in JAX:
  transpose each ``Linear`` weight and stack the blocks into nnfun's tree.
- ``nnfun``: ``nf.models.from_pretrained``: config checks, name and shape checks,
  tensor-by-tensor reads, transposes and stacking, arrays on the device.

Peak host memory is the growth of the process's resident set during the load:
its peak (``VmHWM``, reset through ``/proc/self/clear_refs`` just before) minus
its size before (Linux only). Each loader runs twice; the second run reads from
the page cache.

    python benchmarks/pretrained_load.py [--layers 24]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import nnfun as nf
from nnfun.checkpoint import write_safetensors
from nnfun.models.gpt import GPT, LLAMA_SETTINGS
from nnfun.models.pretrained import FAMILIES

SHARD_BYTES = 250_000_000

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
import nnfun as nf
import safetensors.flax
jnp.zeros(1).block_until_ready()
how, path = sys.argv[1], sys.argv[2]


def by_hand(tensors, layers):
    def linear(name):
        return jnp.stack([tensors[f"model.layers.{i}.{name}.weight"].T for i in range(layers)])

    def norm(name):
        return jnp.stack([tensors[f"model.layers.{i}.{name}.weight"] for i in range(layers)])

    block = {
        "attention": {p: {"kernel": linear(f"self_attn.{h}_proj")}
                      for p, h in [("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")]},
        "mlp": {p: {"kernel": linear(f"mlp.{h}_proj")}
                for p, h in [("gate", "gate"), ("hidden", "up"), ("out", "down")]},
        "attention_norm": {"scale": norm("input_layernorm")},
        "mlp_norm": {"scale": norm("post_attention_layernorm")},
    }
    return {
        "embedding": {"embedding": tensors["model.embed_tokens.weight"]},
        "blocks": {"layer": block},
        "norm": {"scale": tensors["model.norm.weight"]},
        "head": {"kernel": tensors["lm_head.weight"].T},
    }


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024


with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident size (VmHWM) to the current one
before = status("VmRSS")
start = time.perf_counter()
if how == "nnfun":
    _, params, _ = nf.models.from_pretrained(path)
else:
    index = json.load(open(f"{path}/model.safetensors.index.json"))["weight_map"]
    params = {}
    for shard in sorted(set(index.values())):
        params |= safetensors.flax.load_file(f"{path}/{shard}")
    if how == "by hand":
        params = by_hand(params, json.load(open(f"{path}/config.json"))["num_hidden_layers"])
jax.block_until_ready(params)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_bytes": status("VmHWM") - before}))
"""


def _model(layers: int) -> GPT:
    rotary = nf.RotaryPositions(max_length=4096, base=500000.0)
    return GPT(
        vocab_size=32000,
        d_model=1280,
        num_heads=20,
        num_kv_heads=4,
        num_layers=layers,
        max_length=4096,
        mlp_features=3456,
        **{**LLAMA_SETTINGS, "rotary": rotary},
    )


def write_checkpoint(path: str, model: GPT) -> int:
    """Random bfloat16 tensors under the Llama names, in shards with an index; returns bytes."""
    family = FAMILIES["llama"]
    example = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    shapes = nf.core.flatten_params(jax.eval_shape(model.init, jax.random.key(0), example)[0])
    rng = np.random.default_rng(0)
    shard: dict[str, np.ndarray] = {}
    weight_map: dict[str, str] = {}
    total, count = 0, 0

    def flush() -> None:
        nonlocal shard, count
        count += 1
        name = f"model-{count:05d}.safetensors"
        write_safetensors(os.path.join(path, name), shard, {"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard = {}

    for rule in family.tensors(model):
        if not rule.targets:
            continue
        parts = []
        for target in rule.targets:
            shape = shapes[target].shape[0 if rule.layer is None else 1 :]
            parts.append(np.broadcast_to(np.zeros((), np.float32), shape))
        shape = rule.join(tuple(parts)).shape
        array = (0.02 * rng.standard_normal(shape, np.float32)).astype(ml_dtypes.bfloat16)
        if sum(a.nbytes for a in shard.values()) + array.nbytes > SHARD_BYTES and shard:
            flush()
        shard[rule.name] = array
        total += array.nbytes
    flush()
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(family.to_config(model), f)
    return total


def _cpu() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.machine()


def _run(how: str, path: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, how, path], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=24)
    args = parser.parse_args()
    model = _model(args.layers)
    with tempfile.TemporaryDirectory() as path:
        start = time.perf_counter()
        total = write_checkpoint(path, model)
        shards = len([f for f in os.listdir(path) if f.endswith(".safetensors")])
        print(
            f"{total / 2 / 1e6:.0f}M parameters, bfloat16, {total / 1e9:.2f} GB in {shards} "
            f"shards, written in {time.perf_counter() - start:.1f} s"
        )
        print(f"CPU: {_cpu()}, {os.cpu_count()} cores, jax {jax.__version__}\n")
        rows = {}
        for how in ("safetensors", "by hand", "nnfun"):
            runs = [_run(how, path) for _ in range(2)]
            rows[how] = (
                [r["seconds"] for r in runs],
                max(r["peak_bytes"] for r in runs),
            )
        floor_time, floor_memory = min(rows["safetensors"][0]), rows["safetensors"][1]
        print(f"{'loader':<12} {'seconds (2 runs)':>18} {'x time':>7} {'peak MB':>8} "
              f"{'x model':>8} {'x memory':>9}")  # fmt: skip
        for how, (seconds, peak) in rows.items():
            print(
                f"{how:<12} {seconds[0]:>8.2f} {seconds[1]:>8.2f} "
                f"{min(seconds) / floor_time:>7.2f} {peak / 1e6:>8.0f} {peak / total:>8.2f} "
                f"{peak / floor_memory:>9.2f}"
            )


if __name__ == "__main__":
    main()
