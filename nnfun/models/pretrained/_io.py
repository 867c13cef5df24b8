"""Reading and writing Hugging Face directories: config.json and (sharded) safetensors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from ...checkpoint._format import (
    CheckpointError,
    atomic_open,
    read_header,
    write_safetensors,
)
from ...core._layer import Layer, Params, State
from ...core._params import flatten_params, unflatten_params
from ._registry import Family, Tensor, family_of_config, family_of_model

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_FLOATS = ("float16", "bfloat16", "float32", "float64")


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a Hugging Face directory, or a clear error."""
    file = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"from_pretrained: {path} is not a directory")
    if not os.path.exists(file):
        raise FileNotFoundError(
            f"from_pretrained: {path} has no config.json; point at a Hugging Face model "
            "directory (huggingface-cli download <repo> --local-dir <dir>)"
        )
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return config


def _weight_files(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Shard file -> the tensor names the index puts there (single file: all, ``[]``)."""
    index = os.path.join(path, INDEX)
    if not os.path.exists(index):
        if not os.path.exists(os.path.join(path, SINGLE)):
            raise FileNotFoundError(
                f"from_pretrained: {path} holds neither {SINGLE} nor {INDEX} (only safetensors "
                "weights are read; pytorch_model.bin is pickle and is refused)"
            )
        return {os.path.join(path, SINGLE): []}
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
    except (ValueError, AttributeError) as e:  # bad UTF-8 or JSON, not an object
        raise CheckpointError(f"{index}: not a JSON object ({e})") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no weight_map object")
    files: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or os.path.basename(shard) != shard:
            raise CheckpointError(f"{index}: tensor {name!r} names shard {shard!r}, not a file")
        files.setdefault(os.path.join(path, shard), []).append(name)
    for shard in files:
        if not os.path.exists(shard):
            raise FileNotFoundError(
                f"{index} names shard {os.path.basename(shard)} (for {files[shard][0]!r} and "
                f"{len(files[shard]) - 1} more), which is not in {path}"
            )
    return files


def _headers(path: str | os.PathLike[str]) -> dict[str, dict[str, tuple[str, dict[str, Any]]]]:
    """File -> {tensor name -> (file, header entry)}, each header checked against the index."""
    out = {}
    for file, listed in _weight_files(path).items():
        entries, _, start = read_header(file)
        if listed and set(listed) != set(entries):
            odd = sorted(set(listed) ^ set(entries))
            raise CheckpointError(
                f"{file}: the index and the shard disagree about tensor(s) {odd[:5]}"
            )
        out[file] = {name: (file, {**e, "start": start}) for name, e in entries.items()}
    return out


class _Plan:
    """Which checkpoint tensor fills which parameter; checks names and shapes up front."""

    def __init__(self, family: Family, model: Layer, shapes: Params, where: str) -> None:
        self.rules = {t.name: t for t in family.tensors(model)}
        self.prefix, self.where, self.rename = family.prefix, where, family.rename
        self.shapes = flatten_params(shapes)
        self.pending = {p: 0 for p in self.shapes}
        for rule in self.rules.values():
            for target in rule.targets:
                self.pending[target] += 1

    def rule(self, name: str) -> Tensor | None:
        name = self.rename(name)
        return self.rules.get(name) or self.rules.get(self.prefix + name)

    def check_names(self, names: list[str]) -> None:
        rules = [self.rule(n) for n in names]
        unused = [n for n, r in zip(names, rules, strict=True) if r is None]
        if unused:
            raise CheckpointError(
                f"{self.where}: {len(unused)} checkpoint tensor(s) that this model does not "
                f"use: {', '.join(unused[:8])}; the config and the weights disagree"
            )
        found = {r.name for r in rules if r is not None}
        if len(found) != len(names):
            raise CheckpointError(
                f"{self.where}: a tensor appears twice (with and without "
                f"the prefix {self.prefix!r}, or under an old and a new name)"
            )
        missing = [r.name for r in self.rules.values() if r.required and r.name not in found]
        if missing:
            raise CheckpointError(
                f"{self.where}: {len(missing)} tensor(s) missing from the checkpoint: "
                f"{', '.join(missing[:8])}"
            )

    def expected(self, rule: Tensor) -> tuple[int, ...]:
        """The checkpoint shape ``rule`` needs, from the model's parameter shapes."""
        parts = []
        for target in rule.targets:
            shape = self.shapes[target].shape[0 if rule.layer is None else 1 :]
            parts.append(np.broadcast_to(np.zeros((), np.float32), shape))
        return tuple(rule.join(tuple(parts)).shape)

    def split(self, rule: Tensor, name: str, array: np.ndarray) -> tuple[np.ndarray, ...]:
        expected = self.expected(rule)
        if tuple(array.shape) != expected:
            raise CheckpointError(
                f"{self.where}: tensor {name!r} has shape {tuple(array.shape)}, expected "
                f"{expected} for this config"
            )
        return rule.split(array)


def _read_tensor(file: str, entry: Mapping[str, Any]) -> np.ndarray:
    begin, stop = entry["offsets"]
    array = np.empty(entry["shape"], entry["dtype"])
    with open(file, "rb") as f:
        f.seek(entry["start"] + begin)
        if f.readinto(array.reshape(-1).view(np.uint8).data) != stop - begin:
            raise CheckpointError(f"{file}: truncated while reading tensor data")
    return array


def _placer(sharding: Any) -> Callable[[str, np.ndarray], jax.Array]:
    if sharding is None:
        return lambda path, a: jax.device_put(a)
    if isinstance(sharding, jax.sharding.Sharding):
        return lambda path, a: jax.device_put(a, sharding)
    if callable(sharding):
        return lambda path, a: jax.device_put(a, sharding(path, a.shape))
    flat = flatten_params(sharding)
    return lambda path, a: jax.device_put(a, flat[path])


def from_pretrained(
    path: str | os.PathLike[str], dtype: Any = None, sharding: Any = None
) -> tuple[Layer, Params, State]:
    """Loads a local Hugging Face model directory: ``(model, params, state)``.

    Reads ``config.json`` and ``model.safetensors`` (or the shards a
    ``model.safetensors.index.json`` lists). Nothing is downloaded: get a
    directory with ``huggingface-cli download <repo> --local-dir <dir>`` on a
    machine with the network. Tensors are read one at a time and each
    parameter goes to its device as soon as it is complete, so the host holds
    little more than the model. Every checkpoint tensor must be used exactly
    once; names, shapes and the config are all checked before any data is read.

    Args:
        path: the directory.
        dtype: cast every parameter to this dtype; None keeps the checkpoint's.
        sharding: where parameters go: None (the default device), one
            ``jax.sharding.Sharding`` for all, a tree like the params holding one
            per parameter, or a function ``(path, shape) -> Sharding``.

    Returns:
        The nnfun model (its family from ``config.json``'s ``model_type``), its
        params, and its state (``{}`` for these models).

    Example:
        >>> import tempfile, jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.models.GPT(vocab_size=16, d_model=8, num_heads=2, num_layers=1)
        >>> params, _ = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
        >>> path = tempfile.mkdtemp()
        >>> nf.models.save_pretrained(path, model, params)  # a GPT-2 directory
        >>> loaded, params, state = nf.models.from_pretrained(path)
        >>> loaded == model, params["blocks"]["layer"]["attention"]["query"]["kernel"].shape
        (True, (1, 8, 8))

    Raises:
        FileNotFoundError: no directory, ``config.json``, weights, or a shard the
            index names.
        ConfigError: an unknown ``model_type`` (the known ones are listed) or a
            config field nnfun does not implement (named).
        CheckpointError: an unused or missing tensor (named), a wrong shape
            (name, expected, found), a truncated or corrupted file.
    """
    where = f"from_pretrained({os.fspath(path)})"
    config = read_config(path)
    family = family_of_config(config, where)
    model = family.build(config)
    shapes, state = jax.eval_shape(model.init, jax.random.key(0), family.example(model))
    plan = _Plan(family, model, shapes, where)
    headers = _headers(path)
    plan.check_names([name for entries in headers.values() for name in entries])
    for entries in headers.values():  # shapes and dtypes before any data
        for name, (_, entry) in entries.items():
            rule = plan.rule(name)
            assert rule is not None
            if rule.targets:
                plan.split(rule, name, np.broadcast_to(np.zeros((), np.float32), entry["shape"]))
            if entry["dtype"].name not in _FLOATS:
                raise CheckpointError(f"{where}: tensor {name!r} is {entry['dtype']}, not a float")
    params = _load(plan, headers, dtype, _placer(sharding))
    state = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), state)
    return model, unflatten_params(params), state


def _load(
    plan: _Plan,
    headers: Mapping[str, Mapping[str, tuple[str, Mapping[str, Any]]]],
    dtype: Any,
    place: Callable[[str, np.ndarray], jax.Array],
) -> dict[str, jax.Array]:
    buffers: dict[str, np.ndarray] = {}
    done: dict[str, jax.Array] = {}
    for entries in headers.values():
        for name, (file, entry) in entries.items():
            rule = plan.rule(name)
            assert rule is not None
            if not rule.targets:
                continue
            parts = plan.split(rule, name, _read_tensor(file, entry))
            for target, part in zip(rule.targets, parts, strict=True):
                kind = np.dtype(dtype) if dtype is not None else part.dtype
                if target not in buffers:
                    buffers[target] = np.empty(plan.shapes[target].shape, kind)
                if rule.layer is None:
                    buffers[target][...] = part
                else:
                    buffers[target][rule.layer] = part
                plan.pending[target] -= 1
                if plan.pending[target] == 0:  # complete: to the device, free the host copy
                    # Waiting for the copy keeps one parameter in flight: device_put is
                    # asynchronous, and unfinished copies hold their host buffers alive.
                    done[target] = place(target, buffers.pop(target)).block_until_ready()
    return done


def _shards(
    tensors: Iterator[tuple[str, np.ndarray]], max_shard_bytes: int | None
) -> Iterator[dict[str, np.ndarray]]:
    shard: dict[str, np.ndarray] = {}
    size = 0
    for name, array in tensors:
        if shard and max_shard_bytes is not None and size + array.nbytes > max_shard_bytes:
            yield shard
            shard, size = {}, 0
        shard[name] = array
        size += array.nbytes
    yield shard


def _hf_tensors(family: Family, model: Layer, params: Params) -> Iterator[tuple[str, np.ndarray]]:
    flat = flatten_params(params)
    for rule in family.tensors(model):
        if not rule.targets:
            continue
        parts = []
        for target in rule.targets:
            if target not in flat:
                raise ValueError(f"save_pretrained: params lack {target!r} (for {rule.name})")
            value = np.asarray(flat[target])
            parts.append(value if rule.layer is None else value[rule.layer])
        yield rule.name, np.ascontiguousarray(rule.join(tuple(parts)))


def save_pretrained(
    path: str | os.PathLike[str],
    model: Layer,
    params: Params,
    max_shard_bytes: int | None = None,
) -> None:
    """Writes ``model`` and ``params`` as a Hugging Face directory.

    ``config.json`` plus ``model.safetensors``, or shards of at most
    ``max_shard_bytes`` with a ``model.safetensors.index.json``; each file is
    written atomically. ``transformers.AutoModelForCausalLM.from_pretrained(path)``
    (or the family's ``AutoModel*``) loads the result; :func:`from_pretrained`
    reads it back.

    Args:
        path: the directory (created if missing).
        model: a model a registered family describes (its ``accepts``).
        params: its params, in any float dtype (kept).
        max_shard_bytes: split the weights into shards of at most this size.
    """
    family = family_of_model(model)
    os.makedirs(path, exist_ok=True)
    metadata = {"format": "pt"}  # what transformers requires of a safetensors file
    if max_shard_bytes is None:
        tensors = dict(_hf_tensors(family, model, params))
        write_safetensors(os.path.join(path, SINGLE), tensors, metadata)
    else:  # one shard in memory at a time: a first pass counts them
        count = sum(1 for _ in _shards(_hf_tensors(family, model, params), max_shard_bytes))
        weight_map: dict[str, str] = {}
        total = 0
        for i, shard in enumerate(_shards(_hf_tensors(family, model, params), max_shard_bytes)):
            name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            write_safetensors(os.path.join(path, name), shard, metadata)
            weight_map |= dict.fromkeys(shard, name)
            total += sum(a.nbytes for a in shard.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _write_json(os.path.join(path, INDEX), index)
    _write_json(os.path.join(path, "config.json"), family.to_config(model))


def _write_json(file: str, value: Any) -> None:
    with atomic_open(file) as f:
        f.write(json.dumps(value, indent=2, sort_keys=True).encode("utf-8") + b"\n")
