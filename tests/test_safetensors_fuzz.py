"""Property tests: our safetensors reader on corrupted files gives a CheckpointError, never worse.

Checkpoints from the internet are untrusted input. For headers built to be wrong
(offsets out of range or overlapping, lengths that disagree with shape and dtype,
huge declared sizes, non-UTF-8, duplicate names, wrong types) and for valid
files with random bytes changed or cut off, reading either succeeds with tensors
that fit in the file or raises ``CheckpointError``; nothing else escapes, no read
takes long (hypothesis' deadline), and the memory it allocates stays within a
small multiple of the file's size (tracemalloc sees NumPy's buffers).
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnfun.checkpoint import CheckpointError, read_safetensors, write_safetensors
from nnfun.checkpoint._format import DTYPES

# Derandomized: make test sees the same examples every run (no flaky CI); to explore
# further, run with HYPOTHESIS_FUZZ=1 (random seeds, ten times the examples).
FUZZ = settings(
    max_examples=1000 if os.environ.get("HYPOTHESIS_FUZZ") else 100,
    derandomize=not os.environ.get("HYPOTHESIS_FUZZ"),
    database=None,
    deadline=2000,  # ms per example: a hang or a quadratic blow-up fails
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

sizes = st.one_of(
    st.integers(0, 64),
    st.integers(0, 2**70),
    st.sampled_from([2**31, 2**63, 2**64]),
    st.integers(-5, -1),
)
dtypes = st.one_of(
    st.sampled_from(sorted(DTYPES)),
    st.sampled_from(["F31", "", "f32"]),
    st.integers(),
    st.lists(st.sampled_from(sorted(DTYPES)), max_size=2),  # unhashable
    st.none(),
)
random_entries = st.fixed_dictionaries(
    {
        "dtype": dtypes,
        "shape": st.lists(sizes, max_size=4),
        "data_offsets": st.one_of(st.just([0, 0]), st.lists(sizes, max_size=3)),
    }
)
# Entries a reader would accept on their own (bytes at the start), so that what
# goes wrong is their combination: duplicates, overlaps, huge empty shapes.
plausible_entries = st.builds(
    lambda n, extra: {"dtype": "U8", "shape": [n, *extra], "data_offsets": [0, n]},
    st.integers(0, 3),
    st.lists(st.sampled_from([1, 2**63, 2**64]), max_size=1),
)
entries = st.one_of(plausible_entries, random_entries)
# Few names, so that duplicates are common; JSON written by hand so they survive.
names = st.sampled_from(["a", "b", "__metadata__", "\\u00e9", "\\ud800"])
HUGE = "9" * 5000  # an integer literal longer than Python's 4300-digit conversion limit


@st.composite
def raw_headers(draw) -> tuple[bytes, int]:
    """A header's bytes and how many entries it has."""
    pairs = draw(st.lists(st.tuples(names, entries), max_size=4))
    text = "{" + ",".join(f'"{n}":{json.dumps(e)}' for n, e in pairs) + "}"
    if draw(st.booleans()) and "0" in text:
        text = text.replace("0", HUGE, 1)
    return text.encode(), len(pairs)


def _file(tmp_path, header: bytes, data: bytes, declared: int | None = None):
    path = tmp_path / "f.safetensors"
    length = len(header) if declared is None else declared
    path.write_bytes(struct.pack("<Q", length) + header + data)
    return path


def _read_within_bounds(path) -> dict[str, np.ndarray] | None:
    size = path.stat().st_size
    tracemalloc.start()
    try:
        tensors, _ = read_safetensors(path)
    except CheckpointError:
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= 64 * size + 200_000, (peak, size)
    assert sum(a.nbytes for a in tensors.values()) <= size
    return tensors


@FUZZ
@given(header=raw_headers(), data=st.one_of(st.binary(max_size=3), st.binary(max_size=64)))
def test_random_headers(tmp_path, header, data):
    raw, entries = header
    tensors = _read_within_bounds(_file(tmp_path, raw, data))
    assert tensors is None or len(tensors) == entries  # no entry silently dropped


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),  # non-UTF-8, not JSON, or JSON of the wrong type
        st.from_regex(
            rb'\{"a":\{"dtype":"U8","shape":\[1\],"data_offsets":\[0,1\]\}', fullmatch=True
        ),
    ),
    declared=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    data=st.binary(max_size=16),
)
def test_raw_headers_and_header_lengths(tmp_path, raw, declared, data):
    _read_within_bounds(_file(tmp_path, raw, data, declared))


def _valid_bytes(tmp_path) -> bytes:
    path = tmp_path / "valid.safetensors"
    write_safetensors(
        path,
        {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float16)},
        {"note": "x"},
    )
    return path.read_bytes()


@FUZZ
@given(
    changes=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_valid_file_with_bytes_changed_or_cut(tmp_path, changes, cut):
    raw = bytearray(_valid_bytes(tmp_path))
    for position, value in changes:
        raw[position % len(raw)] = value
    path = tmp_path / "f.safetensors"
    path.write_bytes(bytes(raw[:cut]))
    _read_within_bounds(path)


@pytest.mark.parametrize(
    "header, data, message",
    [
        ('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],'
         '"data_offsets":[1,2]}}', b"xy", "duplicate name"),
        ('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],'
         '"data_offsets":[1,3]}}', b"xyz", "starts at byte 1, expected 2"),
        ('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"abcd", "needs 8"),
        ('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1000000000000]}}', b"", "span"),
        ('{"a":{"dtype":"U8","shape":[0,281474976710657],"data_offsets":[0,0]}}', b"", "axis"),
        ('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', b"ab", "truncated"),
        ('{"a":{"dtype":["F32"],"shape":[1],"data_offsets":[0,1]}}', b"a", "unknown dtype"),
        ('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"ab", "after the last"),
    ],
)  # fmt: skip
def test_each_corruption_has_a_clear_message(tmp_path, header, data, message):
    with pytest.raises(CheckpointError, match=message):
        read_safetensors(_file(tmp_path, header.encode(), data))


def test_non_utf8_and_huge_header_length(tmp_path):
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_safetensors(_file(tmp_path, b'{"\xff":1}', b""))
    with pytest.raises(CheckpointError, match="header length 18446744073709551615"):
        read_safetensors(_file(tmp_path, b"{}", b"", declared=2**64 - 1))
