"""Train a character-level GPT on the Python docs' topic help text, report bits per char, sample.

Run ``python -m nnfun.examples.char_lm --help`` for the options. The text is
``pydoc_data.topics`` from the standard library (no download); the last 10% is
held out for validation. The defaults train for a couple of minutes on two CPU
cores; ``--steps 3000 --layers 6`` gets noticeably better text.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import data as nd
from ..core._layer import Params
from ..models.gpt import GPT, generate
from ..train import TrainState, eval_step, softmax_cross_entropy, train_step


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.char_lm",
        description="Character-level GPT on pydoc_data.topics: validation bits/char and samples.",
    )
    add = parser.add_argument
    add("--steps", type=int, default=600, help="optimizer steps")
    add("--batch-size", type=int, default=32, help="windows per step")
    add("--seq-len", type=int, default=64, help="characters per window (and the context)")
    add("--d-model", type=int, default=128, help="model width")
    add("--heads", type=int, default=4, help="attention heads")
    add("--layers", type=int, default=3, help="transformer blocks")
    add("--dropout", type=float, default=0.0, help="dropout rate")
    add("--lr", type=float, default=3e-3, help="peak learning rate (warm-up, cosine decay)")
    add("--eval-every", type=int, default=200, help="steps between validation runs")
    add("--eval-batches", type=int, default=8, help="validation batches per run")
    add("--samples", type=int, default=2, help="samples to print at the end")
    add("--temperature", type=float, default=0.8, help="sampling temperature")
    add("--seed", type=int, default=0, help="seeds the data, the initialisation and sampling")
    return parser.parse_args(argv)


def optimizer(args: argparse.Namespace) -> optax.GradientTransformation:
    """AdamW with a short linear warm-up, cosine decay and gradient clipping."""
    warmup = max(1, min(100, args.steps // 10))
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, max(args.steps, warmup + 1))
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))


def validation_bits(
    evaluate: Callable[..., Any], ts: TrainState, val_ids: np.ndarray, args: argparse.Namespace
) -> float:
    """Mean validation loss over fixed windows, in bits per character."""
    losses = [
        float(
            evaluate(ts, nd.sequence_batch(val_ids, args.batch_size, args.seq_len, (args.seed, i)))[
                "loss"
            ]
        )
        for i in range(args.eval_batches)
    ]
    return float(np.mean(losses)) / math.log(2.0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Trains, prints progress and samples; returns ``{"val_bpc", "history", "samples", ...}``."""
    text = nd.pydoc_text()
    tokenizer = nd.CharTokenizer.from_text(text)
    train_ids, val_ids = nd.char_splits(text, tokenizer, 0.1)
    model = GPT(
        vocab_size=tokenizer.vocab_size,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        max_length=args.seq_len,
        dropout=args.dropout,
    )
    opt = optimizer(args)
    spec = jax.ShapeDtypeStruct((1, args.seq_len), jnp.int32)
    ts = TrainState.create(model, opt, jax.random.key(args.seed), spec)
    step = jax.jit(train_step(model, softmax_cross_entropy, opt), donate_argnums=0)
    evaluate = jax.jit(eval_step(model, softmax_cross_entropy))
    print(f"{len(text):,} characters, vocabulary {tokenizer.vocab_size}, model {model}")
    history, start = [], time.perf_counter()
    for i in range(args.steps):
        batch = nd.sequence_batch(train_ids, args.batch_size, args.seq_len, (args.seed, 10**6 + i))
        ts, metrics = step(ts, batch)
        if (i + 1) % args.eval_every == 0 or i + 1 == args.steps:
            bpc = validation_bits(evaluate, ts, val_ids, args)
            train_bpc = float(metrics["loss"]) / math.log(2.0)
            history.append((i + 1, train_bpc, bpc))
            print(f"step {i + 1:5d}  train {train_bpc:.3f} bits/char  validation {bpc:.3f}")
    seconds = time.perf_counter() - start
    samples = sample(model, ts.params, tokenizer, val_ids, args)
    for s in samples:
        print("-" * 72 + "\n" + s)
    print(f"validation: {history[-1][2]:.3f} bits/char after {args.steps} steps, {seconds:.0f} s")
    return {"val_bpc": history[-1][2], "history": history, "samples": samples, "seconds": seconds}


def sample(
    model: GPT,
    params: Params,
    tokenizer: nd.CharTokenizer,
    val_ids: np.ndarray,
    args: argparse.Namespace,
) -> list[str]:
    """Continues prompts cut from the validation text (with the KV cache, under jit)."""
    if args.samples < 1:
        return []
    prompt_len = min(16, args.seq_len // 4)
    starts = np.linspace(0, len(val_ids) - prompt_len - 1, args.samples).astype(int)
    prompts = np.stack([val_ids[s : s + prompt_len] for s in starts]).astype(np.int32)
    key = jax.random.key(args.seed + 1)
    out = generate(
        model, params, jnp.asarray(prompts), key, args.seq_len - prompt_len, args.temperature
    )
    return [tokenizer.decode(np.asarray(row)) for row in out]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``python -m nnfun.examples.char_lm``."""
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
