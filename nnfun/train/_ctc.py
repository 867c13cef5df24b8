"""Connectionist temporal classification: the loss, greedy and prefix beam search decoding.

:func:`ctc_loss` wraps ``optax.ctc_loss`` for padded logits and labels given
with lengths, checks what can be checked while the arrays are concrete (an
infeasible label sequence is an error here, not a huge or NaN loss later), and
clamps optax's small negative values to 0 (optax issue 1771). :func:`ctc` makes
the ``fn(outputs, targets)`` form that ``fit`` and ``train_step`` take. The
decoders run on the host in NumPy: they return Python lists of label ids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core._masks import concrete


def _where(name: str, text: str) -> ValueError:
    return ValueError(f"{name}: {text}")


def _check_lengths(name: str, what: str, lengths: Any, batch: int, size: int) -> None:
    if tuple(jnp.shape(lengths)) != (batch,) or not jnp.issubdtype(
        jnp.result_type(lengths), jnp.integer
    ):
        raise _where(
            name,
            f"expected {what} of ints shaped ({batch},), got {jnp.result_type(lengths)} "
            f"{tuple(jnp.shape(lengths))}",
        )
    values = concrete(lengths)
    if values is not None and values.size and (values.min() < 0 or values.max() > size):
        raise _where(
            name,
            f"{what} must lie in [0, {size}] (the padded length), got {values.tolist()}. Fix: "
            "count the real steps of each sequence; pad the array to the longest one.",
        )


def check_ctc_inputs(
    logits: Any, logit_lengths: Any, labels: Any, label_lengths: Any, blank_id: int = 0
) -> None:
    """Raises a clear ValueError for inputs :func:`ctc_loss` cannot use (skipped when traced).

    Checks shapes and dtypes, that lengths fit the padded arrays, that no real
    label is the blank or outside the classes, and that every label sequence
    fits its frames: ``U`` labels with ``r`` adjacent repeats need ``U + r``
    frames, since CTC must put a blank between two equal labels.
    """
    name = "ctc_loss"
    if len(jnp.shape(logits)) != 3 or len(jnp.shape(labels)) != 2:
        raise _where(
            name,
            f"expected logits (batch, frames, classes) and labels (batch, max_labels), got "
            f"{tuple(jnp.shape(logits))} and {tuple(jnp.shape(labels))}",
        )
    batch, frames, classes = jnp.shape(logits)
    if jnp.shape(labels)[0] != batch or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise _where(name, f"labels must be ints with batch {batch}, got {jnp.result_type(labels)}")
    if not 0 <= blank_id < classes:
        raise _where(name, f"blank_id={blank_id} is not a class of logits with {classes} classes")
    _check_lengths(name, "logit_lengths", logit_lengths, batch, frames)
    _check_lengths(name, "label_lengths", label_lengths, batch, jnp.shape(labels)[1])
    values = [concrete(a) for a in (labels, logit_lengths, label_lengths)]
    if any(v is None for v in values):
        return
    label_values, frame_counts, label_counts = (np.asarray(v) for v in values)
    for b in range(batch):
        seq = label_values[b, : label_counts[b]]
        if (seq == blank_id).any() or (seq < 0).any() or (seq >= classes).any():
            raise _where(
                name,
                f"labels of sequence {b} ({seq.tolist()}) must lie in [0, {classes}) and never be "
                f"the blank id {blank_id}. Fix: number the label alphabet around the blank "
                "(blank 0, labels 1..classes-1).",
            )
        needed = len(seq) + int((seq[1:] == seq[:-1]).sum())
        if needed > frame_counts[b]:
            raise _where(
                name,
                f"sequence {b} has {len(seq)} labels (needing {needed} frames with a blank between "
                f"repeats) but only {frame_counts[b]} frames: no alignment exists. Fix: less "
                "downsampling in the model (more frames per second), or drop this utterance.",
            )


def ctc_loss(
    logits: jax.Array,
    logit_lengths: jax.Array,
    labels: jax.Array,
    label_lengths: jax.Array,
    *,
    blank_id: int = 0,
) -> jax.Array:
    """Negative log-likelihood of each label sequence under CTC, ``(batch,)``.

    Args:
        logits: ``(batch, frames, classes)`` unnormalised scores (blank included).
        logit_lengths: ``(batch,)`` ints, real frames per sequence.
        labels: ``(batch, max_labels)`` ints; entries past ``label_lengths`` are ignored.
        label_lengths: ``(batch,)`` ints, real labels per sequence.
        blank_id: the class that is the blank.

    Returns:
        ``(batch,)`` losses, at least 0. Checks run while the inputs are concrete
        (see :func:`check_ctc_inputs`); under ``jit`` an infeasible sequence gives
        a very large finite loss instead of an error.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> logits = jnp.zeros((1, 3, 2))  # 3 frames, blank and one label, all equally likely
        >>> loss = nf.train.ctc_loss(logits, jnp.array([3]), jnp.array([[1]]), jnp.array([1]))
        >>> round(float(jnp.exp(-loss[0])), 4)  # 6 of the 8 paths give "1"
        0.75
    """
    check_ctc_inputs(logits, logit_lengths, labels, label_lengths, blank_id)
    frames, max_labels = logits.shape[1], labels.shape[1]
    logit_pad = (jnp.arange(frames)[None, :] >= logit_lengths[:, None]).astype(logits.dtype)
    label_pad = (jnp.arange(max_labels)[None, :] >= label_lengths[:, None]).astype(logits.dtype)
    labels = jnp.where(label_pad > 0, 0, labels)
    loss = optax.ctc_loss(logits, logit_pad, labels, label_pad, blank_id=blank_id)
    return jnp.maximum(loss, 0.0)


@functools.lru_cache(maxsize=64)
def ctc(blank_id: int = 0, per_label: bool = False) -> Callable[[Any, Any], jax.Array]:
    """The CTC loss as ``fn(outputs, targets)`` for ``fit`` and ``train_step``.

    ``outputs`` is ``{"logits": (batch, frames, classes), "lengths": (batch,)}``
    (what ``nnfun.models.speech.CTCModel`` returns) and ``targets`` is
    ``{"labels": (batch, max_labels), "lengths": (batch,)}``. With ``per_label``
    each sequence's loss is divided by its number of labels.
    """

    def loss(outputs: Any, targets: Any) -> jax.Array:
        for what, value, keys in (("outputs", outputs, "logits"), ("targets", targets, "labels")):
            if not (isinstance(value, Mapping) and set(value) == {keys, "lengths"}):
                got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
                raise _where(
                    "ctc", f"{what} must be a dict with keys ['{keys}', 'lengths'], got {got}"
                )
        value = ctc_loss(
            outputs["logits"],
            outputs["lengths"],
            targets["labels"],
            targets["lengths"],
            blank_id=blank_id,
        )
        return value / jnp.maximum(targets["lengths"], 1) if per_label else value

    return loss


def _log_probs(logits: Any) -> np.ndarray:
    values = np.asarray(logits, np.float64)
    shifted = values - values.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _batch(name: str, logits: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(logits)
    if values.ndim != 3:
        raise _where(name, f"expected logits (batch, frames, classes), got shape {values.shape}")
    counts = np.full(len(values), values.shape[1]) if lengths is None else np.asarray(lengths)
    if counts.shape != (len(values),) or counts.min(initial=0) < 0:
        raise _where(name, f"expected lengths (batch,) >= 0, got {counts.tolist()}")
    if counts.max(initial=0) > values.shape[1]:
        raise _where(
            name,
            f"lengths {counts.tolist()} exceed the {values.shape[1]} frames of the logits. "
            "Fix: pass the frame lengths the model returns.",
        )
    return values, counts


def ctc_greedy_decode(
    logits: Any, lengths: Any = None, *, blank_id: int = 0, merge_repeated: bool = True
) -> list[list[int]]:
    """Best class per frame, repeats merged, blanks removed: one list of ids per sequence.

    Args:
        logits: ``(batch, frames, classes)`` scores or log-probabilities.
        lengths: ``(batch,)`` real frames per sequence (default: all).
        blank_id: the blank class.
        merge_repeated: merge runs of the same class (CTC's rule); False keeps them.

    Example:
        >>> import numpy as np, nnfun as nf
        >>> best = np.array([[0, 1, 1, 0, 1, 2, 2]])  # blank a a blank a b b
        >>> nf.train.ctc_greedy_decode(np.eye(3)[best])
        [[1, 1, 2]]
    """
    values, counts = _batch("ctc_greedy_decode", logits, lengths)
    out = []
    for row, n in zip(values.argmax(-1), counts, strict=True):
        ids, previous = [], -1
        for c in row[:n].tolist():
            if c != blank_id and not (merge_repeated and c == previous):
                ids.append(c)
            previous = c
        out.append(ids)
    return out


def ctc_prefix_beam_search(
    log_probs: Any, *, beam_width: int = 8, blank_id: int = 0, merge_repeated: bool = True
) -> list[tuple[tuple[int, ...], float]]:
    """Prefix beam search over one utterance's ``(frames, classes)`` log-probabilities.

    Keeps the ``beam_width`` most likely label prefixes, each with the total
    probability of the paths ending in a blank and of those ending in a label,
    so that paths which collapse to the same labels are summed (Hannun et al.).

    Returns:
        ``[(labels, log_probability), ...]``, best first, at most ``beam_width``.
    """
    lp = np.asarray(log_probs, np.float64)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -np.inf)}
    for frame in lp:
        following: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_label) in beams.items():
            total = float(np.logaddexp(p_blank, p_label))
            _add(following, prefix, 0, total + frame[blank_id])
            for c in range(len(frame)):
                if c == blank_id:
                    continue
                if merge_repeated and prefix and prefix[-1] == c:
                    _add(following, prefix, 1, p_label + frame[c])  # merges into the last label
                    _add(following, (*prefix, c), 1, p_blank + frame[c])  # after a blank: new
                else:
                    _add(following, (*prefix, c), 1, total + frame[c])
        ranked = sorted(following.items(), key=lambda kv: -np.logaddexp(kv[1][0], kv[1][1]))
        beams = {prefix: (v[0], v[1]) for prefix, v in ranked[:beam_width]}
    return [(prefix, float(np.logaddexp(b, n))) for prefix, (b, n) in beams.items()]


def _add(
    beams: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], slot: int, value: float
) -> None:
    """Adds probability ``exp(value)`` to slot 0 (ends in blank) or 1 (in a label) of ``prefix``."""
    entry = beams.setdefault(prefix, [-np.inf, -np.inf])
    entry[slot] = float(np.logaddexp(entry[slot], value))


def ctc_beam_search(
    logits: Any,
    lengths: Any = None,
    *,
    beam_width: int = 8,
    blank_id: int = 0,
    merge_repeated: bool = True,
) -> list[list[int]]:
    """The most likely label sequence of each utterance by prefix beam search.

    Args:
        logits: ``(batch, frames, classes)`` scores (log-softmax is applied).
        lengths: ``(batch,)`` real frames per sequence (default: all).
        beam_width: prefixes kept per frame; 1 is close to greedy decoding.
        blank_id: the blank class.
        merge_repeated: CTC's rule (repeats without a blank between merge).

    Example:
        >>> import numpy as np, nnfun as nf
        >>> probs = np.array([[[0.6, 0.4], [0.6, 0.4]]])  # P("") = 0.36, P("1") = 0.64
        >>> nf.train.ctc_greedy_decode(np.log(probs)), nf.train.ctc_beam_search(np.log(probs))
        ([[]], [[1]])
    """
    if not (isinstance(beam_width, int) and beam_width >= 1):
        raise _where("ctc_beam_search", f"beam_width must be an int >= 1, got {beam_width!r}")
    values, counts = _batch("ctc_beam_search", logits, lengths)
    out = []
    for row, n in zip(_log_probs(values), counts, strict=True):
        best = ctc_prefix_beam_search(
            row[:n], beam_width=beam_width, blank_id=blank_id, merge_repeated=merge_repeated
        )
        out.append(list(best[0][0]))
    return out


def edit_distance(reference: Any, hypothesis: Any) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions.

    Example:
        >>> import nnfun as nf
        >>> nf.train.edit_distance("kitten", "sitting"), nf.train.edit_distance([1, 2], [2])
        (3, 1)
    """
    ref, hyp = list(reference), list(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def _rate(name: str, references: list[Any], hypotheses: list[Any]) -> float:
    if len(references) != len(hypotheses) or not references:
        raise _where(
            name,
            f"needs as many hypotheses as references (at least one), got {len(references)} "
            f"references and {len(hypotheses)} hypotheses",
        )
    errors = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    return errors / max(1, sum(len(r) for r in references))


def character_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Total character edit distance over the total reference length (a corpus CER).

    Example:
        >>> import nnfun as nf
        >>> nf.train.character_error_rate(["one two"], ["one too"])
        0.14285714285714285
    """
    return _rate("character_error_rate", list(references), list(hypotheses))


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Total word edit distance (words split at whitespace) over the reference words.

    Example:
        >>> import nnfun as nf
        >>> nf.train.word_error_rate(["one two three"], ["one too three four"])
        0.6666666666666666
    """
    return _rate(
        "word_error_rate", [r.split() for r in references], [h.split() for h in hypotheses]
    )
