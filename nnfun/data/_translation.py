"""Number translation, generated offline: English digits or words to German or French words.

The ``num2words`` package (LGPL-2.1-or-later) spells the numbers; it is imported
when :func:`number_translation` is called (``pip install "nnfun[data]"``). Both
target languages reorder and compound: 97 is "siebenundneunzig" (seven-and-
ninety) and "quatre-vingt-dix-sept" (four-twenty-ten-seven).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import re
from typing import Any, ClassVar

import numpy as np

Split = dict[str, np.ndarray]
LANGS = ("de", "fr")
SOURCES = ("digits", "words")
LEVELS = ("char", "word")
SPLITS = ("train", "valid", "test")
SPECIALS = ("<pad>", "<bos>", "<eos>")
# A word is a run of letters; each digit and each punctuation mark ("-", ",") is a
# token of its own, so digits split the same way at both levels.
_WORD_TOKENS = re.compile(r"\d|[^\W\d]+|[^\w\s]")
_ATTACHED = frozenset("-,")  # written without a space before them ("-" also without one after)


def _where(text: str) -> str:
    return f"nnfun.data.number_translation: {text}"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token ids of one side of a translation pair: PAD 0, BOS 1, EOS 2, then ``tokens``.

    Frozen and hashable. ``level="char"`` makes every character a token (spaces
    included); ``level="word"`` splits text into runs of letters and single
    punctuation marks, and :meth:`decode` puts the spaces back (none before
    "-" or ",", none after "-"), so ``decode(encode(s)) == s`` for the texts the
    dataset generates.

    Args:
        tokens: the ordinary tokens, ids 3, 4, ... in this order; no duplicates,
            none of them a special token.
        level: ``"char"`` or ``"word"``.

    Example:
        >>> import nnfun.data as nd
        >>> vocab = nd.Vocabulary(("e", "i", "n", "s"))
        >>> ids = vocab.encode("eins")
        >>> ids.tolist(), vocab.size, vocab.decode([1, *ids, 2, 0, 0])
        ([3, 4, 5, 6], 7, 'eins')
    """

    tokens: tuple[str, ...]
    level: str = "char"
    pad_id: ClassVar[int] = 0
    bos_id: ClassVar[int] = 1
    eos_id: ClassVar[int] = 2
    _ids: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokens = tuple(self.tokens)
        if self.level not in LEVELS:
            raise ValueError(f"Vocabulary: level must be one of {LEVELS}, got {self.level!r}")
        if not all(isinstance(t, str) and t for t in tokens) or set(tokens) & set(SPECIALS):
            raise ValueError(
                f"Vocabulary: tokens must be non-empty strings other than {SPECIALS}, "
                f"got {tokens!r:.200}"
            )
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"Vocabulary: duplicate tokens in {tokens!r:.200}")
        object.__setattr__(self, "tokens", tokens)
        ids = {token: i for i, token in enumerate(SPECIALS + tokens)}
        object.__setattr__(self, "_ids", ids)

    @classmethod
    def from_texts(cls, texts: Any, level: str = "char") -> Vocabulary:
        """The sorted distinct tokens of ``texts`` (an iterable of strings) at ``level``."""
        if level not in LEVELS:
            raise ValueError(f"Vocabulary: level must be one of {LEVELS}, got {level!r}")
        return cls(tuple(sorted({t for text in texts for t in _split(text, level)})), level)

    @property
    def size(self) -> int:
        """The number of ids, specials included: ``len(tokens) + 3``."""
        return len(self._ids)

    def split(self, text: str) -> list[str]:
        """The tokens of ``text`` at this vocabulary's level (no ids, no specials)."""
        return _split(text, self.level)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` without BOS or EOS: int32 ``(number of tokens,)``.

        Raises:
            ValueError: tokens outside the vocabulary (listed).
        """
        tokens = self.split(text)
        unknown = sorted({t for t in tokens if t not in self._ids or t in SPECIALS})
        if unknown:
            raise ValueError(
                f"Vocabulary.encode: {len(unknown)} token(s) not in the vocabulary: "
                f"{unknown[:20]!r}. Fix: build the vocabulary from texts that contain them "
                "(Vocabulary.from_texts)."
            )
        return np.array([self._ids[t] for t in tokens], np.int32)

    def decode(self, ids: Any) -> str:
        """The text of one row of ids: stops at the first EOS, skips PAD and BOS.

        Args:
            ids: 1-D integer ids (NumPy, JAX or a list), e.g. a row of
                ``target_outputs`` or of a decoder's output.

        Raises:
            ValueError: ``ids`` is not 1-D integers in ``[0, size)``.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(
                f"Vocabulary.decode expects a 1-D integer array, got shape {ids.shape} dtype "
                f"{ids.dtype}. Fix: vocab.decode_batch(ids) decodes every row of a 2-D array."
            )
        if ((ids < 0) | (ids >= self.size)).any():
            bad = ids[(ids < 0) | (ids >= self.size)]
            raise ValueError(f"Vocabulary.decode: ids must be in [0, {self.size}), got {bad[:10]}")
        ends = np.flatnonzero(ids == self.eos_id)
        kept = ids[: ends[0] if ends.size else len(ids)]
        every = SPECIALS + self.tokens
        return _join([every[i] for i in kept if i > self.eos_id], self.level)

    def decode_batch(self, ids: Any) -> list[str]:
        """:meth:`decode` of each row of a 2-D ``(n, length)`` array of ids."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"Vocabulary.decode_batch expects 2-D ids, got shape {ids.shape}")
        return [self.decode(row) for row in ids]


def _split(text: str, level: str) -> list[str]:
    return list(text) if level == "char" else _WORD_TOKENS.findall(text)


def _join(tokens: list[str], level: str) -> str:
    if level == "char":
        return "".join(tokens)
    pieces = tokens[:1]
    for previous, token in itertools.pairwise(tokens):
        glued = token in _ATTACHED or previous == "-" or (previous + token).isdigit()
        pieces.extend([token] if glued else [" ", token])
    return "".join(pieces)


# eq=False: comparing dicts of arrays is ambiguous, and a short repr beats printing them.
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class TranslationData:
    """What :func:`number_translation` returns: three splits and two vocabularies.

    Attributes:
        train: the training split (a dict of arrays, see :func:`number_translation`).
        valid: the validation split.
        test: the test split; none of its numbers is in ``train`` or ``valid``.
        source_vocab: ids of the source side (digits, or English at ``level``).
        target_vocab: ids of the target side; the same object as ``source_vocab``
            when the vocabulary is shared.
        lang: ``"de"`` or ``"fr"``.
    """

    train: Split
    valid: Split
    test: Split
    source_vocab: Vocabulary
    target_vocab: Vocabulary
    lang: str

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(getattr(self, name)['numbers'])}" for name in SPLITS)
        return (
            f"TranslationData(lang={self.lang!r}, {sizes}, "
            f"source={self.train['source'].shape[1]} tokens x {self.source_vocab.size} ids, "
            f"target={self.train['target_outputs'].shape[1]} tokens x "
            f"{self.target_vocab.size} ids)"
        )

    def fit_data(self, split: str) -> dict[str, Any]:
        """The ``split`` (``"train"``, ``"valid"`` or ``"test"``) laid out for ``fit``.

        Returns:
            ``{"x": {"inputs": source, "lengths": source_lengths, "decoder_inputs":
            target_inputs, "decoder_lengths": target_lengths}, "y": target_outputs}``
            (the arrays of the split, not copies): the extras that
            :class:`nnfun.models.seq2seq.EncoderDecoder` reads.
        """
        if split not in SPLITS:
            raise ValueError(
                f"TranslationData.fit_data: split must be 'train', 'valid' or 'test', got {split!r}"
            )
        arrays = getattr(self, split)
        inputs = {
            "inputs": arrays["source"],
            "lengths": arrays["source_lengths"],
            "decoder_inputs": arrays["target_inputs"],
            "decoder_lengths": arrays["target_lengths"],
        }
        return {"x": inputs, "y": arrays["target_outputs"]}


@functools.lru_cache(maxsize=65536)
def _spell(number: int, lang: str) -> str:
    # num2words takes about 0.1 ms a number; notebooks and examples ask again for the same ones.
    try:
        module = importlib.import_module("num2words")
    except ImportError as error:
        raise ImportError(
            f"nnfun.data.number_translation() needs the num2words package, which is not "
            f'installed ({error}). Fix: pip install "nnfun[data]"'
        ) from error
    return module.num2words(number, lang=lang)


def _is_count(value: Any, minimum: int) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | np.integer)
        and bool(value >= minimum)
    )


def _check_settings(
    lang: str, source: str, level: str, numbers: Any, sizes: Any, seed: Any
) -> None:
    for name, value, valid in (("lang", lang, LANGS), ("source", source, SOURCES)):
        if value not in valid:
            raise ValueError(_where(f"{name} must be one of {valid}, got {value!r}"))
    if level not in LEVELS:
        raise ValueError(_where(f"level must be one of {LEVELS}, got {level!r}"))
    if not (isinstance(numbers, tuple | list) and len(numbers) == 2):
        raise ValueError(_where(f"numbers must be a pair (low, high), got {numbers!r}"))
    low, high = numbers
    if not (_is_count(low, 0) and _is_count(high, 0) and low < high):
        raise ValueError(
            _where(
                f"numbers must be ints with 0 <= low < high (the range [low, high)), "
                f"got {numbers!r}"
            )
        )
    if not (isinstance(sizes, tuple | list) and len(sizes) == 3):
        raise ValueError(_where(f"sizes must be (train, valid, test) counts, got {sizes!r}"))
    if not (_is_count(sizes[0], 1) and _is_count(sizes[1], 0) and _is_count(sizes[2], 0)):
        raise ValueError(
            _where(f"sizes must be ints, train >= 1, valid and test >= 0, got {sizes!r}")
        )
    if sum(sizes) > high - low:
        raise ValueError(
            _where(
                f"the range [{low}, {high}) holds {high - low} numbers, fewer than the "
                f"{sum(sizes)} that sizes={tuple(sizes)} need (each number is in one split "
                "at most). Fix: widen numbers or make the splits smaller."
            )
        )
    if not _is_count(seed, 0):
        raise ValueError(_where(f"seed must be a non-negative int, got {seed!r}"))


def _pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), np.int32)  # Vocabulary.pad_id is 0
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _split_arrays(
    numbers: list[int],
    sources: list[str],
    targets: list[str],
    vocabs: tuple[Vocabulary, Vocabulary],
    widths: tuple[int, int],
) -> Split:
    source_vocab, target_vocab = vocabs
    source_ids = [source_vocab.encode(s) for s in sources]
    target_ids = [target_vocab.encode(t) for t in targets]
    bos, eos = np.int32(Vocabulary.bos_id), np.int32(Vocabulary.eos_id)
    return {
        "numbers": np.asarray(numbers, np.int64),
        "source": _pad(source_ids, widths[0]),
        "source_lengths": np.array([len(r) for r in source_ids], np.int32).reshape(-1),
        "target_inputs": _pad([np.append(bos, r) for r in target_ids], widths[1]),
        "target_outputs": _pad([np.append(r, eos) for r in target_ids], widths[1]),
        "target_lengths": np.array([len(r) + 1 for r in target_ids], np.int32).reshape(-1),
        "source_text": np.array(sources, dtype=str).reshape(-1),
        "target_text": np.array(targets, dtype=str).reshape(-1),
    }


def number_translation(
    lang: str = "de",
    *,
    source: str = "digits",
    level: str = "char",
    numbers: tuple[int, int] = (0, 10_000),
    sizes: tuple[int, int, int] = (8000, 1000, 1000),
    seed: int = 0,
    shared_vocab: bool = False,
) -> TranslationData:
    """Numbers to translate into German or French words, split by number.

    ``sum(sizes)`` distinct numbers are drawn from ``[low, high)`` with
    ``np.random.default_rng(seed)`` and dealt, in drawn order, to train, valid
    and test: a test number is never in train, so a model must learn the rules,
    not the pairs. ``num2words`` spells them (English for ``source="words"``,
    ``lang`` for the target). The vocabularies hold the distinct tokens of all
    three splits (sorted), so every string encodes; a token that only valid or
    test holds keeps its untrained embedding. German spells each number below a
    million as one word, so at ``level="word"`` most held-out German targets are
    tokens never seen in training: use ``"char"`` for German.

    Every split is a dict of NumPy arrays with n = its size:

    - ``"numbers"``: int64 ``(n,)``, the numbers.
    - ``"source"``: int32 ``(n, S)``, source ids padded with PAD (no BOS, no EOS).
      Digits are one token per digit at either level ("97" is "9", "7").
    - ``"source_lengths"``: int32 ``(n,)``, real tokens per source row.
    - ``"target_inputs"``: int32 ``(n, T)``, BOS then the target ids, then PAD
      (the decoder's input under teacher forcing).
    - ``"target_outputs"``: int32 ``(n, T)``, the target ids then EOS, then PAD
      (what the decoder predicts; ``target_inputs`` shifted left by one).
    - ``"target_lengths"``: int32 ``(n,)``, target tokens + 1, the non-PAD
      positions of both target arrays.
    - ``"source_text"``, ``"target_text"``: ``(n,)`` NumPy strings.

    S and T are the largest lengths over all three splits (T counts BOS or EOS),
    the same for every split.

    Args:
        lang: the target language, ``"de"`` or ``"fr"``.
        source: ``"digits"`` ("97") or ``"words"`` (English, "ninety-seven").
        level: ``"char"`` (every character a token, spaces included) or
            ``"word"`` (words, with "-" and "," tokens of their own).
        numbers: ``(low, high)``: numbers are drawn from ``range(low, high)``,
            ``0 <= low < high``.
        sizes: ``(train, valid, test)`` counts; train >= 1, the others >= 0, at
            most ``high - low`` in all.
        seed: a non-negative int; the same seed and settings give the same data.
        shared_vocab: one vocabulary for both sides (for tied embeddings), built
            at ``level`` from sources and targets together.

    Returns:
        A :class:`TranslationData`: ``.train``, ``.valid``, ``.test`` as above,
        ``.source_vocab`` and ``.target_vocab`` (:class:`Vocabulary`, whose
        ``decode`` turns a row of ids back into its string), and
        ``.fit_data(split)``, a split laid out as ``{"x": ..., "y": ...}``.

    Raises:
        ImportError: ``num2words`` is not installed (``pip install "nnfun[data]"``).
        ValueError: an unknown ``lang``, ``source`` or ``level``, a bad range,
            split sizes the range cannot hold, or a bad seed.

    Example:
        >>> import nnfun.data as nd
        >>> data = nd.number_translation("de", numbers=(0, 100), sizes=(60, 20, 20))
        >>> data.train["source"].shape, data.train["target_outputs"].shape
        ((60, 2), (60, 17))
        >>> data.target_vocab.decode(data.test["target_outputs"][0]) == data.test["target_text"][0]
        True
        >>> nd.number_translation("fr", numbers=(97, 98), sizes=(1, 0, 0)).train["target_text"]
        array(['quatre-vingt-dix-sept'], dtype='<U21')
    """
    _check_settings(lang, source, level, numbers, sizes, seed)
    low, high = int(numbers[0]), int(numbers[1])
    offsets = np.random.default_rng(seed).choice(high - low, size=sum(sizes), replace=False)
    drawn = [low + int(offset) for offset in offsets]
    sources = [str(n) if source == "digits" else _spell(n, "en") for n in drawn]
    targets = [_spell(n, lang) for n in drawn]
    if shared_vocab:
        shared = Vocabulary.from_texts(sources + targets, level)
        vocabs = (shared, shared)
    else:
        vocabs = (Vocabulary.from_texts(sources, level), Vocabulary.from_texts(targets, level))
    widths = (
        max(len(vocabs[0].split(s)) for s in sources),
        max(len(vocabs[1].split(t)) for t in targets) + 1,
    )
    bounds = itertools.accumulate(sizes, initial=0)
    train, valid, test = (
        _split_arrays(drawn[a:b], sources[a:b], targets[a:b], vocabs, widths)
        for a, b in itertools.pairwise(bounds)
    )
    return TranslationData(train, valid, test, vocabs[0], vocabs[1], lang)
