"""Audio front end: Spectrogram, MelSpectrogram and MFCC of ``(batch, samples)`` audio.

The spectral layers map ``(batch, samples)`` float audio to ``(batch, frames,
features)``, pure JAX, so they run inside a model, under ``jit`` and on the
accelerator. They read no extras: the number of real frames of an utterance of
``n`` samples is ``layer.frame_lengths(n)`` (ints or arrays), a closed form, which
a model passes on as the ``lengths`` extra of the frame-level layers after them
(``UtteranceNorm``, ``SpecAugment`` in ``_audio_frames.py``, ``RNN``), as
``nnfun.models.speech.CTCModel`` does.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._layer import Layer, Params, State, layer_error

MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)


def hz_to_mel(hz: np.ndarray | float, scale: str) -> np.ndarray:
    """Hertz to mels: HTK ``2595 log10(1 + f/700)``; Slaney linear below 1 kHz, log above."""
    hz = np.asarray(hz, np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = hz / (200.0 / 3.0)
    logstep = math.log(6.4) / 27.0
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / logstep
    return np.where(hz >= 1000.0, log, linear)


def mel_to_hz(mel: np.ndarray | float, scale: str) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    logstep = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(logstep * (mel - 15.0)), mel * 200.0 / 3.0)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "slaney",
    norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular mel filters, ``(n_fft // 2 + 1, n_mels)`` float32 (weights per FFT bin).

    Example:
        >>> from nnfun.layers._audio import mel_filterbank
        >>> mel_filterbank(16000, 400, 40).shape
        (201, 40)
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mels = np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2)
    edges = mel_to_hz(mels, scale)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= 2.0 / (upper - lower)
    return weights.T.astype(np.float32)


def _check_audio(layer: Layer, audio: Any, n_fft: int) -> None:
    shape = tuple(jnp.shape(audio))
    if len(shape) != 2:
        raise layer_error(
            layer,
            f"expected audio of shape (batch, samples), got shape {shape}. Fix: add a batch "
            "axis with audio[None] (one utterance) or pad utterances into one array.",
        )
    if not jnp.issubdtype(audio.dtype, jnp.floating):
        raise layer_error(
            layer,
            f"expected floating-point audio in [-1, 1], got dtype {audio.dtype}. Fix: "
            "audio.astype(jnp.float32) / 32768 for 16-bit PCM.",
        )
    if shape[1] < n_fft:
        raise layer_error(
            layer,
            f"audio of {shape[1]} samples is shorter than one frame (n_fft={n_fft}). Fix: "
            "pad the audio or use a smaller n_fft.",
        )


class Spectrogram(Layer):
    """Short-time Fourier transform power (or magnitude) of ``(batch, samples)`` audio.

    Frame ``t`` covers samples ``[t * hop_length, t * hop_length + n_fft)`` of the
    audio (zero-padded by ``n_fft // 2`` on both sides when ``center``), times a
    periodic Hann window of ``win_length`` samples centred in the frame.

    Args:
        n_fft: FFT size (samples per frame).
        hop_length: samples between frame starts; at most ``win_length``.
        win_length: window size, at most ``n_fft``; default ``n_fft``.
        power: 2.0 for power, 1.0 for magnitude (``|X| ** power``).
        center: pad ``n_fft // 2`` zeros at both ends, so frame ``t`` is centred
            on sample ``t * hop_length``.

    Shapes: ``(batch, samples) -> (batch, frames, n_fft // 2 + 1)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> spec = nf.Spectrogram(n_fft=400, hop_length=160)
        >>> y, _ = spec.apply({}, {}, jnp.zeros((2, 16000)))
        >>> y.shape, spec.frame_lengths(16000)
        ((2, 101, 201), 101)
    """

    n_fft: int = 400
    hop_length: int = 160
    win_length: int | None = None
    power: float = 2.0
    center: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        win = self.window_length
        if not (isinstance(self.n_fft, int) and self.n_fft >= 2):
            raise ValueError(f"{name}: n_fft must be an int >= 2, got {self.n_fft!r}")
        if not 1 <= win <= self.n_fft:
            raise ValueError(f"{name}: win_length must lie in [1, n_fft={self.n_fft}], got {win}")
        if not 1 <= self.hop_length <= win:
            raise ValueError(
                f"{name}: hop_length={self.hop_length} must lie in [1, win_length={win}]: a hop "
                "larger than the window skips samples. Fix: a smaller hop_length or a longer "
                "window (e.g. hop 160 with window 400 at 16 kHz)."
            )
        if not self.power > 0:
            raise ValueError(f"{name}: power must be positive (2.0 power, 1.0 magnitude)")

    @property
    def window_length(self) -> int:
        """The window size in samples (``win_length`` or ``n_fft``)."""
        return self.n_fft if self.win_length is None else self.win_length

    def window(self) -> np.ndarray:
        """The periodic Hann window, zero-padded (centred) to ``n_fft`` samples."""
        win = self.window_length
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
        left = (self.n_fft - win) // 2
        return np.pad(hann, (left, self.n_fft - win - left)).astype(np.float32)

    def frame_lengths(self, lengths: Any) -> Any:
        """Frames made from ``lengths`` samples (an int or an int array), at least 1."""
        if self.center:
            return 1 + lengths // self.hop_length
        xp = jnp if isinstance(lengths, jax.Array) else np
        return xp.maximum(1, 1 + (lengths - self.n_fft) // self.hop_length)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        _check_audio(self, x, self.n_fft)
        return {}, {}

    def frames(self, audio: jax.Array) -> jax.Array:
        """Windowed frames ``(batch, frames, n_fft)`` of ``(batch, samples)`` audio."""
        _check_audio(self, audio, self.n_fft)
        if self.center:
            half = self.n_fft // 2
            audio = jnp.pad(audio, ((0, 0), (half, half)))
        count = 1 + (audio.shape[1] - self.n_fft) // self.hop_length
        starts = np.arange(count)[:, None] * self.hop_length
        index = starts + np.arange(self.n_fft)[None, :]
        return audio[:, index] * jnp.asarray(self.window(), audio.dtype)[None, None, :]

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        spectrum = jnp.abs(jnp.fft.rfft(self.frames(x), axis=-1))
        y = spectrum**2 if self.power == 2.0 else spectrum**self.power
        return y.astype(x.dtype), state


class MelSpectrogram(Spectrogram):
    """A :class:`Spectrogram` through triangular mel filters, optionally as a log.

    Args (besides those of :class:`Spectrogram`):
        sample_rate: audio samples per second.
        n_mels: number of mel bands.
        f_min, f_max: the band edges in Hz (``f_max`` default ``sample_rate / 2``).
        mel_scale: ``"slaney"`` (linear below 1 kHz, logarithmic above; librosa's
            default) or ``"htk"`` (``2595 log10(1 + f / 700)``).
        mel_norm: ``"slaney"`` (each filter scaled to unit area) or None (peak 1).
        log: return ``log(max(mel, log_floor))``.
        log_floor: the floor before the log, which keeps silence finite.

    Shapes: ``(batch, samples) -> (batch, frames, n_mels)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> mel = nf.MelSpectrogram(n_mels=40)
        >>> y, _ = mel.apply({}, {}, jnp.zeros((2, 8000)))
        >>> y.shape, float(y.min()) == float(jnp.log(1e-6))
        ((2, 51, 40), True)
    """

    sample_rate: int = 16000
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    mel_scale: str = "slaney"
    mel_norm: str | None = "slaney"
    log: bool = True
    log_floor: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.mel_scale not in MEL_SCALES or self.mel_norm not in MEL_NORMS:
            raise ValueError(
                f"{name}: mel_scale must be one of {MEL_SCALES} and mel_norm one of "
                f"{MEL_NORMS}, got {self.mel_scale!r} and {self.mel_norm!r}"
            )
        top = self.sample_rate / 2 if self.f_max is None else self.f_max
        if not 0 <= self.f_min < top <= self.sample_rate / 2:
            raise ValueError(
                f"{name}: need 0 <= f_min < f_max <= sample_rate / 2 = {self.sample_rate / 2}, "
                f"got f_min={self.f_min}, f_max={self.f_max}"
            )
        if not self.log_floor > 0:
            raise ValueError(f"{name}: log_floor must be positive, got {self.log_floor}")

    def filterbank(self) -> np.ndarray:
        """The ``(n_fft // 2 + 1, n_mels)`` filter weights."""
        return mel_filterbank(
            self.sample_rate,
            self.n_fft,
            self.n_mels,
            self.f_min,
            self.f_max,
            self.mel_scale,
            self.mel_norm,
        )

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        spectrum, _ = super().apply(params, state, x)
        weights = jnp.asarray(self.filterbank(), spectrum.dtype)
        mel = jnp.einsum("btf,fm->btm", spectrum, weights, precision="highest")
        if self.log:
            mel = jnp.log(jnp.maximum(mel, self.log_floor))
        return mel, state


def dct_matrix(n_mels: int, n_mfcc: int) -> np.ndarray:
    """The orthonormal DCT-II as a ``(n_mels, n_mfcc)`` matrix (``log_mel @ matrix``)."""
    n = np.arange(n_mels)[:, None]
    k = np.arange(n_mfcc)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


class MFCC(MelSpectrogram):
    """Mel-frequency cepstral coefficients: the orthonormal DCT-II of the log mel spectrogram.

    Takes the settings of :class:`MelSpectrogram` (``log`` must stay True) and
    ``n_mfcc``, the coefficients kept (at most ``n_mels``).

    Shapes: ``(batch, samples) -> (batch, frames, n_mfcc)``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> nf.MFCC(n_mfcc=13, n_mels=40).apply({}, {}, jnp.zeros((1, 4000)))[0].shape
        (1, 26, 13)
    """

    n_mfcc: int = 13

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.log or not 1 <= self.n_mfcc <= self.n_mels:
            raise ValueError(
                f"MFCC: needs log=True and 1 <= n_mfcc <= n_mels={self.n_mels}, got "
                f"log={self.log}, n_mfcc={self.n_mfcc}"
            )

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        log_mel, _ = super().apply(params, state, x)
        basis = jnp.asarray(dct_matrix(self.n_mels, self.n_mfcc), log_mel.dtype)
        return jnp.einsum("btm,mk->btk", log_mel, basis, precision="highest"), state
