"""The safetensors file format, read and written with NumPy alone, and atomic file writes.

A file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON, then
the raw bytes of every tensor. The header maps each tensor name to
``{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`` (offsets into
the byte buffer after the header) and may hold ``"__metadata__"``, a map of
strings to strings. Nothing in a file is executed: the header is JSON and the
tensors are bytes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import struct
import sys
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

# safetensors dtype names and the NumPy dtypes they hold (bfloat16 and float8 via ml_dtypes).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}

# The safetensors reference implementation refuses headers above 100 MB; so do we,
# so that a corrupted length field cannot make us allocate gigabytes.
MAX_HEADER_BYTES = 100_000_000
# No real tensor comes near these; larger values only make NumPy raise its own errors.
MAX_DIMENSIONS, MAX_DIMENSION = 32, 2**48
TEMP_MARKER = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupted, or does not match what was asked for.

    Example:
        >>> import os, tempfile, nnfun as nf
        >>> path = os.path.join(tempfile.mkdtemp(), "empty.safetensors")
        >>> open(path, "wb").close()
        >>> try:
        ...     nf.load(path)
        ... except nf.checkpoint.CheckpointError as e:
        ...     print(str(e).split(": ")[1])
        truncated file (0 bytes, no header length)
    """


def dtype_name(dtype: Any, where: str) -> str:
    """The safetensors name of a NumPy dtype, or a ``CheckpointError`` naming the leaf."""
    name = _NAMES.get(np.dtype(dtype))
    if name is None:
        raise CheckpointError(
            f"{where}: dtype {np.dtype(dtype)} cannot be stored; supported: "
            f"{', '.join(str(d) for d in DTYPES.values())}"
        )
    return name


def _header_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, array in tensors.items():
        header[name] = {
            "dtype": dtype_name(array.dtype, name),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Pad with spaces so the data starts 8-byte aligned (what safetensors itself writes).
    return raw + b" " * (-len(raw) % 8)


def _layout(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Largest items first keeps every tensor aligned to its item size in the file, so a
    # memory-mapping reader can view it in place; the stable sort keeps the tree order.
    order = sorted(tensors, key=lambda name: -tensors[name].dtype.itemsize)
    return {name: _c_order(tensors[name]) for name in order}


def _c_order(array: Any) -> np.ndarray:
    # Copy only when needed; np.ascontiguousarray would also turn 0-d arrays into 1-d ones.
    array = np.asarray(array)
    return array if array.flags.c_contiguous else array.copy(order="C")


def _write_tensor(file: Any, array: np.ndarray) -> None:
    if array.nbytes:
        file.write(array.reshape(-1).view(np.uint8))


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> None:
    """Writes ``tensors`` and string ``metadata`` to ``path`` atomically.

    Args:
        path: the final file name.
        tensors: name -> NumPy array (any supported dtype, any shape, 0-d included).
        metadata: string -> string, stored as the header's ``__metadata__``.

    Example:
        >>> import os, tempfile, numpy as np
        >>> from nnfun.checkpoint._format import read_safetensors, write_safetensors
        >>> path = os.path.join(tempfile.mkdtemp(), "x.safetensors")
        >>> write_safetensors(path, {"w": np.arange(3, dtype=np.int8)}, {"note": "hi"})
        >>> read_safetensors(path)
        ({'w': array([0, 1, 2], dtype=int8)}, {'note': 'hi'})
    """
    if sys.byteorder != "little":  # every platform JAX runs on is little-endian
        raise CheckpointError("writing checkpoints on a big-endian host is not supported")
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise TypeError(f"metadata must map str to str, got {key!r}: {type(value).__name__}")
    laid_out = _layout(tensors)
    header = _header_bytes(laid_out, metadata)
    with atomic_open(path) as file:
        file.write(struct.pack("<Q", len(header)))
        file.write(header)
        for array in laid_out.values():
            _write_tensor(file, array)


def temp_name(path: str | os.PathLike) -> str:
    """A fresh temporary name next to ``path``: ``.<name>.tmp-<pid>-<random>``."""
    directory, name = os.path.split(os.fspath(path))
    return os.path.join(directory, f".{name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Opens a temporary file for writing; on success it replaces ``path`` in one step.

    The data is flushed and fsynced before ``os.replace``, and the directory after
    it, so a crash at any moment leaves either the old file or the new one under
    ``path``, never a partial one. On an exception the temporary file is removed.
    Missing parent directories are created first.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable. Some platforms (Windows) cannot open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str], int]:
    """Reads and validates the header: ``(entries, metadata, data_start)``."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: truncated file ({size} bytes, no header length)")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path}: truncated or corrupted file: header length {length} but the file "
                f"has {size} bytes"
            )
        raw = file.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, ints over 4300 digits
        raise CheckpointError(f"{path}: corrupted header, not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupted header, expected a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path}: corrupted header, __metadata__ must map str to str")
    entries = {name: _check_entry(path, name, entry) for name, entry in header.items()}
    _check_offsets(path, entries, size - 8 - length)
    return entries, metadata, 8 + length


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"duplicate name(s) {twice[:5]}")
    return dict(pairs)


def _check_entry(path: Any, name: str, entry: Any) -> dict[str, Any]:
    bad = f"{path}: corrupted header entry {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{bad}: expected keys dtype, shape, data_offsets, got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{bad}: unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    if not _is_list_of_ints(shape) or not _is_list_of_ints(offsets) or len(offsets) != 2:
        raise CheckpointError(f"{bad}: shape and data_offsets must be lists of ints >= 0")
    if len(shape) > MAX_DIMENSIONS or any(n > MAX_DIMENSION for n in shape):
        raise CheckpointError(
            f"{bad}: shape {shape} has more than {MAX_DIMENSIONS} axes or an axis over "
            f"{MAX_DIMENSION}"
        )
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize  # exact: no int64 overflow to exploit
    if offsets[1] - offsets[0] != nbytes:
        raise CheckpointError(
            f"{bad}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes, but "
            f"{dtype} {shape} needs {nbytes}"
        )
    return {"dtype": DTYPES[dtype], "shape": tuple(shape), "offsets": tuple(offsets)}


def _is_list_of_ints(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )


def _check_offsets(path: Any, entries: Mapping[str, Any], data_size: int) -> None:
    # The tensors must tile the data buffer exactly: no overlap, no gap, nothing missing.
    end = 0
    for name, entry in sorted(entries.items(), key=lambda item: item[1]["offsets"]):
        begin, stop = entry["offsets"]
        if begin != end:
            raise CheckpointError(
                f"{path}: corrupted header: tensor {name!r} starts at byte {begin}, expected {end}"
            )
        end = stop
    if end > data_size:
        raise CheckpointError(
            f"{path}: truncated file: the header describes {end} bytes of tensor data, "
            f"the file holds {data_size}"
        )
    if end < data_size:
        raise CheckpointError(
            f"{path}: corrupted file: {data_size - end} bytes after the last tensor"
        )


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Reads a safetensors file: ``({name: array}, metadata)``, in header order.

    The arrays are NumPy arrays sharing one buffer read from the file.

    Example:
        >>> import os, tempfile, numpy as np, nnfun as nf
        >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> nf.save(path, {"a": {"b": np.zeros((2, 3), np.float16)}})
        >>> tensors, metadata = nf.checkpoint.read_safetensors(path)
        >>> {name: a.shape for name, a in tensors.items()}, metadata["nnfun.format"]
        ({'a/b': (2, 3)}, '1')

    Raises:
        CheckpointError: the file is truncated, or its header is corrupted (bad JSON,
            unknown dtype, offsets out of range or inconsistent with the shapes).
    """
    entries, metadata, start = read_header(path)
    data_size = max((e["offsets"][1] for e in entries.values()), default=0)
    buffer = bytearray(data_size)
    with open(path, "rb") as file:
        file.seek(start)
        if file.readinto(buffer) != data_size:
            raise CheckpointError(f"{path}: truncated file while reading tensor data")
    tensors = {}
    for name, entry in entries.items():
        begin, stop = entry["offsets"]
        if stop == begin:  # frombuffer refuses an empty slice at the very end of a buffer
            tensors[name] = np.zeros(entry["shape"], entry["dtype"])
            continue
        count = (stop - begin) // entry["dtype"].itemsize
        flat = np.frombuffer(buffer, dtype=entry["dtype"], count=count, offset=begin)
        tensors[name] = flat.reshape(entry["shape"])
    return tensors, metadata
