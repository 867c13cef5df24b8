"""Train a CTC speech recognizer on spoken digit strings; report CER, WER and string accuracy.

Run ``python -m nnfun.examples.speech`` (``--help`` for the options). The
utterances ("three one four") are synthesized offline with eSpeak NG
(``pip install "nnfun[speech]"``) and cached; the test voices are never heard
in training. The model (``nnfun.models.speech.ctc_recipe``) is a log-mel front
end, convolutions with BatchNorm and bidirectional GRUs, trained with CTC over
characters. Batches are drawn from length buckets so that only a few padded
shapes compile. The last line printed is ``speech: test CER ..., WER ...,
digit-string accuracy ... (unseen voices, ...)`` for greedy decoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from .. import data as nd
from ..models.speech import CTCModel, KeywordClassifier, SpeechEncoder, ctc_recipe, keyword_recipe
from ..train import (
    TrainState,
    character_error_rate,
    ctc_beam_search,
    ctc_greedy_decode,
    train_step,
    word_error_rate,
)

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORD_DIGITS = {w: str(i) for i, w in enumerate(WORDS)} | {"oh": "0"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    recipe = ctc_recipe()
    parser = argparse.ArgumentParser(
        prog="python -m nnfun.examples.speech",
        description="Train a CTC recognizer of spoken digit strings (eSpeak NG voices).",
    )
    parser.add_argument("--steps", type=int, default=recipe.steps, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--lr", type=float, default=recipe.learning_rate, help="peak rate")
    parser.add_argument("--train-size", type=int, default=3000, help="training utterances")
    parser.add_argument("--test-size", type=int, default=600, help="test utterances")
    parser.add_argument("--channels", type=int, default=128, help="convolution channels")
    parser.add_argument("--rnn", type=int, default=128, help="GRU features per direction")
    parser.add_argument("--rnn-layers", type=int, default=2, help="bidirectional GRU layers")
    parser.add_argument("--beam", type=int, default=0, help="also decode with this beam width")
    parser.add_argument(
        "--buckets",
        default="20000,36000,60000",
        help="padded lengths in samples (comma-separated); each batch uses one",
    )
    parser.add_argument(
        "--task",
        choices=("ctc", "keyword"),
        default="ctc",
        help="ctc: digit strings; keyword: one digit per utterance, a classifier",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, init and order")
    parser.add_argument("--cache-dir", default=None, help="where generated audio is cached")
    parser.add_argument("--log-every", type=int, default=250, help="print the loss this often")
    return parser.parse_args(argv)


def model(args: argparse.Namespace) -> CTCModel:
    """The CTC model sized by ``args``."""
    encoder = SpeechEncoder(
        channels=(args.channels, args.channels),
        rnn_features=args.rnn,
        rnn_layers=args.rnn_layers,
    )
    return CTCModel(encoder=encoder)


def feasible(net: CTCModel, utterances: nd.Utterances) -> np.ndarray:
    """Whether each utterance's labels fit the model's frames (CTC needs a blank per repeat)."""
    frames = net.frame_lengths(utterances.lengths)
    labels = utterances.labels
    repeats = ((labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] > 0)).sum(1)
    return utterances.label_lengths + repeats <= frames


def buckets(
    utterances: nd.Utterances, widths: Sequence[int], keep: np.ndarray | None = None
) -> list[np.ndarray]:
    """The utterances of each padded width (the smallest that fits them), optionally filtered."""
    lengths = utterances.lengths
    if lengths.max() > widths[-1]:
        raise ValueError(
            f"speech example: the longest utterance has {lengths.max()} samples, more than the "
            f"largest bucket {widths[-1]}. Fix: --buckets with a larger last entry."
        )
    which = np.searchsorted(np.asarray(widths), lengths)
    if keep is not None:
        which = np.where(keep, which, -1)
    return [np.flatnonzero(which == b) for b in range(len(widths))]


def as_batch(utterances: nd.Utterances, index: np.ndarray, width: int) -> dict[str, Any]:
    """A batch of ``index`` for ``train_step``: audio padded to ``width`` samples, labels."""
    b = utterances.batch(index, pad_to=width)
    return {
        "x": {"inputs": b["audio"], "lengths": b["lengths"]},
        "y": {"labels": b["labels"], "lengths": b["label_lengths"]},
    }


def training_batches(
    utterances: nd.Utterances,
    widths: Sequence[int],
    batch_size: int,
    seed: int,
    keep: np.ndarray | None = None,
    targets: Callable[[np.ndarray], Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Endless batches: a bucket drawn in proportion to its size, then utterances from it.

    The targets are the padded labels, or ``targets(index)`` when that is given.
    """
    rng = np.random.default_rng(seed)
    grouped = buckets(utterances, widths, keep)
    groups = [(w, g) for w, g in zip(widths, grouped, strict=True) if len(g)]
    sizes = np.array([len(g) for _, g in groups], float)
    while True:
        width, group = groups[rng.choice(len(groups), p=sizes / sizes.sum())]
        index = rng.choice(group, size=batch_size, replace=len(group) < batch_size)
        batch = as_batch(utterances, index, width)
        if targets is not None:
            batch["y"] = targets(index)
        yield batch


def transcribe(
    predict: Callable[[Any], Any],
    utterances: nd.Utterances,
    widths: Sequence[int],
    beam: int = 0,
) -> list[str]:
    """Greedy (``beam=0``) or beam-search transcripts of every utterance, in order."""
    out: list[str] = [""] * len(utterances)
    for width, group in zip(widths, buckets(utterances, widths), strict=True):
        for start in range(0, len(group), 64):
            index = group[start : start + 64]
            y = predict(as_batch(utterances, index, width)["x"])
            logits, lengths = np.asarray(y["logits"]), np.asarray(y["lengths"])
            if beam:
                ids = ctc_beam_search(logits, lengths, beam_width=beam)
            else:
                ids = ctc_greedy_decode(logits, lengths)
            for i, seq in zip(index, ids, strict=True):
                out[i] = nd.speech_decode(seq)
    return out


def scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """CER, WER and digit-string accuracy (every word of the string right)."""
    digits = ["".join(WORD_DIGITS.get(w, "?") for w in h.split()) for h in hypotheses]
    wanted = ["".join(WORD_DIGITS[w] for w in r.split()) for r in references]
    return {
        "cer": character_error_rate(list(references), list(hypotheses)),
        "wer": word_error_rate(list(references), list(hypotheses)),
        "accuracy": float(np.mean([d == w for d, w in zip(digits, wanted, strict=True)])),
    }


def run(args: argparse.Namespace) -> dict[str, float]:
    """Generates (or loads) the data, trains, and scores the unseen test voices."""
    widths = [int(w) for w in args.buckets.split(",")]
    data = nd.spoken_digits(
        args.train_size, args.test_size, seed=args.seed, cache_dir=args.cache_dir
    )
    recipe = ctc_recipe()
    net = model(args)
    keep = feasible(net, data["train"])
    if not keep.all():
        print(f"skipping {int((~keep).sum())} training utterances too fast for the frame rate")
    batches = training_batches(data["train"], widths, args.batch_size, args.seed, keep)
    ts = train(net, recipe, batches, args)

    @jax.jit
    def predict(x: Any) -> Any:
        return net.apply(ts.params, ts.state, x)[0]

    references = list(data["test"].texts)
    result = scores(references, transcribe(predict, data["test"], widths))
    if args.beam:
        beamed = scores(references, transcribe(predict, data["test"], widths, args.beam))
        result.update({f"beam_{k}": v for k, v in beamed.items()})
    return result


def train(
    net: Any, recipe: Any, batches: Iterator[dict[str, Any]], args: argparse.Namespace
) -> TrainState:
    """``args.steps`` jitted steps of ``recipe``'s loss and optimizer on ``batches``."""
    first = next(batches)
    optimizer = dataclasses.replace(recipe, learning_rate=args.lr).optimizer(args.steps)
    ts = TrainState.create(net, optimizer, args.seed, first["x"])
    step = jax.jit(train_step(net, recipe.loss, optimizer))
    batch, losses, started = first, [], time.perf_counter()
    for i in range(args.steps):
        ts, metrics = step(ts, batch)
        losses.append(float(metrics["loss"]))
        if args.log_every and (i + 1) % args.log_every == 0:
            mean = np.mean(losses[-args.log_every :])
            elapsed = time.perf_counter() - started
            print(f"step {i + 1}: loss {mean:.3f} ({elapsed:.0f} s)", flush=True)
        batch = next(batches)
    return ts


def run_keywords(args: argparse.Namespace) -> float:
    """Trains ``keyword_recipe`` on single spoken digits; returns test accuracy (unseen voices)."""
    widths = [int(w) for w in args.buckets.split(",")]
    data = nd.spoken_digits(
        args.train_size, args.test_size, seed=args.seed, max_digits=1, cache_dir=args.cache_dir
    )
    recipe = keyword_recipe()
    channels = (args.channels, args.channels)
    net = KeywordClassifier(SpeechEncoder(channels=channels, rnn_features=args.rnn, rnn_layers=1))
    digits = {s: np.array([int(d) for d in data[s].digits], np.int32) for s in data}
    batches = training_batches(
        data["train"], widths, args.batch_size, args.seed, targets=lambda i: digits["train"][i]
    )
    ts = train(net, recipe, batches, args)
    predict = jax.jit(lambda x: net.apply(ts.params, ts.state, x)[0])
    right = 0
    for width, group in zip(widths, buckets(data["test"], widths), strict=True):
        for start in range(0, len(group), 64):
            index = group[start : start + 64]
            logits = predict(as_batch(data["test"], index, width)["x"])
            right += int((np.asarray(logits).argmax(-1) == digits["test"][index]).sum())
    return right / len(data["test"])


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m nnfun.examples.speech``."""
    args = parse_args(argv)
    start = time.perf_counter()
    if args.task == "keyword":
        accuracy = run_keywords(args)
        print(
            f"speech keywords: test accuracy {accuracy:.3f} (unseen voices, seed={args.seed}, "
            f"{args.train_size} utterances, {args.steps} steps, "
            f"{time.perf_counter() - start:.0f} s on {jax.default_backend()})"
        )
        return
    r = run(args)
    seconds = time.perf_counter() - start
    beam = (
        f", beam-{args.beam} CER {r['beam_cer']:.3f} accuracy {r['beam_accuracy']:.3f}"
        if args.beam
        else ""
    )
    print(
        f"speech: test CER {r['cer']:.3f}, WER {r['wer']:.3f}, digit-string accuracy "
        f"{r['accuracy']:.3f} (unseen voices, greedy{beam}, seed={args.seed}, "
        f"{args.train_size} utterances, {args.steps} steps, {seconds:.0f} s on "
        f"{jax.default_backend()})"
    )


if __name__ == "__main__":
    main()
