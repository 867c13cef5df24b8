# Run: .venv/bin/python benchmarks/lora_step.py [--quick]
"""What nf.lora's merged form costs: its train step against hand-written JAX LoRA.

``nf.LoRA`` adds ``(alpha/rank) A B`` to each adapted kernel before the base
model runs (docs/design.md, "LoRA"), so the backward pass forms each adapted
kernel's full gradient. The factored form ``x W + s (x A) B``, which needs the
adapter inside the dense layer, does not. Contenders, one Adam step on the
adapters only, timed interleaved in one process, median over repeats:

* ``nnfun nf.lora``: ``nf.lora`` on a Sequential of residual MLP blocks, the
  optimizer ``optax.multi_transform`` over ``LoRA.labels``, ``nf.train_step``;
* ``JAX factored``: the same network and adapters hand-written, each adapted
  layer ``x @ W + s * (x @ A) @ B + b`` with ``W`` a constant of the step;
* ``JAX merged``: hand-written, ``x @ (W + s * A @ B) + b``, nnfun's form;
* ``nnfun full fine-tuning``: every parameter trained with Adam, for scale.

Every contender's XLA cost analysis (FLOPs of the compiled step) is printed
too. The network: 4 residual blocks ``d -> 4d -> d`` (GELU), d = 256, a linear
head to 16 classes, 1,024 rows per batch; rank 8 on both layers of each block.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnfun as nf

D, BLOCKS, ROWS, CLASSES, RANK, ALPHA = 256, 4, 1024, 16, 8, 16.0
SCALE = ALPHA / RANK


def nnfun_model() -> nf.Layer:
    block = nf.Residual(
        nf.Sequential({"up": nf.Dense(4 * D), "act": jax.nn.gelu, "down": nf.Dense(D)})
    )
    return nf.Sequential({str(i): block for i in range(BLOCKS)} | {"head": nf.Dense(CLASSES)})


def loss_fn(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def raw_forward(frozen: dict, adapters: dict, x: jax.Array, merged: bool) -> jax.Array:
    def dense(name: str, h: jax.Array) -> jax.Array:
        w, b = frozen[name]["kernel"], frozen[name]["bias"]
        if name not in adapters:
            return h @ w + b
        a, bb = adapters[name]["lora_a"], adapters[name]["lora_b"]
        if merged:
            return h @ (w + SCALE * (a @ bb)) + b
        return h @ w + SCALE * ((h @ a) @ bb) + b

    for i in range(BLOCKS):
        x = x + dense(f"{i}/down", jax.nn.gelu(dense(f"{i}/up", x)))
    return dense("head", x)


def raw_step(merged: bool) -> Callable:
    optimizer = optax.adam(1e-3)

    def step(carry: tuple, frozen: dict, x: jax.Array, y: jax.Array) -> tuple:
        adapters, opt_state = carry

        def loss(ad: dict) -> jax.Array:
            return jnp.mean(loss_fn(raw_forward(frozen, ad, x, merged), y))

        value, grads = jax.value_and_grad(loss)(adapters)
        updates, opt_state = optimizer.update(grads, opt_state, adapters)
        return (optax.apply_updates(adapters, updates), opt_state), value

    return step


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(run: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    steps, repeats = (5, 3) if args.quick else (10, 5)

    key = jax.random.key(0)
    x = jax.random.normal(key, (ROWS, D))
    y = jax.random.randint(jax.random.key(1), (ROWS,), 0, CLASSES)
    model = nnfun_model()
    params, _ = model.init(key, x)
    tuned, tuned_params = nf.lora(model, params, "*/layer/*", rank=RANK, alpha=ALPHA)
    # a trained adapter is not zero: draw lora_b so that the contenders' outputs can be compared
    flat = nf.flatten_params(tuned_params)
    for i, p in enumerate(p for p in list(flat) if p.endswith("lora_b")):
        flat[p] = 0.01 * jax.random.normal(jax.random.key(10 + i), flat[p].shape)
    tuned_params = nf.unflatten_params(flat)
    batch = {"x": x, "y": y}

    contenders: dict[str, tuple[Callable[[], None], float]] = {}

    def nnfun_contender(
        m: nf.Layer, p: dict, optimizer: optax.GradientTransformation
    ) -> tuple[Callable[[], None], float]:
        p = jax.tree.map(jnp.copy, p)  # donated below: no arrays shared with other contenders
        state = nf.TrainState.create(m, optimizer, key, x).replace(
            params=p, opt_state=optimizer.init(p)
        )
        step = jax.jit(nf.train_step(m, loss_fn, optimizer), donate_argnums=0)
        flops = step.lower(state, batch).compile().cost_analysis()["flops"]
        box = [state]

        def run() -> None:
            box[0], metrics = step(box[0], batch)
            metrics["loss"].block_until_ready()

        return run, flops

    lora_opt = optax.multi_transform(
        {"adapter": optax.adam(1e-3), "frozen": optax.set_to_zero()}, tuned.labels
    )
    contenders["nnfun nf.lora"] = nnfun_contender(tuned, tuned_params, lora_opt)
    contenders["nnfun full fine-tuning"] = nnfun_contender(model, params, optax.adam(1e-3))

    adapters = {p.rsplit("/", 1)[0].replace("/layer", ""): {} for p in flat if p.endswith("lora_a")}
    for name in adapters:
        path = name.replace("/", "/layer/", 1)
        adapters[name] = {k: flat[f"{path}/{k}"] for k in ("lora_a", "lora_b")}
    frozen = {}
    for p, v in flat.items():
        if "lora_" in p:
            continue
        layer, leaf = p.rsplit("/", 1)
        frozen.setdefault(layer.replace("/layer", ""), {})[leaf] = v
    for label, merged in (("JAX factored", False), ("JAX merged", True)):
        step = jax.jit(raw_step(merged), donate_argnums=0)
        carry = (adapters, optax.adam(1e-3).init(adapters))
        carry = jax.tree.map(jnp.copy, carry)
        flops = step.lower(carry, frozen, x, y).compile().cost_analysis()["flops"]
        box = [carry]

        def run(step: Callable = step, box: list = box) -> None:
            box[0], value = step(box[0], frozen, x, y)
            value.block_until_ready()

        contenders[label] = (run, flops)

    for run, _ in contenders.values():  # compile and warm up
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (run, _) in contenders.items():
            times[name].append(timed(run, steps))

    cpu = cpu_name()
    print(
        f"LoRA train step, {BLOCKS} blocks d={D}, {ROWS} rows, rank {RANK}; device "
        f"{jax.devices()[0].device_kind}, {cpu}; median of {repeats} x {steps} steps"
    )
    base = statistics.median(times["JAX factored"])
    print(f"{'contender':26s} {'ms/step':>9s} {'vs factored':>12s} {'GFLOP/step':>11s}")
    for name, (_, flops) in contenders.items():
        ms = statistics.median(times[name])
        print(f"{name:26s} {ms:9.2f} {ms / base:11.2f}x {flops / 1e9:11.2f}")
    expected = jax.jit(tuned.apply)(tuned_params, {}, x)[0]
    for merged in (False, True):  # the hand-written network is nnfun's, adapters included
        got = jax.jit(raw_forward, static_argnums=3)(frozen, adapters, x, merged)
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


if __name__ == "__main__":
    main()
