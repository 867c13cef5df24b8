"""Truncated, corrupted and mismatched checkpoint files each raise a clear CheckpointError."""

import json
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.checkpoint import CheckpointError


def _raw_file(path, header, data=b"", length=None):
    """Writes a safetensors-shaped file by hand, to corrupt one piece at a time."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    nf.save(path, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3)})
    return path


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize("keep", [0, 5, 20, -1])
def test_truncated_files_are_reported_with_the_file_name(good, tmp_path, keep):
    raw = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[: keep if keep >= 0 else len(raw) - 1])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*truncated"):
        nf.load(cut)


def test_header_length_beyond_the_file(tmp_path):
    path = _raw_file(tmp_path / "f.safetensors", {}, length=10**12)
    with pytest.raises(CheckpointError, match="header length 1000000000000 but the file has"):
        nf.load(path)


def test_header_that_is_not_json(tmp_path):
    path = _raw_file(tmp_path / "f.safetensors", b"{not json")
    with pytest.raises(CheckpointError, match="corrupted header, not valid JSON"):
        nf.load(path)


def test_header_that_is_not_an_object(tmp_path):
    path = _raw_file(tmp_path / "f.safetensors", [1, 2])
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        nf.load(path)


def test_unknown_dtype(tmp_path):
    header = {"x": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}
    path = _raw_file(tmp_path / "f.safetensors", header, b"\0" * 16)
    with pytest.raises(CheckpointError, match="entry 'x': unknown dtype 'F128'"):
        nf.load(path)


def test_offsets_out_of_range(tmp_path):
    header = {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    path = _raw_file(tmp_path / "f.safetensors", header, b"\0" * 8)
    with pytest.raises(
        CheckpointError, match="describes 16 bytes of tensor data, the file holds 8"
    ):
        nf.load(path)


def test_offsets_inconsistent_with_the_shape(tmp_path):
    header = {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}
    path = _raw_file(tmp_path / "f.safetensors", header, b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"span 16 bytes, but F32 \[3\] needs 12"):
        nf.load(path)


def test_overlapping_or_gapped_offsets(tmp_path):
    header = {
        "x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "y": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
    }
    path = _raw_file(tmp_path / "f.safetensors", header, b"\0" * 6)
    with pytest.raises(CheckpointError, match="tensor 'y' starts at byte 2, expected 4"):
        nf.load(path)


def test_trailing_bytes(tmp_path):
    header = {"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}
    path = _raw_file(tmp_path / "f.safetensors", header, b"\0" * 5)
    with pytest.raises(CheckpointError, match="3 bytes after the last tensor"):
        nf.load(path)


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0]},
        {"dtype": "F32", "shape": [1]},
        [1, 2],
    ],
)
def test_malformed_entries(tmp_path, entry):
    path = _raw_file(tmp_path / "f.safetensors", {"x": entry}, b"\0" * 4)
    with pytest.raises(CheckpointError, match="corrupted header entry 'x'"):
        nf.load(path)


def test_metadata_must_map_strings_to_strings(tmp_path):
    path = _raw_file(tmp_path / "f.safetensors", {"__metadata__": {"a": 1}})
    with pytest.raises(CheckpointError, match="__metadata__ must map str to str"):
        nf.load(path)


def _rewrite_metadata(path, key, value):
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"][key] = value
    return _raw_file(path, header, raw[8 + length :])


def test_corrupted_tree_metadata(good):
    _rewrite_metadata(good, "nnfun.tree", "{oops")
    with pytest.raises(CheckpointError, match="corrupted nnfun.tree metadata"):
        nf.load(good)


def test_tree_metadata_naming_absent_tensors(good):
    _rewrite_metadata(good, "nnfun.tree", json.dumps({"dict": [["w", {"t": "nowhere"}]]}))
    with pytest.raises(CheckpointError, match=r"names tensors \['nowhere'\] that are not in"):
        nf.load(good)


def test_mismatched_like_reports_every_difference(good):
    like = {
        "w": jnp.zeros((3, 2)),  # wrong shape
        "b": jnp.zeros(3, jnp.int32),  # wrong dtype
        "extra": jnp.zeros(1),  # missing from the file
    }
    with pytest.raises(CheckpointError) as info:
        nf.load(good, like=like)
    message = str(info.value)
    assert str(good) in message
    assert "keys missing (in like, not in the file): extra" in message
    assert "w: expected float32[3, 2], found float32[2, 3]" in message
    assert "b: expected int32[3], found float64[3]" in message


def test_unexpected_keys_are_reported(good):
    with pytest.raises(
        CheckpointError, match=re.escape("keys unexpected (in the file, not in like): b")
    ):
        nf.load(good, like={"w": np.zeros((2, 3), np.float32)})


def test_like_with_a_nested_structure_the_file_lacks(good):
    like = {"w": {"kernel": np.zeros((2, 3), np.float32)}, "b": np.zeros(3)}
    with pytest.raises(CheckpointError, match="missing .*: w/kernel") as info:
        nf.load(good, like=like)
    assert "unexpected (in the file, not in like): w" in str(info.value)


def test_key_mismatches(tmp_path):
    path = tmp_path / "k.safetensors"
    nf.save(path, {"key": jax.random.key(0), "raw": np.zeros(2, np.uint32)})
    with pytest.raises(CheckpointError, match="key: expected a rbg PRNG key, found a threefry2x32"):
        nf.load(path, like={"key": jax.random.key(0, impl="rbg"), "raw": np.zeros(2, np.uint32)})
    with pytest.raises(CheckpointError, match="raw: expected a PRNG key .*found a plain array"):
        nf.load(path, like={"key": jax.random.key(0), "raw": jax.random.key(1)})
    with pytest.raises(CheckpointError, match=r"key: expected key data uint32\[2, 2\]"):
        nf.load(
            path, like={"key": jax.random.split(jax.random.key(0)), "raw": np.zeros(2, np.uint32)}
        )


def test_python_scalar_mismatch(tmp_path):
    path = tmp_path / "s.safetensors"
    nf.save(path, {"step": np.zeros(2, np.int64)})
    with pytest.raises(
        CheckpointError, match=r"step: expected a Python int \(0-d\), found int64\[2\]"
    ):
        nf.load(path, like={"step": 0})


def test_unsupported_like_leaf(good):
    with pytest.raises(CheckpointError, match="cannot restore into a like leaf of type str"):
        nf.load(good, like={"w": "x", "b": np.zeros(3)})


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        nf.load(tmp_path / "absent.safetensors")


def test_deeply_nested_header_is_an_error_not_a_crash(tmp_path):
    path = _raw_file(tmp_path / "f.safetensors", b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(CheckpointError, match="corrupted header"):
        nf.load(path)


def test_shape_whose_size_overflows_int64(tmp_path):
    # Every axis under the reader's 2**48 cap, the product over int64.
    header = {"x": {"dtype": "U8", "shape": [2**40, 2**24, 4], "data_offsets": [0, 0]}}
    path = _raw_file(tmp_path / "f.safetensors", header)
    with pytest.raises(CheckpointError, match=f"needs {2**66}"):
        nf.load(path)
