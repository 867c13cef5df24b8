"""Spoken digit strings, synthesized offline with eSpeak NG.

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its voice data; we load
the library with ``ctypes`` (``pip install "nnfun[speech]"``; eSpeak NG is
GPL-3.0-or-later, the wheel MIT). Its output is not bit-identical from run to
run (a few samples shift), so a generated set is cached on disk under a hash
of its settings and reused: the same settings give the same arrays for as long
as the cache file lives.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import pathlib
import tempfile
from typing import Any

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Characters of the transcripts; label id ``i + 1`` is ``SPEECH_ALPHABET[i]``, 0 is the CTC blank.
SPEECH_ALPHABET = " efghinorstuvwxz"
ACCENTS = ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc")
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4",
    "klatt", "klatt2", "klatt3", "klatt4", "croak", "whisper",
)  # fmt: skip
TEST_VARIANTS = ("m3", "f2", "klatt3")
SAMPLE_RATE = 16000
_CACHE_VERSION = 1


def _where(text: str) -> str:
    return f"nnfun.data.spoken_digits: {text}"


def speech_encode(text: str) -> np.ndarray:
    """Label ids (1.., blank 0 unused) of a transcript made of :data:`SPEECH_ALPHABET` characters.

    Example:
        >>> from nnfun.data import speech_decode, speech_encode
        >>> speech_encode("one two").tolist(), speech_decode(speech_encode("one two"))
        ([8, 7, 2, 1, 11, 14, 8], 'one two')
    """
    bad = sorted(set(text) - set(SPEECH_ALPHABET))
    if bad:
        raise ValueError(_where(f"characters {bad} are not in the alphabet {SPEECH_ALPHABET!r}"))
    return np.array([SPEECH_ALPHABET.index(c) + 1 for c in text], np.int32)


def speech_decode(ids: Any) -> str:
    """The transcript of label ids (blank 0 and out-of-range ids are skipped)."""
    return "".join(
        SPEECH_ALPHABET[i - 1] for i in (int(i) for i in ids) if 1 <= i <= len(SPEECH_ALPHABET)
    )


@dataclasses.dataclass(frozen=True, eq=False)  # arrays: compare fields yourself
class Utterances:
    """Utterances of one split, audio stored flat (``samples[offsets[i]:offsets[i + 1]]``).

    Attributes:
        samples: every waveform one after another, float32 at 16 kHz.
        offsets: ``(n + 1,)`` int64 start of each utterance in ``samples``.
        labels: ``(n, max_labels)`` int32 character ids (see :data:`SPEECH_ALPHABET`), 0-padded.
        label_lengths: ``(n,)`` int32.
        texts: the transcripts ("three one four").
        digits: the digit strings ("314").
        voices: the eSpeak voice of each utterance ("en-us+m3").
    """

    samples: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    label_lengths: np.ndarray
    texts: tuple[str, ...]
    digits: tuple[str, ...]
    voices: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def lengths(self) -> np.ndarray:
        """``(n,)`` samples per utterance."""
        return np.diff(self.offsets).astype(np.int32)

    def audio(self, i: int) -> np.ndarray:
        """The waveform of utterance ``i``."""
        return self.samples[self.offsets[i] : self.offsets[i + 1]]

    def batch(self, indices: Any, pad_to: int | None = None) -> dict[str, np.ndarray]:
        """``{"audio", "lengths", "labels", "label_lengths"}`` of ``indices``, zero-padded.

        Audio is padded to ``pad_to`` samples (default: the longest in the batch
        rounded up to a multiple of 4,000, so few shapes compile).
        """
        indices = np.asarray(indices)
        lengths = self.lengths[indices]
        longest = int(lengths.max())
        width = pad_to if pad_to is not None else -(-longest // 4000) * 4000
        if width < longest:
            raise ValueError(_where(f"pad_to={pad_to} is shorter than the longest {longest}"))
        audio = np.zeros((len(indices), width), np.float32)
        for row, i in enumerate(indices):
            audio[row, : lengths[row]] = self.audio(int(i))
        return {
            "audio": audio,
            "lengths": lengths,
            "labels": self.labels[indices],
            "label_lengths": self.label_lengths[indices],
        }


def _library() -> tuple[Any, int]:
    try:
        loader = importlib.import_module("espeakng_loader")
    except ImportError as e:
        raise ImportError(
            _where(
                "eSpeak NG is not installed. Fix: pip install 'nnfun[speech]' (the "
                "espeakng-loader wheel, which ships libespeak-ng; eSpeak NG is GPL-3)."
            )
        ) from e
    return _initialised(loader.get_library_path(), loader.get_data_path())


_STATE: dict[str, Any] = {}
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def _initialised(library_path: str, data_path: str) -> tuple[Any, int]:
    if "lib" in _STATE:
        return _STATE["lib"], _STATE["rate"]
    lib = ctypes.CDLL(library_path)
    rate = lib.espeak_Initialize(2, 0, data_path.encode(), 0)  # 2: synchronous, no playback
    if rate <= 0:
        raise RuntimeError(_where(f"espeak_Initialize failed ({rate}) with data at {data_path}"))
    chunks: list[np.ndarray] = []

    def collect(wav: Any, count: int, events: Any) -> int:
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        return 0

    callback = _CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    _STATE.update(lib=lib, rate=rate, chunks=chunks, callback=callback)
    return lib, rate


def synthesize(text: str, voice: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
    """eSpeak NG's waveform of ``text`` as float32 in [-1, 1] at 16 kHz.

    Args:
        text: what to say.
        voice: an eSpeak voice name, ``"<accent>+<variant>"`` (``"en-us+f2"``).
        rate: words per minute (80 to 450).
        pitch: base pitch, 0 to 100.
    """
    lib, native_rate = _library()
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(_where(f"eSpeak NG has no voice {voice!r}; try 'en+m1' or 'en-us+f2'"))
    lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE
    lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
    chunks = _STATE["chunks"]
    chunks.clear()
    data = text.encode() + b"\0"
    lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)  # 1: POS_CHARACTER
    wave = np.concatenate(chunks).astype(np.float64) / 32768.0
    return _resample(wave, native_rate, SAMPLE_RATE).astype(np.float32)


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by truncating (or zero-extending) the spectrum."""
    n = len(wave)
    m = round(n * target / rate)
    spectrum = np.fft.rfft(wave)[: m // 2 + 1]
    return np.fft.irfft(spectrum, n=m) * (m / n)


@dataclasses.dataclass(frozen=True)
class _Settings:
    n_train: int
    n_test: int
    seed: int
    min_digits: int
    max_digits: int
    oh_probability: float
    accents: tuple[str, ...]
    train_variants: tuple[str, ...]
    test_variants: tuple[str, ...]
    rates: tuple[int, int]
    pitches: tuple[int, int]
    snr_db: tuple[float, float]


def _check(settings: _Settings) -> None:
    s = settings
    if not 1 <= s.min_digits <= s.max_digits:
        raise ValueError(_where(f"need 1 <= min_digits <= max_digits, got {s.min_digits}, "
                                f"{s.max_digits}"))  # fmt: skip
    shared = sorted(set(s.train_variants) & set(s.test_variants))
    if shared or not s.train_variants or not s.test_variants:
        raise ValueError(
            _where(
                f"train and test voices must be non-empty and disjoint (the test voices are "
                f"never heard in training), got the variants {shared} in both"
            )
        )
    if s.n_train < 0 or s.n_test < 0 or not 0 <= s.oh_probability <= 1:
        raise ValueError(_where("n_train, n_test must be >= 0 and oh_probability in [0, 1]"))


def _generate(settings: _Settings) -> dict[str, Utterances]:
    rng = np.random.default_rng(settings.seed)
    out = {}
    for split, n, variants in (
        ("train", settings.n_train, settings.train_variants),
        ("test", settings.n_test, settings.test_variants),
    ):
        voices = [f"{a}+{v}" for a in settings.accents for v in variants]
        out[split] = _split(rng, n, voices, settings)
    return out


def _split(rng: np.random.Generator, n: int, voices: list[str], s: _Settings) -> Utterances:
    waves, texts, digits, chosen = [], [], [], []
    for _ in range(n):
        count = int(rng.integers(s.min_digits, s.max_digits + 1))
        number = "".join(str(d) for d in rng.integers(0, 10, count))
        words = [
            "oh" if d == "0" and rng.random() < s.oh_probability else WORDS[int(d)] for d in number
        ]
        voice = voices[int(rng.integers(len(voices)))]
        wave = synthesize(
            " ".join(words),
            voice,
            rate=int(rng.integers(s.rates[0], s.rates[1] + 1)),
            pitch=int(rng.integers(s.pitches[0], s.pitches[1] + 1)),
        )
        wave = wave * rng.uniform(0.3, 0.9) / max(1e-6, float(np.abs(wave).max()))
        power = float(np.mean(wave**2)) / 10 ** (rng.uniform(*s.snr_db) / 10)
        wave = wave + rng.normal(0.0, np.sqrt(power), len(wave)).astype(np.float32)
        waves.append(wave.astype(np.float32))
        texts.append(" ".join(words))
        digits.append(number)
        chosen.append(voice)
    encoded = [speech_encode(t) for t in texts]
    labels = np.zeros((n, max((len(e) for e in encoded), default=0)), np.int32)
    for row, e in enumerate(encoded):
        labels[row, : len(e)] = e
    return Utterances(
        samples=np.concatenate(waves) if waves else np.zeros(0, np.float32),
        offsets=np.concatenate([[0], np.cumsum([len(w) for w in waves])]).astype(np.int64),
        labels=labels,
        label_lengths=np.array([len(e) for e in encoded], np.int32),
        texts=tuple(texts),
        digits=tuple(digits),
        voices=tuple(chosen),
    )


def cache_directory(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """``cache_dir``, else ``$NNFUN_CACHE_DIR``, else ``~/.cache/nnfun``."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir)
    env = os.environ.get("NNFUN_CACHE_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "nnfun"


def _cache_path(settings: _Settings, directory: pathlib.Path) -> pathlib.Path:
    try:
        version = importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    text = json.dumps([_CACHE_VERSION, version, dataclasses.asdict(settings)], sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return directory / f"spoken_digits-{digest}.npz"


def _save(path: pathlib.Path, data: dict[str, Utterances]) -> None:
    arrays: dict[str, Any] = {}
    for split, u in data.items():
        for field in dataclasses.fields(u):
            arrays[f"{split}/{field.name}"] = np.asarray(getattr(u, field.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: pathlib.Path) -> dict[str, Utterances]:
    with np.load(path, allow_pickle=False) as f:
        out = {}
        for split in ("train", "test"):
            values = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(split + "/")}
            for name in ("texts", "digits", "voices"):
                values[name] = tuple(str(t) for t in values[name])
            out[split] = Utterances(**values)
    return out


def spoken_digits(
    n_train: int = 3000,
    n_test: int = 600,
    *,
    seed: int = 0,
    min_digits: int = 1,
    max_digits: int = 7,
    oh_probability: float = 0.0,
    accents: tuple[str, ...] = ACCENTS,
    test_variants: tuple[str, ...] = TEST_VARIANTS,
    train_variants: tuple[str, ...] | None = None,
    rates: tuple[int, int] = (130, 220),
    pitches: tuple[int, int] = (25, 75),
    snr_db: tuple[float, float] = (10.0, 40.0),
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
) -> dict[str, Utterances]:
    """Utterances of digit strings ("three one four") synthesized with eSpeak NG, split by voice.

    A voice is an accent and a variant (``"en-us+f2"``); the test split uses
    only ``test_variants`` and the training split only the other variants, so no
    test voice is heard in training. Each utterance draws its digits, voice,
    speaking rate and pitch, is scaled to a random peak in [0.3, 0.9], and gets
    white noise at a random signal-to-noise ratio in ``snr_db``.

    Args:
        n_train, n_test: utterances per split.
        seed: seeds every draw.
        min_digits, max_digits: digits per utterance.
        oh_probability: how often a zero is said "oh".
        accents: eSpeak English accents used by both splits.
        test_variants: voice variants of the test split.
        train_variants: those of the training split (default: the rest of :data:`VARIANTS`).
        rates: words per minute, inclusive range.
        pitches: eSpeak base pitch (0-100), inclusive range.
        snr_db: signal-to-noise ratio range in dB.
        cache_dir: where the generated set is cached (default ``$NNFUN_CACHE_DIR``,
            else ``~/.cache/nnfun``), under a hash of the settings.
        cache: read and write the cache; False regenerates every call.

    Returns:
        ``{"train": Utterances, "test": Utterances}`` at 16 kHz, labels over
        :data:`SPEECH_ALPHABET` (ids 1.., 0 left for the CTC blank).
    """
    if train_variants is None:
        train_variants = tuple(v for v in VARIANTS if v not in test_variants)
    settings = _Settings(
        n_train, n_test, seed, min_digits, max_digits, float(oh_probability),
        tuple(accents), tuple(train_variants), tuple(test_variants),
        (int(rates[0]), int(rates[1])), (int(pitches[0]), int(pitches[1])),
        (float(snr_db[0]), float(snr_db[1])),
    )  # fmt: skip
    _check(settings)
    path = _cache_path(settings, cache_directory(cache_dir))
    if cache and path.exists():
        return _load(path)
    data = _generate(settings)
    if cache:
        _save(path, data)
    return data
