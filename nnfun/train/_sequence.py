"""Sequence-to-sequence losses and metrics over padded targets, and corpus BLEU.

:func:`sequence_cross_entropy`, :func:`token_accuracy` and :func:`exact_match`
take their settings (the padding id, label smoothing) and return a function
``fn(logits, targets)`` for ``fit``, ``train_step`` and ``eval_step``. That
function gives one value per sequence, ``(batch,)``, and the caller takes the
mean, as with the losses of ``_losses.py``. Padded positions never count: they
are where ``targets == pad_id``, or, when ``targets`` is a dict
``{"labels": (batch, time), "lengths": (batch,)}`` (or ``"mask"``: bools, True
at real positions), where the lengths or mask say. Equal settings give the same
function object, so ``fit`` reuses its compiled step across calls.

:func:`corpus_bleu` scores decoded strings with ``sacrebleu``, imported when it
is called (``pip install "nnfun[data]"``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ._losses import check_array, out_of_range

SequenceFn = Callable[[Any, Any], jax.Array]


def _labels_and_mask(name: str, logits: jax.Array, targets: Any, pad_id: int) -> tuple:
    """``(labels, mask)``: integer ``(B, T)`` labels and a bool ``(B, T)`` mask of real tokens."""
    if isinstance(targets, Mapping):
        return _from_dict(name, logits, targets)
    labels = _check_labels(name, logits, targets)
    return labels, labels != pad_id


def _from_dict(name: str, logits: jax.Array, targets: Mapping) -> tuple:
    keys = set(targets)
    if "labels" not in keys or len(keys & {"mask", "lengths"}) != 1 or len(keys) != 2:
        raise ValueError(
            f"{name}: a dict of targets needs 'labels' and one of 'mask' or 'lengths', got "
            f"{sorted(keys)}. Fix: {{'labels': ids, 'lengths': lengths}}, or pass the ids "
            "array alone and let pad_id mark the padding."
        )
    labels = _check_labels(name, logits, targets["labels"])
    batch, time = labels.shape
    if "mask" in keys:
        mask = check_array(name, "targets['mask']", targets["mask"])
        if mask.shape != labels.shape or mask.dtype != jnp.bool_:
            raise ValueError(
                f"{name}: targets['mask'] must be bools shaped like the labels {labels.shape}, "
                f"True at real tokens; got {mask.dtype} {mask.shape}"
            )
        return labels, mask
    lengths = check_array(name, "targets['lengths']", targets["lengths"])
    if lengths.shape != (batch,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(
            f"{name}: targets['lengths'] must be integers shaped ({batch},), one per sequence; "
            f"got {lengths.dtype} {lengths.shape}"
        )
    return labels, jnp.arange(time)[None, :] < lengths[:, None]


def _check_labels(name: str, logits: jax.Array, labels: Any) -> jax.Array:
    labels = check_array(name, "targets", labels)
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"{name}: expected logits (batch, time, classes) and integer targets (batch, time), "
            f"got logits {logits.shape} and targets {labels.shape}. Fix: the decoder's logits "
            "against the target ids shifted left (target + EOS, padded), not one-hot vectors."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{name}: expected integer target ids, got dtype {labels.dtype}. "
            "Fix: targets.astype(jnp.int32)."
        )
    return labels


def _refuse_out_of_range(name: str, labels: jax.Array, mask: jax.Array, classes: int) -> None:
    """Concrete labels outside ``[0, classes)`` at real positions raise; traced ones give NaN."""
    real = out_of_range(jnp.where(mask, labels, 0), classes)
    if real is not None:
        raise ValueError(
            f"{name}: targets hold {real[:8].tolist()} at unpadded positions, outside "
            f"[0, {classes}) of the logits' last axis. Fix: widen the output layer to the "
            "vocabulary size, or check pad_id (positions equal to it are ignored)."
        )


def _valid(labels: jax.Array, classes: int) -> jax.Array:
    return (labels >= 0) & (labels < classes)


def _per_sequence(values: jax.Array, mask: jax.Array, normalize: bool) -> jax.Array:
    total = jnp.sum(jnp.where(mask, values, 0.0), axis=-1)
    if not normalize:
        return total
    return total / jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(total.dtype)


def _check_pad_id(name: str, pad_id: Any) -> int:
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise TypeError(f"{name}: pad_id must be an int, got {pad_id!r}")
    return pad_id


def _named(fn: SequenceFn, call: str) -> SequenceFn:
    fn.__name__ = fn.__qualname__ = call
    return fn


def sequence_cross_entropy(
    *, pad_id: int = 0, label_smoothing: float = 0.0, normalize: bool = True
) -> SequenceFn:
    """A per-sequence cross-entropy over padded targets, with optional label smoothing.

    Each real target token's loss is ``optax.softmax_cross_entropy`` of its logits
    against ``optax.smooth_labels(one_hot(label), label_smoothing)``, the smoothing
    spread over all classes (PAD, BOS and EOS included), in float32 or wider.
    Padded positions count zero. A sequence's value is the mean over its real
    tokens (``normalize=True``: nats per token; a sequence without real tokens
    gives 0), or their sum (``normalize=False``; without smoothing, the
    sequence's negative log-likelihood). The caller's mean over the batch then
    weighs each sequence equally (mean) or each token equally (sum, up to the
    batch's mean length).

    Args:
        pad_id: the target id that marks padding when targets are an array
            (``nnfun.data.number_translation`` pads with 0). Any int: with ``-100``
            the ids need no free slot.
        label_smoothing: ``alpha`` in ``[0, 1)``: the target distribution is
            ``(1 - alpha) * one_hot + alpha / classes``.
        normalize: average (True) or sum (False) over each sequence's real tokens.

    Returns:
        ``loss(logits, targets) -> (batch,)`` float32 for ``logits (batch, time,
        classes)`` and ``targets`` either integer ids ``(batch, time)`` or a dict
        ``{"labels": ids, "lengths": (batch,)}`` / ``{"labels": ids, "mask":
        bools (batch, time)}``. Labels outside ``[0, classes)`` at real positions
        raise a ``ValueError`` when concrete and give NaN under ``jit``.

    Raises:
        TypeError: a non-int ``pad_id``, or (from the returned function) a tuple
            for logits or non-integer targets.
        ValueError: ``label_smoothing`` outside ``[0, 1)``; (from the returned
            function) shapes that do not match, out-of-range labels.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> loss = nf.sequence_cross_entropy(pad_id=0)
        >>> targets = jnp.array([[3, 2, 0], [1, 2, 3]])  # row 0: two tokens, then padding
        >>> print(loss(jnp.zeros((2, 3, 4)), targets).round(4))  # log(4) per token
        [1.3863 1.3863]
        >>> loss is nf.sequence_cross_entropy(pad_id=0)
        True
    """
    name = "sequence_cross_entropy"
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return _cross_entropy(_check_pad_id(name, pad_id), float(label_smoothing), bool(normalize))


@functools.lru_cache(maxsize=64)
def _cross_entropy(pad_id: int, label_smoothing: float, normalize: bool) -> SequenceFn:
    name = "sequence_cross_entropy"

    def loss(logits: Any, targets: Any) -> jax.Array:
        logits = check_array(name, "logits", logits)
        labels, mask = _labels_and_mask(name, logits, targets, pad_id)
        classes = logits.shape[-1]
        _refuse_out_of_range(name, labels, mask, classes)
        wide = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        target = jax.nn.one_hot(labels, classes, dtype=wide.dtype)
        if label_smoothing:
            target = optax.smooth_labels(target, label_smoothing)
        tokens = optax.softmax_cross_entropy(wide, target)
        tokens = jnp.where(_valid(labels, classes), tokens, jnp.nan)
        return _per_sequence(tokens, mask, normalize)

    settings = f"pad_id={pad_id}, label_smoothing={label_smoothing}, normalize={normalize}"
    return _named(loss, f"{name}({settings})")


def token_accuracy(*, pad_id: int = 0) -> SequenceFn:
    """Per-sequence share of real target tokens whose arg-max logit is the label.

    The caller's mean is a mean over sequences (each sequence weighs the same,
    whatever its length). A sequence without real tokens scores 1 (nothing wrong).

    Args:
        pad_id: the target id that marks padding when targets are an array.

    Returns:
        ``accuracy(logits, targets) -> (batch,)`` float32 in ``[0, 1]``, with
        ``logits`` and ``targets`` as for :func:`sequence_cross_entropy`; NaN for
        a sequence with a label outside ``[0, classes)`` under ``jit``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> logits = jax.nn.one_hot(jnp.array([[3, 1, 0], [1, 2, 3]]), 4)  # predicts these
        >>> targets = jnp.array([[3, 2, 0], [1, 2, 3]])
        >>> nf.token_accuracy(pad_id=0)(logits, targets).tolist()
        [0.5, 1.0]
    """
    return _token_accuracy(_check_pad_id("token_accuracy", pad_id))


def exact_match(*, pad_id: int = 0) -> SequenceFn:
    """Per-sequence 1.0 when every real target token is the arg-max prediction, else 0.0.

    For teacher-forced logits (the decoder fed the true prefix). To score decoded
    sequences, compare the decoded strings (``Vocabulary.decode``) instead.

    Args:
        pad_id: the target id that marks padding when targets are an array.

    Returns:
        ``match(logits, targets) -> (batch,)`` float32 zeros and ones, with
        ``logits`` and ``targets`` as for :func:`sequence_cross_entropy`; NaN for
        a sequence with a label outside ``[0, classes)`` under ``jit``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> logits = jax.nn.one_hot(jnp.array([[3, 1, 0], [1, 2, 3]]), 4)
        >>> nf.exact_match(pad_id=0)(logits, jnp.array([[3, 2, 0], [1, 2, 3]])).tolist()
        [0.0, 1.0]
    """
    return _exact_match(_check_pad_id("exact_match", pad_id))


def _hits(name: str, logits: Any, targets: Any, pad_id: int) -> tuple:
    """``(hits, mask, valid)``: bools (batch, time) and the per-sequence label check."""
    logits = check_array(name, "logits", logits)
    labels, mask = _labels_and_mask(name, logits, targets, pad_id)
    classes = logits.shape[-1]
    _refuse_out_of_range(name, labels, mask, classes)
    valid = jnp.all(_valid(labels, classes) | ~mask, axis=-1)
    return jnp.argmax(logits, axis=-1) == labels, mask, valid


@functools.lru_cache(maxsize=64)
def _token_accuracy(pad_id: int) -> SequenceFn:
    def accuracy(logits: Any, targets: Any) -> jax.Array:
        hits, mask, valid = _hits("token_accuracy", logits, targets, pad_id)
        misses = _per_sequence((~hits).astype(jnp.float32), mask, normalize=True)
        return jnp.where(valid, 1.0 - misses, jnp.nan)

    return _named(accuracy, f"token_accuracy(pad_id={pad_id})")


@functools.lru_cache(maxsize=64)
def _exact_match(pad_id: int) -> SequenceFn:
    def match(logits: Any, targets: Any) -> jax.Array:
        hits, mask, valid = _hits("exact_match", logits, targets, pad_id)
        matched = jnp.all(hits | ~mask, axis=-1).astype(jnp.float32)
        return jnp.where(valid, matched, jnp.nan)

    return _named(match, f"exact_match(pad_id={pad_id})")


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> float:
    """Corpus BLEU of detokenized strings, one reference each, by ``sacrebleu``.

    ``sacrebleu.corpus_bleu`` with its defaults (4-grams, exponential smoothing):
    the clipped n-gram counts of all sentences are summed before the precisions
    are taken, and the brevity penalty compares the total lengths. Pass plain
    text (decoded strings), not token ids: sacrebleu tokenizes.

    Args:
        hypotheses: the system's outputs, one string per sentence.
        references: one reference string per hypothesis, in the same order.
        tokenize: sacrebleu's tokenizer: ``"13a"`` (its default, words and
            punctuation) or e.g. ``"char"``, which scores characters; German
            numbers are one word each, so word BLEU of such short outputs has no
            4-grams to count and says little.
        lowercase: compare lowercased text.

    Returns:
        The BLEU score, a float from 0 to 100.

    Raises:
        ImportError: ``sacrebleu`` is not installed (``pip install "nnfun[data]"``).
        ValueError: empty inputs, different numbers of hypotheses and references,
            or an unknown tokenizer.
        TypeError: items that are not strings (decode ids first).

    Example:
        >>> import nnfun as nf
        >>> round(nf.corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]), 1)
        100.0
    """
    hypotheses, references = list(hypotheses), list(references)
    if not hypotheses or len(hypotheses) != len(references):
        raise ValueError(
            f"corpus_bleu: expected one reference per hypothesis, got {len(hypotheses)} "
            f"hypotheses and {len(references)} references"
        )
    for what, texts in (("hypotheses", hypotheses), ("references", references)):
        odd = next((t for t in texts if not isinstance(t, str)), None)
        if odd is not None:
            raise TypeError(
                f"corpus_bleu: {what} must be strings, got a {type(odd).__name__}. "
                "Fix: decode ids first, e.g. vocab.decode_batch(ids)."
            )
    sacrebleu = _import_sacrebleu()
    if tokenize not in sacrebleu.BLEU.TOKENIZERS:
        raise ValueError(
            f"corpus_bleu: tokenize must be one of {sorted(sacrebleu.BLEU.TOKENIZERS)}, "
            f"got {tokenize!r}"
        )
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize, lowercase=lowercase)
    return float(bleu.score)


def _import_sacrebleu() -> ModuleType:
    try:
        return importlib.import_module("sacrebleu")
    except ImportError as error:
        raise ImportError(
            f"nnfun.corpus_bleu() needs the sacrebleu package, which is not installed ({error}). "
            'Fix: pip install "nnfun[data]"'
        ) from error
