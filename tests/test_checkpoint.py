"""nf.save / nf.load: round trips of every dtype and structure, the file format, errors."""

import dataclasses
import json
import os
import struct
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
import safetensors.numpy

import nnfun as nf
from nnfun.checkpoint import CheckpointError

DTYPES = [
    np.float32,
    np.float16,
    ml_dtypes.bfloat16,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
]


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def _assert_same(a, b):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture
def path(tmp_path):
    return tmp_path / "tree.safetensors"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3, 4)])
def test_every_dtype_and_shape_round_trips_bitwise(path, dtype, shape):
    array = _sample(dtype, shape)
    nf.save(path, {"x": array})
    loaded = nf.load(path)["x"]
    assert loaded.shape == shape
    _assert_same(loaded, array)
    _assert_same(nf.load(path, like={"x": array})["x"], array)


def test_special_float_values_survive(path):
    array = np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float32).tiny], np.float32)
    nf.save(path, [array])
    assert nf.load(path)[0].tobytes() == array.tobytes()


def test_jax_arrays_come_back_as_jax_arrays_with_like(path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3, jnp.bfloat16)}
    nf.save(path, tree)
    loaded = nf.load(path, like=tree)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(loaded))
    jax.tree.map(_assert_same, loaded, tree)


def test_shape_dtype_structs_are_a_valid_like(path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3)}
    nf.save(path, tree)
    loaded = nf.load(path, like=jax.eval_shape(lambda: tree))
    _assert_same(loaded["w"], tree["w"])


class Pair(NamedTuple):
    first: object
    second: object


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Holder:
    params: dict
    step: jax.Array
    key: jax.Array


def _mixed_tree():
    return {
        "list": [np.float32(1.5), np.arange(3, dtype=np.int16)],
        "tuple": (np.zeros((1, 2), np.uint8), None, [np.array(True)]),
        "pair": Pair(np.ones(2, np.float64), {"inner": np.array(-3, np.int64)}),
        "holder": Holder(
            {"w": np.eye(2, dtype=np.float32)}, np.array(7, np.int32), jax.random.key(3)
        ),
        "none": None,
        "ints": 12,
        "float": 0.25,
        "flag": False,
        "empty": {},
    }


def test_mixed_structure_round_trips_exactly_with_like(path):
    tree = _mixed_tree()
    nf.save(path, tree)
    loaded = nf.load(path, like=tree)
    assert jax.tree.structure(loaded) == jax.tree.structure(tree)
    assert isinstance(loaded["pair"], Pair) and isinstance(loaded["holder"], Holder)
    assert loaded["tuple"][1] is None and loaded["none"] is None
    assert type(loaded["ints"]) is int and loaded["ints"] == 12
    assert type(loaded["float"]) is float and loaded["float"] == 0.25
    assert loaded["flag"] is False
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(tree), strict=True):
        if jax.dtypes.issubdtype(getattr(b, "dtype", np.float32), jax.dtypes.prng_key):
            _assert_same(jax.random.key_data(a), jax.random.key_data(b))
        else:
            _assert_same(a, b)


def test_without_like_gives_dicts_lists_tuples_and_python_scalars(path):
    tree = _mixed_tree()
    nf.save(path, tree)
    loaded = nf.load(path)
    assert isinstance(loaded["list"], list) and isinstance(loaded["tuple"], tuple)
    assert loaded["tuple"][1] is None and loaded["none"] is None and loaded["empty"] == {}
    assert set(loaded["pair"]) == {"first", "second"}  # NamedTuples come back as dicts
    assert set(loaded["holder"]) == {"params", "step", "key"}
    assert (type(loaded["ints"]), type(loaded["float"]), type(loaded["flag"])) == (int, float, bool)
    _assert_same(loaded["pair"]["second"]["inner"], tree["pair"].second["inner"])
    _assert_same(loaded["list"][0], np.asarray(tree["list"][0]))
    key = loaded["holder"]["key"]
    assert jax.random.key_impl(key) == jax.random.key_impl(tree["holder"].key)
    _assert_same(jax.random.key_data(key), jax.random.key_data(tree["holder"].key))


def test_dict_order_is_preserved_without_like(path):
    tree = {"b": np.ones(1), "a": np.ones(1), "10": np.ones(1), "2": np.ones(1)}
    nf.save(path, tree)
    assert list(nf.load(path)) == ["b", "a", "10", "2"]


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_typed_prng_keys_keep_their_impl_and_draw_the_same_numbers(path, impl):
    keys = jax.random.split(jax.random.key(42, impl=impl), 3)
    nf.save(path, {"keys": keys})
    for loaded in (nf.load(path)["keys"], nf.load(path, like={"keys": keys})["keys"]):
        assert loaded.shape == (3,) and str(jax.random.key_impl(loaded)) == impl
        _assert_same(jax.random.uniform(loaded[1], (4,)), jax.random.uniform(keys[1], (4,)))


def test_legacy_uint32_keys_are_plain_arrays(path):
    key = jax.random.PRNGKey(0)
    nf.save(path, key)
    _assert_same(nf.load(path), key)
    _assert_same(nf.load(path, like=key), key)


def test_optax_adam_state_round_trip_restores_named_tuples(path):
    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    opt_state = optimizer.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    _, opt_state = optimizer.update(grads, opt_state, params)
    nf.save(path, {"opt_state": opt_state, "step": 1})
    loaded = nf.load(path, like={"opt_state": opt_state, "step": 0})
    adam = loaded["opt_state"][1][0]
    assert isinstance(adam, optax.ScaleByAdamState)
    assert isinstance(loaded["opt_state"][1][1], optax.EmptyState)
    assert loaded["step"] == 1
    jax.tree.map(_assert_same, loaded["opt_state"], opt_state)
    # The restored state drives the optimizer to the same next update.
    updates_a, _ = optimizer.update(grads, loaded["opt_state"], params)
    updates_b, _ = optimizer.update(grads, opt_state, params)
    jax.tree.map(_assert_same, updates_a, updates_b)


def test_leaf_names_are_readable_paths(path):
    nf.save(path, {"params": {"0": {"kernel": np.ones(2)}}, "opt": Pair(np.ones(1), [np.ones(1)])})
    names = set(safetensors.numpy.load_file(path))
    assert names == {"params/0/kernel", "opt/first", "opt/second/0"}


def test_missing_parent_directories_are_created(tmp_path):
    path = tmp_path / "runs" / "a" / "tree.safetensors"
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    nf.save(path, tree)
    np.testing.assert_array_equal(nf.load(path)["w"], tree["w"])
    assert os.listdir(path.parent) == ["tree.safetensors"]  # no temporary file left


def test_single_array_tree(path):
    nf.save(path, np.arange(4))
    _assert_same(nf.load(path), np.arange(4))


def test_clashing_paths_and_unsupported_leaves_raise(path):
    with pytest.raises(CheckpointError, match="two leaves map to the tensor name 'a/b'"):
        nf.save(path, {"a/b": np.ones(1), "a": {"b": np.ones(1)}})
    with pytest.raises(CheckpointError, match="cannot save a leaf of type str"):
        nf.save(path, {"name": "hello"})
    with pytest.raises(CheckpointError, match="dtype complex64 cannot be stored"):
        nf.save(path, {"z": np.ones(2, np.complex64)})
    with pytest.raises(ValueError, match="reserved"):
        nf.save(path, {"x": np.ones(1)}, metadata={"nnfun.tree": "{}"})
    assert not path.exists()


def test_user_metadata_is_stored(path):
    nf.save(path, {"x": np.ones(1)}, metadata={"note": "run 7"})
    _, metadata = nf.checkpoint.read_safetensors(path)
    assert metadata["note"] == "run 7"


def test_files_are_read_by_the_safetensors_package(path):
    tree = {"a": _sample(ml_dtypes.bfloat16, (2, 3)), "b": {"c": _sample(np.int64, ())}}
    tree["d"] = _sample(np.bool_, (5,))
    nf.save(path, tree)
    loaded = safetensors.numpy.load_file(path)
    _assert_same(loaded["a"], tree["a"])
    _assert_same(loaded["b/c"], tree["b"]["c"])
    _assert_same(loaded["d"], tree["d"])


def test_files_of_the_safetensors_package_are_read(path):
    tensors = {f"t{i}": _sample(dtype, (3, 2), seed=i) for i, dtype in enumerate(DTYPES)}
    tensors["layer.0/weight"] = _sample(np.float32, (4,))
    safetensors.numpy.save_file(tensors, path, metadata={"format": "np"})
    loaded = nf.load(path)
    assert set(loaded) == {f"t{i}" for i in range(len(DTYPES))} | {"layer.0"}
    for name, array in tensors.items():
        if "/" not in name:
            _assert_same(loaded[name], array)
    _assert_same(loaded["layer.0"]["weight"], tensors["layer.0/weight"])
    like = {name: np.zeros_like(a) for name, a in tensors.items() if "/" not in name}
    like["layer.0"] = {"weight": np.zeros(4, np.float32)}
    _assert_same(nf.load(path, like=like)["t3"], tensors["t3"])


def test_header_follows_the_format(path):
    nf.save(path, {"x": np.ones((2, 2), np.float16), "y": np.ones(3, np.float64)})
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert (8 + length) % 8 == 0  # data starts aligned
    assert header["y"] == {"dtype": "F64", "shape": [3], "data_offsets": [0, 24]}
    assert header["x"] == {"dtype": "F16", "shape": [2, 2], "data_offsets": [24, 32]}
    assert len(raw) == 8 + length + 32
    assert header["__metadata__"]["nnfun.format"] == "1"


def test_check_serialization_passes_for_a_layer_with_state_and_catches_a_change(monkeypatch):
    from nnfun import testing

    class Counter(nf.Layer):
        def init(self, key, x):
            return {"w": jnp.ones(x.shape[-1:])}, {"key": key, "count": jnp.zeros((), jnp.int32)}

        def apply(self, params, state, x, *, key=None, train=False):
            return x * params["w"][None, :], state

    testing.check_serialization(Counter(), jnp.ones((2, 3)))
    real_load = testing.load

    def corrupting_load(path, like=None):
        tree = real_load(path, like=like)
        tree["params"]["w"] = tree["params"]["w"].at[0].set(2.0)
        return tree

    monkeypatch.setattr(testing, "load", corrupting_load)
    with pytest.raises(AssertionError, match=r"\['params'\]\['w'\] changed in a save/load"):
        testing.check_serialization(Counter(), jnp.ones((2, 3)))


def test_non_contiguous_arrays_are_written_in_logical_order(path):
    tree = {"t": np.arange(6, dtype=np.int32).reshape(2, 3).T, "f": np.asfortranarray(np.eye(3))}
    tree["s"] = np.arange(10.0)[::3]
    nf.save(path, tree)
    jax.tree.map(_assert_same, nf.load(path), tree)
