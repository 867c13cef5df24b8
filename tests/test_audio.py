"""Audio front end against NumPy written from the formulas (float64, 1e-5 relative)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf


def _hann(n):
    return np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / n) for i in range(n)])


def _stft_power(audio, n_fft, hop, win, power, center):
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = _hann(win)
    if center:
        audio = np.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)))
    frames = []
    start = 0
    while start + n_fft <= audio.shape[1]:
        chunk = audio[:, start : start + n_fft] * window
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)
        dft = np.exp(-2j * np.pi * np.outer(n, k) / n_fft)  # the DFT sum, written out
        frames.append(np.abs(chunk @ dft) ** power)
        start += hop
    return np.stack(frames, axis=1)


def _mel(hz, htk):
    if htk:
        return 2595 * np.log10(1 + hz / 700)
    return hz * 3 / 200 if hz < 1000 else 15 + 27 * np.log(hz / 1000) / np.log(6.4)


def _hz(mel, htk):
    if htk:
        return 700 * (10 ** (mel / 2595) - 1)
    return mel * 200 / 3 if mel < 15 else 1000 * 6.4 ** ((mel - 15) / 27)


def _filters(sr, n_fft, n_mels, htk, norm, fmin=0.0, fmax=None):
    fmax = sr / 2 if fmax is None else fmax
    lo, hi = _mel(fmin, htk), _mel(fmax, htk)
    edges = [_hz(lo + (hi - lo) * i / (n_mels + 1), htk) for i in range(n_mels + 2)]
    freqs = [sr * k / n_fft for k in range(n_fft // 2 + 1)]
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        a, b, c = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if a < f <= b:
                out[k, m] = (f - a) / (b - a)
            elif b < f < c:
                out[k, m] = (c - f) / (c - b)
            if norm:
                out[k, m] *= 2 / (c - a)
    return out


def _close(actual, expected, rtol=1e-5):
    expected = np.asarray(expected)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=rtol, atol=rtol * scale
    )


@pytest.fixture
def audio():
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(4000)
    return np.stack([tone, 0.3 * rng.standard_normal(4000)]).astype(np.float32)


@pytest.mark.parametrize(
    "n_fft,hop,win,power,center",
    [(400, 160, None, 2.0, True), (512, 128, 400, 1.0, False), (256, 256, 256, 2.0, False)],
)
def test_spectrogram_matches_the_dft(audio, n_fft, hop, win, power, center):
    layer = nf.Spectrogram(n_fft=n_fft, hop_length=hop, win_length=win, power=power, center=center)
    y, _ = jax.jit(lambda a: layer.apply({}, {}, a))(audio)
    expected = _stft_power(audio.astype(np.float64), n_fft, hop, win or n_fft, power, center)
    assert y.shape == expected.shape and y.dtype == jnp.float32
    _close(y, expected)
    assert int(layer.frame_lengths(audio.shape[1])) == expected.shape[1]


@pytest.mark.parametrize("scale,norm", [("slaney", "slaney"), ("htk", None), ("htk", "slaney")])
def test_mel_filterbank_matches_the_formula(scale, norm):
    from nnfun.layers._audio import mel_filterbank

    got = mel_filterbank(16000, 512, 40, 20.0, 7600.0, scale, norm)
    _close(got, _filters(16000, 512, 40, scale == "htk", norm, 20.0, 7600.0))


def test_mel_scales_at_known_points():
    from nnfun.layers._audio import hz_to_mel, mel_to_hz

    assert float(hz_to_mel(1000.0, "slaney")) == pytest.approx(15.0)
    assert float(hz_to_mel(500.0, "slaney")) == pytest.approx(7.5)
    assert float(hz_to_mel(6400.0, "slaney")) == pytest.approx(42.0)  # 15 + 27 log(6.4)/log(6.4)
    assert float(hz_to_mel(700.0, "htk")) == pytest.approx(2595 * np.log10(2))
    f = np.array([0.0, 300.0, 999.0, 1000.0, 5000.0, 8000.0])
    for scale in ("slaney", "htk"):
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, atol=1e-6)


@pytest.mark.parametrize("scale,norm,log", [("slaney", "slaney", True), ("htk", None, False)])
def test_mel_spectrogram_matches_numpy(audio, scale, norm, log):
    layer = nf.MelSpectrogram(
        n_fft=400, hop_length=160, n_mels=40, mel_scale=scale, mel_norm=norm, log=log
    )
    y, _ = layer.apply({}, {}, audio)
    mel = _stft_power(audio.astype(np.float64), 400, 160, 400, 2.0, True) @ _filters(
        16000, 400, 40, scale == "htk", norm
    )
    expected = np.log(np.maximum(mel, 1e-6)) if log else mel
    _close(y, expected)


def test_log_floor_keeps_silence_finite():
    y, _ = nf.MelSpectrogram(n_mels=20, log_floor=1e-4).apply({}, {}, jnp.zeros((1, 1600)))
    np.testing.assert_allclose(y, np.log(1e-4), rtol=1e-6)


def test_mfcc_is_the_orthonormal_dct_of_log_mel(audio):
    layer = nf.MFCC(n_mfcc=13, n_mels=40)
    y, _ = layer.apply({}, {}, audio)
    mel = _stft_power(audio.astype(np.float64), 400, 160, 400, 2.0, True) @ _filters(
        16000, 400, 40, False, "slaney"
    )
    log_mel = np.log(np.maximum(mel, 1e-6))
    m = 40
    expected = np.zeros(log_mel.shape[:2] + (13,))
    for k in range(13):
        scale = np.sqrt(1 / m) if k == 0 else np.sqrt(2 / m)
        for n in range(m):
            expected[..., k] += log_mel[..., n] * np.cos(np.pi * k * (n + 0.5) / m) * scale
    _close(y, expected)


def test_frame_lengths_match_the_frames_of_each_utterance():
    for center in (True, False):
        layer = nf.MelSpectrogram(n_fft=400, hop_length=160, n_mels=8, center=center)
        for n in (400, 401, 559, 560, 1600, 3333):
            spec = jax.ShapeDtypeStruct((1, n), jnp.float32)
            y = jax.eval_shape(lambda a, layer=layer: layer.apply({}, {}, a)[0], spec)
            assert int(layer.frame_lengths(n)) == y.shape[1]
    lengths = jnp.array([1600, 800])
    assert layer.frame_lengths(lengths).tolist() == [8, 3]


def test_utterance_norm_uses_only_real_frames():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7, 4)).astype(np.float32) * 3 + 2
    lengths = np.array([7, 4, 1])
    y, _ = nf.UtteranceNorm().apply({}, {}, {"inputs": jnp.asarray(x), "lengths": lengths})
    for b, n in enumerate(lengths):
        real = x[b, :n]
        expected = (real - real.mean(0)) / np.sqrt(real.var(0) + 1e-5)
        np.testing.assert_allclose(y[b, :n], expected, rtol=1e-5, atol=1e-5)
        assert (np.asarray(y[b, n:]) == 0).all()
    # Garbage in the padding changes nothing.
    x2 = x.copy()
    x2[1, 4:] = 1e3
    y2, _ = nf.UtteranceNorm().apply({}, {}, {"inputs": jnp.asarray(x2), "lengths": lengths})
    np.testing.assert_allclose(y2, y, atol=1e-6)


def test_spec_augment_masks_inside_real_frames_and_is_keyed():
    aug = nf.SpecAugment(freq_masks=2, freq_width=5, time_masks=2, time_width=4)
    x = jnp.ones((16, 30, 20))
    lengths = jnp.array([30, 10] * 8)
    inp = {"inputs": x, "lengths": lengths}
    run = jax.jit(lambda i, k: aug.apply({}, {}, i, key=k, train=True)[0])
    y, y_again, y_other = (run(inp, jax.random.key(s)) for s in (0, 0, 1))
    assert (y == y_again).all() and not (y == y_other).all()
    dropped = np.asarray(y == 0)
    # A frame is masked when every feature is; a band when every frame is.
    frames = dropped.all(2)
    assert not frames[1::2, 10:].any()  # time masks stay inside the 10 real frames
    assert frames.sum(1).max() <= 8 and frames.sum() > 0
    bands = dropped.all(1)
    assert bands.sum(1).max() <= 10 and bands.sum() > 0
    # Every dropped entry lies in a dropped frame or a dropped band (the masks are bands).
    assert (dropped == (frames[:, :, None] | bands[:, None, :])).all()
    assert (aug.apply({}, {}, inp, train=False)[0] == x).all()
    with pytest.raises(nf.LayerError, match="key"):
        aug.apply({}, {}, inp, train=True)


def test_front_end_runs_inside_a_jitted_model(audio):
    model = nf.Sequential([nf.MelSpectrogram(n_mels=16), nf.UtteranceNorm(), nf.Dense(3)])
    params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((2, 4000), jnp.float32))
    y, _ = jax.jit(lambda p, a: model.apply(p, state, a))(params, audio)
    assert y.shape == (2, 26, 3)


def test_bad_audio_and_settings_raise_clear_errors(audio):
    mel = nf.MelSpectrogram(n_mels=8)
    with pytest.raises(nf.LayerError, match=r"\(batch, samples\).*audio\[None\]"):
        mel.apply({}, {}, jnp.zeros(4000))
    with pytest.raises(nf.LayerError, match="floating-point.*32768"):
        mel.apply({}, {}, jnp.zeros((1, 4000), jnp.int16))
    with pytest.raises(nf.LayerError, match="shorter than one frame"):
        mel.apply({}, {}, jnp.zeros((1, 100)))
    with pytest.raises(ValueError, match="hop_length=500 must lie in.*larger than the window"):
        nf.Spectrogram(n_fft=512, hop_length=500, win_length=400)
    with pytest.raises(ValueError, match="mel_scale"):
        nf.MelSpectrogram(mel_scale="bark")
    with pytest.raises(ValueError, match="n_mfcc"):
        nf.MFCC(n_mfcc=50, n_mels=40)
    with pytest.raises(nf.LayerError, match=r"lengths.*must lie in \[1, 7\]"):
        nf.UtteranceNorm().apply(
            {}, {}, {"inputs": jnp.ones((2, 7, 3)), "lengths": jnp.array([7, 9])}
        )
    with pytest.raises(nf.LayerError, match="MelSpectrogram"):
        nf.UtteranceNorm().apply({}, {}, jnp.ones((2, 7)))


@pytest.mark.parametrize(
    "layer",
    [
        nf.Spectrogram(n_fft=64, hop_length=32, power=1.0),
        nf.MelSpectrogram(n_fft=64, hop_length=32, sample_rate=8000, n_mels=8),
        nf.MFCC(n_fft=64, hop_length=32, sample_rate=8000, n_mels=8, n_mfcc=4),
    ],
    ids=["spectrogram", "mel", "mfcc"],
)
def test_spectral_layers_conform(layer):
    from nnfun.testing import check_layer

    audio = jax.random.normal(jax.random.key(1), (2, 256)) * 0.3
    check_layer(layer, audio, bfloat16=False)  # XLA's FFT takes float32/64, not bfloat16


def test_frame_layers_conform():
    from nnfun.testing import check_layer

    x = jax.random.normal(jax.random.key(2), (2, 6, 4))
    check_layer(nf.UtteranceNorm(), {"inputs": x, "lengths": jnp.array([6, 3])}, bfloat16=False)
    check_layer(nf.SpecAugment(1, 2, 1, 2), x, train=True, gradients=False, bfloat16=False)
