"""nf.save_model / nf.load_model: a model rebuilt from its file alone, here and in a new process."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import nnfun as nf
from nnfun.checkpoint import CheckpointError

TESTS = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def user_layers():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TESTS))
        import _ckpt_layers

        yield _ckpt_layers


@pytest.fixture(scope="module")
def trained(user_layers):
    """A model using every combinator and a user layer, initialised once for the module."""
    model = nf.Sequential(
        {
            "embed": nf.Dense(8),
            "act": jax.nn.relu,
            "drop": nf.Dropout(0.25),
            "res": nf.Residual(nf.Sequential([nf.Dense(8), jax.nn.tanh])),
            "scale": user_layers.Scale(0.5),
            "branch": nf.Branch([nf.Dense(3), nf.Dense(2, use_bias=False)], merge="tuple"),
            "swap": nf.Lambda(user_layers.swap),
            "heads": nf.Parallel([nf.Dense(4), nf.Dense(1)]),
        }
    )
    key = jax.random.key(0)
    x = jax.random.normal(key, (5, 6))
    params, state = model.init(key, x)
    _, state = model.apply(params, state, x, key=key, train=True)  # a state worth saving
    return model, params, state, x


def _assert_trees_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_model_rebuilds_model_params_and_state(tmp_path, trained):
    model, params, state, x = trained
    path = tmp_path / "model.safetensors"
    nf.save_model(path, model, params, state)
    model2, params2, state2 = nf.load_model(path)
    assert model2 == model and hash(model2) == hash(model)
    _assert_trees_bitwise_equal(params2, params)
    _assert_trees_bitwise_equal(state2, state)
    assert int(state2["scale"]["calls"]) == 1
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(params2))
    y, _ = model.apply(params, state, x)
    y2, _ = model2.apply(params2, state2, x)
    _assert_trees_bitwise_equal(y2, y)


def test_load_model_in_a_fresh_process_needs_no_model_code(tmp_path, trained):
    model, params, state, x = trained
    path = tmp_path / "model.safetensors"
    nf.save_model(path, model, params, state)
    np.save(tmp_path / "x.npy", np.asarray(x))
    script = (
        "import sys, numpy as np, nnfun as nf\n"
        "model, params, state = nf.load_model(sys.argv[1])\n"
        "y, _ = model.apply(params, state, np.load(sys.argv[2]))\n"
        "np.savez(sys.argv[3], *[np.asarray(a) for a in y])\n"
        "print(type(model.layers[4][1]).__module__)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(TESTS), JAX_PLATFORMS="cpu")
    out = tmp_path / "y.npz"
    args = [sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"), str(out)]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "_ckpt_layers"
    y, _ = model.apply(params, state, x)
    found = np.load(out)
    _assert_trees_bitwise_equal([found[f"arr_{i}"] for i in range(len(y))], list(y))


def _replace_config(path, edit):
    tensors = safetensors.numpy.load_file(path)
    metadata = nf.checkpoint.read_safetensors(path)[1]
    metadata["nnfun.model"] = json.dumps(edit(json.loads(metadata["nnfun.model"])))
    safetensors.numpy.save_file(tensors, path, metadata=metadata)


def test_a_class_that_cannot_be_imported_is_a_clear_error(tmp_path, key):
    path = tmp_path / "model.safetensors"
    model = nf.Sequential([nf.Dense(2)])
    params, state = model.init(key, jnp.zeros((1, 3)))
    nf.save_model(path, model, params, state)

    def rename(config):
        config["fields"]["layers"]["__tuple__"][0]["__tuple__"][1]["__layer__"] = (
            "nonexistent_mod.Layer"
        )
        return config

    _replace_config(path, rename)
    with pytest.raises(CheckpointError, match=r"cannot find layer class 'nonexistent_mod\.Layer'"):
        nf.load_model(path)


def test_a_config_naming_a_non_layer_is_refused(tmp_path, key):
    path = tmp_path / "model.safetensors"
    nf.save_model(path, nf.Dense(2), *nf.Dense(2).init(key, jnp.zeros((1, 3))))
    _replace_config(path, lambda config: {**config, "__layer__": "collections.OrderedDict"})
    with pytest.raises(CheckpointError, match="is not an nnfun Layer class"):
        nf.load_model(path)


def test_a_file_without_a_model_config(tmp_path):
    path = tmp_path / "tree.safetensors"
    nf.save(path, {"params": {}, "state": {}})
    with pytest.raises(CheckpointError, match="holds no model config"):
        nf.load_model(path)


def test_models_that_cannot_be_written_raise_before_writing(tmp_path, key):
    path = tmp_path / "model.safetensors"
    model = nf.Sequential([nf.Dense(2), lambda x: x * 2])
    params, state = model.init(key, jnp.zeros((1, 3)))
    with pytest.raises(TypeError, match="cannot write .* to a JSON config"):
        nf.save_model(path, model, params, state)
    with pytest.raises(TypeError, match="expects an nnfun Layer"):
        nf.save_model(path, jax.nn.relu, {}, {})
    assert not path.exists()


def test_float64_params_keep_their_precision(tmp_path):
    path = tmp_path / "model.safetensors"
    params = {"kernel": np.full((2, 2), 1 / 3, np.float64), "bias": np.zeros(2, np.float64)}
    nf.save_model(path, nf.Dense(2), params, {})
    _, params2, _ = nf.load_model(path)
    assert params2["kernel"].dtype == np.float64
    np.testing.assert_array_equal(params2["kernel"], params["kernel"])
