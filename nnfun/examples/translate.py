"""Train an encoder-decoder to spell numbers in German or French; report exact match and BLEU.

Run ``python -m nnfun.examples.translate --lang de`` (or ``fr``; ``--help`` for
the options). The source is a number's digits, the target its spelling
("97" -> "siebenundneunzig", "quatre-vingt-dix-sept"): learning it means
reordering and compounding. The test numbers are never seen in training. The
last line printed is ``translate: test exact-match ..., BLEU ... (...)``, for
beam search (width 4); greedy decoding's exact match is reported beside it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import numpy as np
import optax

from .. import data as nd
from ..models.decoding import beam_search, greedy_search
from ..models.seq2seq import EncoderDecoder
from ..train import corpus_bleu, exact_match, fit, sequence_cross_entropy


def model(data: nd.TranslationData, d_model: int = 64, layers: int = 2) -> EncoderDecoder:
    """A small pre-norm encoder-decoder sized for ``data``'s vocabularies and lengths.

    Example:
        >>> from nnfun import data as nd
        >>> from nnfun.examples.translate import model
        >>> data = nd.number_translation("fr", numbers=(0, 300), sizes=(200, 50, 50))
        >>> model(data, d_model=32, layers=1).target_vocab_size == data.target_vocab.size
        True
    """
    return EncoderDecoder(
        source_vocab_size=data.source_vocab.size,
        target_vocab_size=data.target_vocab.size,
        d_model=d_model,
        num_heads=4,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        max_source_length=data.train["source"].shape[1],
        max_target_length=data.train["target_outputs"].shape[1],
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.translate",
        description="Train an encoder-decoder to spell numbers in German or French.",
    )
    parser.add_argument("--lang", choices=("de", "fr"), default="de", help="target language")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--d-model", type=int, default=64, help="model width")
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder blocks each")
    parser.add_argument("--beam", type=int, default=4, help="beam width")
    parser.add_argument("--train-size", type=int, default=8000, help="training numbers")
    parser.add_argument("--test-size", type=int, default=1000, help="test numbers")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, init and order")
    parser.add_argument("--steps-per-call", type=int, default=10, help="steps fused per call")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def decode(
    net: EncoderDecoder, params: dict, data: nd.TranslationData, split: str, beam: int
) -> list[str]:
    """Greedy (``beam=1``) or beam-search translations of ``split``'s sources."""
    arrays, vocab = getattr(data, split), data.target_vocab
    length = arrays["target_outputs"].shape[1]
    out = []
    for start in range(0, len(arrays["source"]), 250):
        source = {
            "inputs": arrays["source"][start : start + 250],
            "lengths": arrays["source_lengths"][start : start + 250],
        }
        ids = vocab.bos_id, vocab.eos_id
        if beam == 1:
            tokens, _ = greedy_search(
                net, params, source, max_length=length, bos_id=ids[0], eos_id=ids[1]
            )
        else:
            tokens = beam_search(
                net,
                params,
                source,
                beam_width=beam,
                max_length=length,
                bos_id=ids[0],
                eos_id=ids[1],
            )[0][:, 0]
        out += vocab.decode_batch(np.asarray(tokens))
    return out


def run(args: argparse.Namespace) -> dict[str, float]:
    """Trains as ``args`` says; returns exact match (greedy and beam) and BLEU on test."""
    sizes = (args.train_size, 500, args.test_size)
    data = nd.number_translation(args.lang, sizes=sizes, seed=args.seed)
    net = model(data, args.d_model, args.layers)
    warmup = min(200, args.steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, args.steps)
    state, _ = fit(
        net,
        sequence_cross_entropy(label_smoothing=0.1),
        optax.adamw(schedule, weight_decay=0.01),
        data.fit_data("train"),
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        metrics={"exact_match": exact_match()},
        steps_per_call=args.steps_per_call,
        progress=not args.no_progress,
    )
    references = list(data.test["target_text"])
    greedy = decode(net, state.params, data, "test", 1)
    beamed = decode(net, state.params, data, "test", args.beam)
    return {
        "greedy": float(np.mean([g == r for g, r in zip(greedy, references)])),
        "beam": float(np.mean([b == r for b, r in zip(beamed, references)])),
        "bleu": corpus_bleu(beamed, references, tokenize="char"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m nnfun.examples.translate``."""
    args = parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    seconds = time.perf_counter() - start
    print(
        f"translate: test exact-match {result['beam']:.3f}, BLEU {result['bleu']:.1f} "
        f"(lang={args.lang}, beam={args.beam}, greedy exact-match {result['greedy']:.3f}, "
        f"char BLEU, seed={args.seed}, {args.steps} steps, {seconds:.0f} s on "
        f"{jax.default_backend()})"
    )


if __name__ == "__main__":
    main()
