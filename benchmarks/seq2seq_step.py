"""Encoder-decoder: training step against hand-written JAX, cached decoding against recomputing.

Run ``python benchmarks/seq2seq_step.py`` (``--rounds`` for longer). Two tables:

1. The training step of ``EncoderDecoder`` (2 + 2 pre-norm blocks, width 128,
   batch 64, source 6 and target 30 tokens: the translate example's shapes at
   twice its width of 64, so that the products, not the call, dominate)
   against the same network written by hand in plain JAX (einsum attention,
   learned positions, tied head), both jitted with Adam, and PyTorch eager
   ``nn.Transformer`` with the same sizes when torch is installed
   (``pip install torch==2.13.0``): seconds per step and the ratio.
2. Decoding 32 target tokens for 32 sources: ``greedy_search`` and
   ``beam_search`` (width 4) over the KV cache, against a jitted loop that runs
   the whole teacher-forced model again on the prefix at every step: tokens
   per second and the speed-up.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps import jax_runner, measure, own_step

from nnfun.models.decoding import beam_search, greedy_search
from nnfun.models.seq2seq import EncoderDecoder

D, HEADS, LAYERS, VOCAB, SRC, TGT, BATCH = 128, 4, 2, 40, 6, 30, 64


def _norm(p, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _dense(p, x):
    return x @ p["kernel"] + p["bias"]


def _attention(p, x, kv, mask):
    def heads(a):
        return a.reshape(*a.shape[:2], HEADS, -1)

    q, k, v = (heads(_dense(p[n], a)) for n, a in (("query", x), ("key", kv), ("value", kv)))
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(q.shape[-1])
    weights = jax.nn.softmax(jnp.where(mask, logits, -1e9), axis=-1)
    y = jnp.einsum("bhts,bshd->bthd", weights, v).reshape(x.shape)
    return _dense(p["out"], y)


def _mlp(p, x):
    return _dense(p["out"], jax.nn.gelu(_dense(p["hidden"], x), approximate=False))


def naive_apply(params, batch):
    """The same encoder-decoder in plain JAX, on nnfun's param layout (Python loop over blocks)."""
    src, tgt = batch["inputs"], batch["decoder_inputs"]
    enc_mask = jnp.ones((1, 1, 1, src.shape[1]), bool)
    h = params["source_embedding"]["embedding"][src]
    h = h + params["source_positions"]["embedding"][None, : src.shape[1]]
    for i in range(LAYERS):
        p = jax.tree.map(lambda a, i=i: a[i], params["encoder"]["layer"])
        h = h + _attention(
            p["attention"], _norm(p["attention_norm"], h), _norm(p["attention_norm"], h), enc_mask
        )
        h = h + _mlp(p["mlp"], _norm(p["mlp_norm"], h))
    memory = _norm(params["encoder_norm"], h)
    causal = jnp.tril(jnp.ones((tgt.shape[1], tgt.shape[1]), bool))[None, None]
    table = params["target_embedding"]["embedding"]
    h = table[tgt] + params["target_positions"]["embedding"][None, : tgt.shape[1]]
    for i in range(LAYERS):
        p = jax.tree.map(lambda a, i=i: a[i], params["decoder"]["layer"])
        n = _norm(p["attention_norm"], h)
        h = h + _attention(p["attention"], n, n, causal)
        h = h + _attention(
            p["cross_attention"], _norm(p["cross_attention_norm"], h), memory, enc_mask
        )
        h = h + _mlp(p["mlp"], _norm(p["mlp_norm"], h))
    return _norm(params["decoder_norm"], h) @ table.T


def _model(max_target_length: int) -> EncoderDecoder:
    return EncoderDecoder(
        source_vocab_size=VOCAB,
        d_model=D,
        num_heads=HEADS,
        num_encoder_layers=LAYERS,
        num_decoder_layers=LAYERS,
        max_source_length=SRC,
        max_target_length=max_target_length,
    )


def training(rounds: int) -> None:
    model = _model(TGT)
    rng = np.random.default_rng(0)
    x = {
        "inputs": jnp.asarray(rng.integers(3, VOCAB, (BATCH, SRC)), jnp.int32),
        "decoder_inputs": jnp.asarray(rng.integers(3, VOCAB, (BATCH, TGT)), jnp.int32),
    }
    y = jnp.asarray(rng.integers(3, VOCAB, (BATCH, TGT)), jnp.int32)
    params, _ = model.init(jax.random.key(0), x)
    optimizer = optax.adam(1e-3)
    np.testing.assert_allclose(
        naive_apply(params, x), model.apply(params, {}, x)[0], atol=2e-4
    )  # the same function, so the timings compare like with like

    def nnfun_apply(p, batch):
        return model.apply(p, {}, batch)[0]

    runs = {
        name: jax_runner(own_step(apply, optimizer), (params, optimizer.init(params)), x, y)
        for name, apply in (
            ("nnfun EncoderDecoder", nnfun_apply),
            ("hand-written JAX", naive_apply),
        )
    }
    torch_run = torch_runner(x, y)
    if torch_run is not None:
        runs["PyTorch eager"] = torch_run
    times = measure(runs, rounds, 10)
    base = times["hand-written JAX"]
    print(
        f"\ntraining step, batch {BATCH}, source {SRC}, target {TGT}, width {D}, "
        f"{LAYERS}+{LAYERS} blocks"
    )
    for name, seconds in times.items():
        print(f"  {name:24s} {1e3 * seconds:8.2f} ms   {seconds / base:5.2f}x")


def torch_runner(x, y):
    """``run(n)``: n Adam steps of ``nn.Transformer`` (pre-norm, exact GELU, the same sizes,
    embeddings, learned positions and a tied head), or None without PyTorch."""
    try:
        import torch
    except ImportError:
        print("(PyTorch not installed: pip install torch==2.13.0 for its row)")
        return None
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = torch.nn.Transformer(
        D,
        HEADS,
        LAYERS,
        LAYERS,
        4 * D,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    source_embedding, target_embedding = torch.nn.Embedding(VOCAB, D), torch.nn.Embedding(VOCAB, D)
    positions = torch.nn.Parameter(torch.zeros(2, max(SRC, TGT), D))
    modules = [net, source_embedding, target_embedding]
    optimizer = torch.optim.Adam([*(p for m in modules for p in m.parameters()), positions])
    src = torch.from_numpy(np.asarray(x["inputs"]).astype(np.int64))
    tgt = torch.from_numpy(np.asarray(x["decoder_inputs"]).astype(np.int64))
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))
    causal = torch.nn.Transformer.generate_square_subsequent_mask(TGT)

    def run(n):
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            h_src = source_embedding(src) + positions[0, :SRC]
            h_tgt = target_embedding(tgt) + positions[1, :TGT]
            h = net(h_src, h_tgt, tgt_mask=causal, tgt_is_causal=True)
            logits = h @ target_embedding.weight.T
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1))
            loss.backward()
            optimizer.step()

    return run


def decoding(rounds: int) -> None:
    length, batch = 32, 32
    model = _model(length)
    source = jnp.asarray(np.random.default_rng(1).integers(3, VOCAB, (batch, SRC)), jnp.int32)
    x = {"inputs": source, "decoder_inputs": jnp.ones((batch, length), jnp.int32)}
    params, _ = model.init(jax.random.key(0), x)
    # eos_id 0 (PAD) is never the argmax of this untrained model: every run makes 32 tokens.
    kwargs = dict(max_length=length, bos_id=1, eos_id=0)

    @jax.jit
    def recompute(params, source):
        def step(t, ids):
            logits, _ = model.apply(params, {}, {"inputs": source, "decoder_inputs": ids})
            return ids.at[:, t + 1].set(jnp.argmax(logits[:, t], -1).astype(jnp.int32), mode="drop")

        ids = jnp.ones((batch, length), jnp.int32)
        return jax.lax.fori_loop(0, length, step, ids)

    runs = {
        "greedy, KV cache": lambda: greedy_search(model, params, source, **kwargs)[0],
        "beam 4, KV cache": lambda: beam_search(model, params, source, beam_width=4, **kwargs)[0],
        "greedy, recomputing the prefix": lambda: recompute(params, source),
    }
    tokens, _ = greedy_search(model, params, source, **kwargs)
    assert int((np.asarray(tokens) != 0).sum()) == batch * length, "decoding stopped early"
    print(f"\ndecoding {length} tokens for {batch} sources (tokens per second)")
    speed = {}
    for name, run in runs.items():
        jax.block_until_ready(run())  # compile
        best = min(_time(run) for _ in range(rounds))
        speed[name] = batch * length / best
    base = speed["greedy, recomputing the prefix"]
    for name, value in speed.items():
        print(f"  {name:32s} {value:10.0f}   {value / base:5.2f}x")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _time(run) -> float:
    start = time.perf_counter()
    jax.block_until_ready(run())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (medians / minima)")
    args = parser.parse_args()
    print(f"{_cpu()}, {jax.devices()[0].device_kind}, jax {jax.__version__}")
    training(args.rounds)
    decoding(args.rounds)


if __name__ == "__main__":
    main()
