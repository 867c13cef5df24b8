"""Character-level text data: the stdlib's pydoc topics, a tokenizer, splits and batches."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def pydoc_text() -> str:
    """English text shipped with Python: every topic of ``pydoc_data.topics``.

    The topics (the language reference pages that ``help("if")`` shows) are joined
    in sorted order of their names, separated by a blank line, so the result is
    the same on every call. It is about 465,000 characters and about 100 distinct
    characters on Python 3.11; the exact text depends on the Python version.

    Returns:
        The joined text, a ``str``.

    Example:
        >>> import nnfun.data as nd
        >>> text = nd.pydoc_text()
        >>> len(text) > 100_000, "assert" in text
        (True, True)
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def _codepoints(text: str) -> np.ndarray:
    # UTF-32 is one fixed-width code unit per character, so this is a copy-free view.
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


@dataclasses.dataclass(frozen=True)
class CharTokenizer:
    """Maps each character of a fixed vocabulary to its index, and back.

    Frozen and hashable. Build one from a corpus with :meth:`from_text`, which
    sorts the distinct characters. Encoding and decoding are vectorised NumPy.

    Args:
        vocab: the characters, one per token id (a list is turned into a tuple);
            each a single character, no duplicates.

    Example:
        >>> import nnfun.data as nd
        >>> tok = nd.CharTokenizer.from_text("hello")
        >>> tok.vocab, tok.vocab_size
        (('e', 'h', 'l', 'o'), 4)
        >>> ids = tok.encode("hole")
        >>> ids.tolist(), tok.decode(ids)
        ([1, 3, 2, 0], 'hole')
    """

    vocab: tuple[str, ...]
    _codes: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
    _order: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab = tuple(self.vocab)
        if not vocab or not all(isinstance(c, str) and len(c) == 1 for c in vocab):
            raise ValueError(
                f"CharTokenizer vocab must be a non-empty sequence of single characters, "
                f"got {self.vocab!r:.200}"
            )
        if len(set(vocab)) != len(vocab):
            duplicates = sorted({c for c in vocab if vocab.count(c) > 1})
            raise ValueError(f"CharTokenizer vocab has duplicate characters {duplicates!r}")
        codes = _codepoints("".join(vocab))
        object.__setattr__(self, "vocab", vocab)
        object.__setattr__(self, "_codes", codes)
        object.__setattr__(self, "_order", np.argsort(codes).astype(np.int32))

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """A tokenizer whose vocabulary is the sorted distinct characters of ``text``."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"CharTokenizer.from_text needs a non-empty str, got {text!r:.80}")
        return cls(tuple(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """The number of token ids, ``len(vocab)``."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``: int32 ``(len(text),)``.

        Raises:
            ValueError: ``text`` holds characters outside the vocabulary (listed).
        """
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.encode expects a str, got {type(text).__name__}")
        points = _codepoints(text)
        sorted_codes = self._codes[self._order]
        slot = np.minimum(np.searchsorted(sorted_codes, points), len(sorted_codes) - 1)
        known = sorted_codes[slot] == points
        if not known.all():
            unknown = sorted({chr(p) for p in points[~known]})
            raise ValueError(
                f"CharTokenizer.encode: {len(unknown)} character(s) not in the vocabulary: "
                f"{unknown[:20]!r}. Fix: build the tokenizer from text that contains them "
                f"(CharTokenizer.from_text(corpus)) or remove them from the input."
            )
        return self._order[slot]

    def decode(self, ids: Any) -> str:
        """The text of a 1-D sequence of token ids (NumPy, JAX or a list).

        Raises:
            ValueError: ``ids`` is not 1-D integers in ``[0, vocab_size)``.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"CharTokenizer.decode expects a 1-D integer array, got shape {ids.shape} "
                f"dtype {ids.dtype}. Fix: decode one row at a time, "
                f"[tok.decode(row) for row in ids]."
            )
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(
                f"CharTokenizer.decode: ids must be in [0, {self.vocab_size}), "
                f"got {ids[bad][:10].tolist()}"
            )
        return self._codes[ids.astype(np.intp)].astype("<u4").tobytes().decode("utf-32-le")


def char_splits(
    text: str, tokenizer: CharTokenizer, val_fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``text`` and split it into a leading train and a trailing validation part.

    The split is contiguous (not shuffled) so that no validation window overlaps
    a training window except at the single boundary.

    Args:
        text: the corpus.
        tokenizer: encodes ``text``; it must cover every character.
        val_fraction: share of the ids, rounded, in the validation part; strictly
            between 0 and 1, and both parts must be non-empty.

    Returns:
        ``(train_ids, val_ids)``: int32 ``(len(text) - n_val,)`` and ``(n_val,)``
        with ``n_val = round(val_fraction * len(text))``.

    Example:
        >>> import nnfun.data as nd
        >>> text = "abcdefghij"
        >>> train, val = nd.char_splits(text, nd.CharTokenizer.from_text(text), 0.2)
        >>> train.shape, val.tolist()
        ((8,), [8, 9])
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"char_splits: val_fraction must be strictly between 0 and 1, got {val_fraction!r}"
        )
    ids = tokenizer.encode(text)
    n_val = round(val_fraction * len(ids))
    if n_val == 0 or n_val == len(ids):
        raise ValueError(
            f"char_splits: val_fraction={val_fraction} of {len(ids)} characters leaves an "
            f"empty split ({len(ids) - n_val} train, {n_val} validation). Fix: use more text "
            f"or a val_fraction nearer 0.5."
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def sequence_batch(
    ids: Any, batch_size: int, seq_len: int, rng_or_seed: Any
) -> dict[str, np.ndarray]:
    """Random windows of a token sequence with next-token targets.

    Window starts are drawn uniformly (with replacement) from every position that
    leaves room for ``seq_len + 1`` tokens; ``y`` is ``x`` shifted left by one.

    Args:
        ids: 1-D token ids, longer than ``seq_len``.
        batch_size: number of windows B.
        seq_len: window length T.
        rng_or_seed: a ``np.random.Generator`` (advanced by the call, so successive
            calls differ) or anything ``np.random.default_rng`` accepts, such as an
            int or a tuple ``(seed, step)`` (the same value gives the same batch).

    Returns:
        ``{"x": int32 (B, T), "y": int32 (B, T)}`` with ``y[:, t] == x[:, t + 1]``
        for ``t < T - 1`` and ``y[:, T - 1]`` the token after the window.

    Example:
        >>> import numpy as np, nnfun.data as nd
        >>> batch = nd.sequence_batch(np.arange(100), batch_size=2, seq_len=5, rng_or_seed=0)
        >>> batch["x"].shape, bool((batch["y"] == batch["x"] + 1).all())
        ((2, 5), True)
    """
    ids = np.asarray(ids)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"sequence_batch: {name} must be a positive int, got {value!r}")
    if ids.ndim != 1 or len(ids) <= seq_len:
        raise ValueError(
            f"sequence_batch: ids must be 1-D and longer than seq_len={seq_len} "
            f"(one extra token for the last target), got shape {ids.shape}"
        )
    rng = np.random.default_rng(rng_or_seed)
    starts = rng.integers(0, len(ids) - seq_len, size=batch_size)
    windows = ids[starts[:, None] + np.arange(seq_len + 1)[None, :]].astype(np.int32)
    return {"x": np.ascontiguousarray(windows[:, :-1]), "y": np.ascontiguousarray(windows[:, 1:])}
