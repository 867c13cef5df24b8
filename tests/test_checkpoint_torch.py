"""import_state_dict: PyTorch-named tensors from a safetensors file into an nnfun params tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import nnfun as nf
from nnfun.checkpoint import CheckpointError, import_state_dict

MODEL = nf.Sequential([nf.Dense(5), jax.nn.relu, nf.Dense(3)])
SPEC = jax.ShapeDtypeStruct((2, 4), jnp.float32)


def _torch_state_dict(dtype=np.float32):
    """What ``nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).state_dict()`` holds."""
    rng = np.random.default_rng(0)
    return {
        "0.weight": rng.standard_normal((5, 4)).astype(dtype),  # torch Linear: (out, in)
        "0.bias": rng.standard_normal(5).astype(dtype),
        "2.weight": rng.standard_normal((3, 5)).astype(dtype),
        "2.bias": rng.standard_normal(3).astype(dtype),
        "num_batches_tracked": np.zeros((), np.int64),  # something to skip
    }


def torch_names(name):
    if name == "num_batches_tracked":
        return None
    layer, kind = name.split(".")
    return (f"{layer}/kernel", np.transpose) if kind == "weight" else f"{layer}/bias"


@pytest.fixture
def path(tmp_path):
    path = tmp_path / "torch.safetensors"
    safetensors.numpy.save_file(_torch_state_dict(), path, metadata={"format": "pt"})
    return path


def test_imported_params_compute_the_torch_forward_pass(path):
    like, _ = nf.init_shapes(MODEL, SPEC)
    params = import_state_dict(path, like, torch_names)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    y, _ = MODEL.apply(params, {}, jnp.asarray(x))
    sd = _torch_state_dict()
    hidden = np.maximum(x @ sd["0.weight"].T + sd["0.bias"], 0.0)
    np.testing.assert_allclose(np.asarray(y), hidden @ sd["2.weight"].T + sd["2.bias"], rtol=1e-5)
    assert isinstance(params["0"]["kernel"], jax.Array)


def test_float16_tensors_are_cast_to_the_like_dtype(tmp_path):
    path = tmp_path / "half.safetensors"
    safetensors.numpy.save_file(_torch_state_dict(np.float16), path)
    like, _ = nf.init_shapes(MODEL, SPEC)
    params = import_state_dict(path, like, torch_names)
    assert params["2"]["kernel"].dtype == jnp.float32
    expected = _torch_state_dict(np.float16)["2.weight"].T.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(params["2"]["kernel"]), expected)


def test_numpy_like_gives_numpy_arrays(path):
    like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nf.init_shapes(MODEL, SPEC)[0])
    params = import_state_dict(path, like, torch_names)
    assert isinstance(params["0"]["bias"], np.ndarray)


def test_forgetting_the_transpose_is_a_shape_error(path):
    like, _ = nf.init_shapes(MODEL, SPEC)

    def untransposed(name):
        result = torch_names(name)
        return result[0] if isinstance(result, tuple) else result

    with pytest.raises(
        CheckpointError, match=r"0/kernel \(from 0.weight\): expected float32\[4, 5\]"
    ):
        import_state_dict(path, like, untransposed)


def test_unknown_targets_and_missing_leaves(path):
    like, _ = nf.init_shapes(MODEL, SPEC)

    def renamed(name):
        result = torch_names(name)
        return ("1/kernel", np.transpose) if name == "2.weight" else result

    with pytest.raises(CheckpointError) as info:
        import_state_dict(path, like, renamed)
    assert "unexpected (in the file, not in like): 1/kernel (from 2.weight)" in str(info.value)
    assert "missing (in like, not in the file): 2/kernel" in str(info.value)


def test_two_tensors_for_one_leaf(path):
    like, _ = nf.init_shapes(MODEL, SPEC)
    with pytest.raises(CheckpointError, match="0/bias: filled by both"):
        import_state_dict(path, like, lambda n: "0/bias" if n.endswith("bias") else None)


def test_non_strict_keeps_the_like_values(path):
    params, _ = MODEL.init(jax.random.key(0), SPEC)
    only_first = import_state_dict(
        path, params, lambda n: torch_names(n) if n.startswith("0.") else None, strict=False
    )
    np.testing.assert_array_equal(only_first["2"]["kernel"], params["2"]["kernel"])
    np.testing.assert_array_equal(only_first["0"]["bias"], _torch_state_dict()["0.bias"])


def test_integer_dtypes_must_match(tmp_path):
    path = tmp_path / "ints.safetensors"
    safetensors.numpy.save_file({"table": np.zeros(3, np.int64)}, path)
    with pytest.raises(CheckpointError, match=r"table \(from table\): expected int32\[3\]"):
        import_state_dict(path, {"table": jnp.zeros(3, jnp.int32)}, lambda n: n)


def test_a_bad_mapping_result_is_a_type_error(path):
    like, _ = nf.init_shapes(MODEL, SPEC)
    with pytest.raises(TypeError, match=r"mapping\('[^']+'\) returned 42; return None"):
        import_state_dict(path, like, lambda n: 42)
