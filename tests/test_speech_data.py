"""Spoken digits: shapes, statistics, the voice split and the cache (never waveform hashes)."""

import sys

import numpy as np
import pytest

import nnfun.data as nd
from nnfun.data import _speech


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = tmp_path_factory.mktemp("speech")
    data = nd.spoken_digits(24, 12, seed=3, max_digits=4, cache_dir=cache, oh_probability=0.5)
    return data, cache


def test_splits_have_consistent_shapes_and_labels(small):
    data, _ = small
    for split, n in (("train", 24), ("test", 12)):
        u = data[split]
        assert len(u) == n and u.samples.dtype == np.float32 and u.offsets.shape == (n + 1,)
        assert u.lengths.sum() == len(u.samples) and (u.lengths > 1600).all()
        assert u.labels.dtype == np.int32 and u.labels.shape == (n, u.label_lengths.max())
        for i in range(n):
            assert nd.speech_decode(u.labels[i, : u.label_lengths[i]]) == u.texts[i]
            assert (u.labels[i, u.label_lengths[i] :] == 0).all()
            spoken = u.texts[i].replace("oh", "zero").split()
            assert [_speech.WORDS.index(w) for w in spoken] == [int(d) for d in u.digits[i]]
            assert 1 <= len(u.digits[i]) <= 4


def test_audio_statistics_look_like_speech(small):
    data, _ = small
    u = data["train"]
    peaks = np.array([np.abs(u.audio(i)).max() for i in range(len(u))])
    assert peaks.min() > 0.25 and peaks.max() < 1.2  # scaled to [0.3, 0.9], plus noise
    rms = np.array([np.sqrt(np.mean(u.audio(i) ** 2)) for i in range(len(u))])
    assert (rms > 0.01).all()
    # More digits take longer to say: duration correlates with the digit count.
    counts = np.array([len(d) for d in u.digits])
    assert np.corrcoef(counts, u.lengths)[0, 1] > 0.6
    seconds = u.lengths / 16000
    assert seconds.min() > 0.2 and seconds.max() < 4.0
    # Speech energy sits below 4 kHz far more than white noise would put it there.
    spectrum = np.abs(np.fft.rfft(u.audio(0))) ** 2
    assert spectrum[: len(spectrum) // 2].sum() > 0.7 * spectrum.sum()


def test_test_voices_are_never_heard_in_training(small):
    data, _ = small
    variants = {split: {v.split("+")[1] for v in data[split].voices} for split in data}
    assert variants["test"] <= set(_speech.TEST_VARIANTS)
    assert not variants["train"] & set(_speech.TEST_VARIANTS)
    assert {v.split("+")[0] for v in data["train"].voices} <= set(_speech.ACCENTS)


def test_batches_pad_audio_and_labels(small):
    data, _ = small
    batch = data["train"].batch([0, 3, 5])
    assert batch["audio"].shape[1] % 4000 == 0 and batch["audio"].dtype == np.float32
    for row, i in enumerate([0, 3, 5]):
        n = batch["lengths"][row]
        np.testing.assert_array_equal(batch["audio"][row, :n], data["train"].audio(i))
        assert (batch["audio"][row, n:] == 0).all()
    with pytest.raises(ValueError, match="pad_to=10 is shorter"):
        data["train"].batch([0], pad_to=10)


def test_cache_is_keyed_by_settings_and_reused(small, tmp_path, monkeypatch):
    data, cache = small
    files = list(cache.glob("spoken_digits-*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    again = nd.spoken_digits(24, 12, seed=3, max_digits=4, cache_dir=cache, oh_probability=0.5)
    np.testing.assert_array_equal(again["test"].samples, data["test"].samples)
    assert again["test"].texts == data["test"].texts
    monkeypatch.setenv("NNFUN_CACHE_DIR", str(tmp_path))
    other = nd.spoken_digits(3, 2, seed=4, max_digits=2)
    assert len(list(tmp_path.glob("spoken_digits-*.npz"))) == 1 and len(other["train"]) == 3
    # Different settings, different file; seeds change the draws.
    assert other["train"].digits != data["train"].digits[:3]


def test_missing_library_and_bad_settings_raise_clear_errors(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)
    monkeypatch.setattr(_speech, "_STATE", {})
    with pytest.raises(ImportError, match=r"pip install 'nnfun\[speech\]'.*GPL-3"):
        nd.spoken_digits(2, 2, cache=False)
    with pytest.raises(ValueError, match="disjoint"):
        nd.spoken_digits(2, 2, train_variants=("m1", "m3"), test_variants=("m3",))
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        nd.spoken_digits(2, 2, min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match=r"characters \['3'\]"):
        nd.speech_encode("3 two")
