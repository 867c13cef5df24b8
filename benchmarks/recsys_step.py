"""Recommendation steps side by side: nnfun, hand-written JAX, PyTorch eager (if installed).

Rows:

- MF: one Adam step of biased matrix factorization (MovieLens-sized tables,
  128 features, batch 512).
- two-tower: one Adam step of the MovieLens two-tower model (id, age, gender,
  occupation / id, mean bag of genres, decade embeddings, a 64-unit MLP each,
  batch 1024, in-batch softmax with log-Q and accidental hits masked) on
  synthetic features of the same shapes.
- bag: an ``EmbeddingBag`` over a 1M x 64 table (batch 2048, bags of 1 to 20
  ids, mean), forward alone and forward + backward to the (dense) table
  gradient, in lookups per second.

The hand-written JAX contenders compute the same numbers from the same
params (checked before timing). PyTorch runs eagerly, one thread by default
(``--torch-threads``; on a machine shared with other jobs its OpenMP workers
wait for each other at every op, and two threads ran the MF step over ten
times slower than one): ``nn.Embedding`` tables for MF, ``nn.EmbeddingBag``
for the genres and the 1M table. The contenders are timed in alternating
rounds, so a machine whose load changes treats them alike; each round's time
is the mean over ``--repeats`` calls, and a ratio is nnfun's time over the
other's in the same round (median and range over rounds; 1.00 = the same
speed).

    python benchmarks/recsys_step.py [--rounds 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnfun as nf
from nnfun.models import recsys as rm
from nnfun.recsys import sampled_softmax_loss

USERS, ITEMS, OCCUPATIONS, GENRES, MAX_GENRES = 943, 1682, 21, 19, 6
BATCH, BAG, ROWS, WIDTH = 2048, 20, 1_000_000, 64
TEMPERATURE = 0.1

try:
    import torch
except ImportError:
    torch = None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rounds_of(contenders: dict[str, Callable[[], Any]], rounds: int, repeats: int) -> dict:
    """Seconds per call of each contender, one entry per round, rounds interleaved."""
    for run in contenders.values():
        jax.block_until_ready(run())  # compile / warm up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            for _ in range(repeats):
                out = run()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / repeats)
    return times


def report(title: str, times: dict[str, list[float]], unit: float = 1e3, per: int = 0) -> None:
    """Prints each contender's median time and nnfun's ratio to it (median, range)."""
    print(title)
    ours = np.asarray(times["nnfun"])
    for name, values in times.items():
        values = np.asarray(values)
        line = f"  {name:<24} {np.median(values) * unit:8.2f} {'ms' if unit == 1e3 else 'us'}"
        if per:
            line += f"  {per / np.median(values) / 1e6:6.2f} M lookups/s"
        if name != "nnfun":
            ratios = ours / values
            line += (
                f"  nnfun / this {np.median(ratios):.2f} "
                f"(rounds {ratios.min():.2f}-{ratios.max():.2f})"
            )
        print(line)


def adam_step(loss: Callable[..., jax.Array], optimizer: Any) -> Callable[..., Any]:
    @jax.jit
    def step(params: Any, opt_state: Any, batch: Any) -> Any:
        grads = jax.grad(loss)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return step


# --- matrix factorization ------------------------------------------------------------------


def mf_contenders(batch: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    model = rm.MatrixFactorization(USERS, ITEMS, 128, 3.5)
    params, _ = model.init(jax.random.key(0), batch)
    params = jax.tree.map(lambda a: a + 0.01, params)  # nonzero biases for the check
    optimizer = optax.adam(1e-3)
    jbatch = jax.tree.map(jnp.asarray, batch)

    def nnfun_loss(p: Any, b: Any) -> jax.Array:
        return jnp.mean(jnp.square(model.apply(p, {}, b)[0] - b["rating"]))

    def jax_loss(p: Any, b: Any) -> jax.Array:
        u, i = b["user"], b["item"]
        dot = jnp.sum(p["user"]["embedding"][u] * p["item"]["embedding"][i], axis=-1)
        bias = p["user_bias"]["embedding"][u, 0] + p["item_bias"]["embedding"][i, 0]
        return jnp.mean(jnp.square(p["bias"] + bias + dot - b["rating"]))

    np.testing.assert_allclose(nnfun_loss(params, jbatch), jax_loss(params, jbatch), rtol=1e-5)
    opt_state = optimizer.init(params)
    out = {}
    for name, loss in (("nnfun", nnfun_loss), ("hand-written JAX", jax_loss)):
        step = adam_step(loss, optimizer)
        out[name] = lambda step=step: step(params, opt_state, jbatch)
    if torch is not None:
        out["PyTorch eager"] = torch_mf_step(params, batch)
        first = out["PyTorch eager"]()  # the loss before its first update
        np.testing.assert_allclose(first, jax_loss(params, jbatch), rtol=1e-4)
    return out


def torch_mf_step(params: Any, batch: dict[str, np.ndarray]) -> Callable[[], Any]:
    tables = {
        name: torch.nn.Embedding.from_pretrained(
            torch.from_numpy(np.array(params[name]["embedding"])), freeze=False
        )
        for name in ("user", "item", "user_bias", "item_bias")
    }
    bias = torch.nn.Parameter(torch.tensor(float(params["bias"])))
    weights = [bias, *(t.weight for t in tables.values())]
    optimizer = torch.optim.Adam(weights, lr=1e-3)
    u, i = (torch.from_numpy(batch[k].astype(np.int64)) for k in ("user", "item"))
    rating = torch.from_numpy(batch["rating"])

    def step() -> float:
        optimizer.zero_grad()
        dot = (tables["user"](u) * tables["item"](i)).sum(-1)
        predicted = bias + tables["user_bias"](u)[:, 0] + tables["item_bias"](i)[:, 0] + dot
        loss = ((predicted - rating) ** 2).mean()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


# --- two-tower -----------------------------------------------------------------------------


def tower_features(rng: np.random.Generator) -> tuple[dict, dict]:
    users = {
        "id": np.arange(USERS, dtype=np.int32),
        "age": rng.integers(0, 7, USERS).astype(np.int32),
        "gender": rng.integers(0, 2, USERS).astype(np.int32),
        "occupation": rng.integers(0, OCCUPATIONS, USERS).astype(np.int32),
    }
    lengths = rng.integers(1, MAX_GENRES + 1, ITEMS).astype(np.int32)
    genres = rng.integers(0, GENRES, (ITEMS, MAX_GENRES)).astype(np.int32)
    genres[np.arange(MAX_GENRES)[None, :] >= lengths[:, None]] = -1
    items = {
        "id": np.arange(ITEMS, dtype=np.int32),
        "genres": {"inputs": genres, "lengths": lengths},
        "year": rng.integers(0, 9, ITEMS).astype(np.int32),
    }
    return users, items


def two_tower_contenders(rng: np.random.Generator, batch_size: int = 1024) -> dict:
    users, items = tower_features(rng)
    model = rm.TwoTower(rm.user_tower(OCCUPATIONS, 32), rm.item_tower(32))
    example = {"user": rm.take_rows(users, np.arange(2)), "item": rm.take_rows(items, np.arange(2))}
    params, state = model.init(jax.random.key(0), example)
    log_q = jnp.asarray(np.log(rng.dirichlet(np.ones(ITEMS))), jnp.float32)
    batch = {
        "user": jnp.asarray(rng.integers(0, USERS, batch_size), jnp.int32),
        "item": jnp.asarray(rng.integers(0, ITEMS, batch_size), jnp.int32),
    }
    juser, jitem = jax.tree.map(jnp.asarray, users), jax.tree.map(jnp.asarray, items)

    def nnfun_loss(p: Any, b: Any) -> jax.Array:
        x = {"user": rm.take_rows(juser, b["user"]), "item": rm.take_rows(jitem, b["item"])}
        out, _ = model.apply(p, state, x)
        return jnp.mean(
            sampled_softmax_loss(
                out["user"],
                out["item"],
                log_q=log_q[b["item"]],
                candidate_ids=b["item"],
                temperature=TEMPERATURE,
            )
        )

    def jax_loss(p: Any, b: Any) -> jax.Array:
        return jnp.mean(hand_written_two_tower(p, juser, jitem, log_q, b["user"], b["item"]))

    np.testing.assert_allclose(nnfun_loss(params, batch), jax_loss(params, batch), rtol=1e-4)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    out = {}
    for name, loss in (("nnfun", nnfun_loss), ("hand-written JAX", jax_loss)):
        step = adam_step(loss, optimizer)
        out[name] = lambda step=step: step(params, opt_state, batch)
    if torch is not None:
        out["PyTorch eager"] = torch_two_tower_step(params, users, items, log_q, batch)
        first = out["PyTorch eager"]()  # the loss before its first update
        np.testing.assert_allclose(first, jax_loss(params, batch), rtol=1e-4)
    return out


def hand_written_two_tower(p, users, items, log_q, user, item):
    """The two-tower loss with plain indexing: features concatenated in sorted name order."""
    pu, pi = p["user"], p["item"]
    u = {k: users[k][user] for k in ("age", "gender", "id", "occupation")}
    hu = jnp.concatenate([pu["0"][k]["embedding"][u[k]] for k in sorted(u)], axis=-1)
    ids, lengths = items["genres"]["inputs"][item], items["genres"]["lengths"][item]
    real = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    genre_rows = pi["0"]["genres"]["embedding"][jnp.where(real, ids, 0)] * real[..., None]
    genres = genre_rows.sum(1) / lengths[:, None]
    hi = jnp.concatenate(
        [
            genres,
            pi["0"]["id"]["embedding"][items["id"][item]],
            pi["0"]["year"]["embedding"][items["year"][item]],
        ],
        axis=-1,
    )

    def mlp(q, h):
        h = jax.nn.relu(h @ q["1"]["kernel"] + q["1"]["bias"])
        return h @ q["3"]["kernel"] + q["3"]["bias"]

    logits = mlp(pu, hu) @ mlp(pi, hi).T / TEMPERATURE - log_q[item][None, :]
    same = (item[:, None] == item[None, :]) & ~jnp.eye(len(item), dtype=bool)
    logits = jnp.where(same, -jnp.inf, logits)
    return -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1))


def torch_two_tower_step(params, users, items, log_q, batch) -> Callable[[], Any]:
    def table(p):
        return torch.nn.Embedding.from_pretrained(torch.tensor(np.array(p)), freeze=False)

    def mlp(q):
        net = torch.nn.Sequential(
            torch.nn.Linear(*q["1"]["kernel"].shape),
            torch.nn.ReLU(),
            torch.nn.Linear(*q["3"]["kernel"].shape),
        )
        with torch.no_grad():
            for layer, name in ((net[0], "1"), (net[2], "3")):
                layer.weight.copy_(torch.tensor(np.array(q[name]["kernel"]).T))
                layer.bias.copy_(torch.tensor(np.array(q[name]["bias"])))
        return net

    pu, pi = params["user"], params["item"]
    user_tables = {k: table(v["embedding"]) for k, v in sorted(pu["0"].items())}
    genre_rows = np.concatenate([np.array(pi["0"]["genres"]["embedding"]), np.zeros((1, 16))])
    genre_bag = torch.nn.EmbeddingBag.from_pretrained(
        torch.tensor(genre_rows, dtype=torch.float32), freeze=False, mode="mean", padding_idx=GENRES
    )
    item_id, year = table(pi["0"]["id"]["embedding"]), table(pi["0"]["year"]["embedding"])
    user_mlp, item_mlp = mlp(pu), mlp(pi)
    modules = [*user_tables.values(), genre_bag, item_id, year, user_mlp, item_mlp]
    weights = [w for m in modules for w in m.parameters()]
    optimizer = torch.optim.Adam(weights, lr=1e-3)
    user, item = (torch.from_numpy(np.asarray(batch[k]).astype(np.int64)) for k in ("user", "item"))
    ufeat = {k: torch.from_numpy(v.astype(np.int64)) for k, v in users.items()}
    genres = np.where(items["genres"]["inputs"] < 0, GENRES, items["genres"]["inputs"])
    genres, decade = torch.from_numpy(genres.astype(np.int64)), torch.from_numpy(items["year"])
    lq = torch.from_numpy(np.array(log_q))
    same = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool)

    def step() -> float:
        optimizer.zero_grad()
        hu = torch.cat([user_tables[k](ufeat[k][user]) for k in sorted(user_tables)], -1)
        hi = torch.cat([genre_bag(genres[item]), item_id(item), year(decade[item].long())], -1)
        logits = user_mlp(hu) @ item_mlp(hi).T / TEMPERATURE - lq[item][None, :]
        logits = logits.masked_fill(same, float("-inf"))
        loss = (-torch.diagonal(torch.log_softmax(logits, -1))).mean()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


# --- embedding bag over 1M rows --------------------------------------------------------------


def bag_contenders(ids: np.ndarray, lengths: np.ndarray, backward: bool) -> dict:
    layer = nf.EmbeddingBag(ROWS, WIDTH, combiner="mean")
    x = {"inputs": jnp.asarray(ids), "lengths": jnp.asarray(lengths)}
    params, _ = layer.init(jax.random.key(0), x)

    def nnfun_loss(p: Any) -> jax.Array:
        return jnp.sum(layer.apply(p, {}, x)[0])

    def jax_loss(p: Any) -> jax.Array:
        mask = jnp.arange(BAG)[None, :] < x["lengths"][:, None]
        rows = p["embedding"][jnp.where(mask, x["inputs"], 0)] * mask[..., None]
        return jnp.sum(rows.sum(1) / jnp.maximum(mask.sum(1), 1)[:, None])

    transform = jax.grad if backward else (lambda f: f)
    out = {}
    for name, loss in (("nnfun", nnfun_loss), ("hand-written JAX", jax_loss)):
        fn = jax.jit(transform(loss))
        out[name] = lambda fn=fn: fn(params)
    if torch is not None:
        out["PyTorch eager"] = torch_bag(ids, lengths, backward)
    return out


def torch_bag(ids: np.ndarray, lengths: np.ndarray, backward: bool) -> Callable[[], Any]:
    bag = torch.nn.EmbeddingBag(ROWS, WIDTH, mode="mean")
    flat = np.concatenate([row[:n] for row, n in zip(ids, lengths, strict=True)])
    flat_t = torch.from_numpy(flat.astype(np.int64))
    offsets = torch.from_numpy(np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64))

    def step() -> None:
        if backward:
            bag.zero_grad()
            bag(flat_t, offsets).sum().backward()
        else:
            with torch.no_grad():
                bag(flat_t, offsets)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(0)
    torch_version = ", no torch"
    if torch is not None:
        torch_version = f", torch {torch.__version__} ({args.torch_threads} threads)"
    print(f"{cpu_name()}, jax {jax.__version__}{torch_version}, {jax.default_backend()}")
    batch = {
        "user": rng.integers(0, USERS, 512).astype(np.int32),
        "item": rng.integers(0, ITEMS, 512).astype(np.int32),
        "rating": rng.integers(1, 6, 512).astype(np.float32),
    }
    times = rounds_of(mf_contenders(batch), args.rounds, args.repeats)
    report("MF Adam step (batch 512, 128 features):", times, unit=1e6)
    times = rounds_of(two_tower_contenders(rng), args.rounds, args.repeats)
    report("two-tower Adam step (batch 1024, in-batch softmax):", times, unit=1e3)
    ids = rng.integers(0, ROWS, (BATCH, BAG)).astype(np.int32)
    lengths = rng.integers(1, BAG + 1, BATCH).astype(np.int32)
    lookups = int(lengths.sum())
    for backward in (False, True):
        what = "forward + backward (dense table gradient)" if backward else "forward"
        times = rounds_of(bag_contenders(ids, lengths, backward), args.rounds, 3)
        report(f"EmbeddingBag 1M x 64, mean, batch {BATCH}, {what}:", times, per=lookups)


if __name__ == "__main__":
    main()
