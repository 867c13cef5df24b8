"""nf.export: the artifact runs in a process that never imports nnfun, at any batch size."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.models.gpt import GPT

pytest.importorskip("flatbuffers")  # jax serializes exports with it ([export] extra)

# Runs in a fresh interpreter with nnfun made unimportable: it can only use JAX.
LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["nnfun"] = None  # any import of nnfun now raises ImportError
    import jax, numpy as np
    directory = sys.argv[1]
    outputs = {}
    for name in ("mlp", "gpt"):
        with open(f"{directory}/{name}.jax_exported", "rb") as file:
            exported = jax.export.deserialize(file.read())
        inputs = np.load(f"{directory}/{name}_inputs.npz")
        for size in ("1", "5"):
            if name == "gpt":
                x = {"inputs": inputs["ids" + size], "mask": inputs["mask" + size]}
            else:
                x = inputs["x" + size]
            outputs[f"{name}{size}"] = np.asarray(exported.call(x))
        outputs[name + "_avals"] = np.array(str(exported.in_avals))
    assert sys.modules.get("nnfun") is None, "nnfun was imported"
    np.savez(f"{directory}/outputs.npz", **outputs)
    """
)


def test_exported_models_run_without_nnfun_at_two_batch_sizes(tmp_path, key):
    mlp = nf.Sequential([nf.Dense(8), nf.BatchNorm(), jax.nn.relu, nf.Dense(3)])
    x = jax.random.normal(key, (4, 6))
    params, state = mlp.init(key, x)
    _, state = mlp.apply(params, state, x, train=True)  # running statistics away from 0 and 1
    nf.export(mlp, params, state, x[:2], tmp_path / "mlp.jax_exported")
    inputs = {f"x{n}": np.asarray(jax.random.normal(jax.random.key(n), (n, 6))) for n in (1, 5)}
    np.savez(tmp_path / "mlp_inputs.npz", **inputs)

    gpt = GPT(vocab_size=13, d_model=16, num_heads=2, num_layers=2, max_length=8)
    ids = jax.random.randint(key, (2, 8), 0, 13)
    gpt_params, gpt_state = gpt.init(key, ids)
    example = {"inputs": ids, "mask": jnp.ones((2, 8), bool)}
    nf.export(gpt, gpt_params, gpt_state, example, str(tmp_path / "gpt.jax_exported"))
    gpt_inputs = {}
    for n in (1, 5):
        gpt_inputs[f"ids{n}"] = np.asarray(jax.random.randint(jax.random.key(n), (n, 8), 0, 13))
        gpt_inputs[f"mask{n}"] = np.arange(8)[None, :] < np.arange(8 - n, 8)[:, None]
    np.savez(tmp_path / "gpt_inputs.npz", **gpt_inputs)

    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
    run_mlp, run_gpt = jax.jit(mlp.apply), jax.jit(gpt.apply)
    for n in (1, 5):
        expected = run_mlp(params, state, inputs[f"x{n}"])[0]
        np.testing.assert_allclose(outputs[f"mlp{n}"], expected, rtol=1e-5, atol=1e-6)
        x_n = {"inputs": gpt_inputs[f"ids{n}"], "mask": gpt_inputs[f"mask{n}"]}
        expected = run_gpt(gpt_params, gpt_state, x_n)[0]
        np.testing.assert_allclose(outputs[f"gpt{n}"], expected, rtol=1e-5, atol=1e-5)
    assert "batch,6" in str(outputs["mlp_avals"]).replace(" ", "")
    # the write was atomic: no temporary files are left next to the artifacts
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_replaces_an_existing_file(tmp_path, key):
    model = nf.Sequential([nf.Dense(2)])
    params, state = model.init(key, jnp.zeros((1, 3)))
    path = tmp_path / "sub" / "model.jax_exported"  # missing parents are created
    path.parent.mkdir()
    path.write_bytes(b"old")
    exported = nf.export(model, params, state, jax.ShapeDtypeStruct((1, 3), jnp.float32), path)
    assert path.read_bytes() == bytes(exported.serialize())
    assert os.listdir(path.parent) == ["model.jax_exported"]


@pytest.mark.parametrize(
    "example, what",
    [
        ([[1.0, 2.0, 3.0]], r"example_input\[0\]\[0\] is a float"),
        (3, "example_input is a int"),
        ("text", "example_input is a str"),
        ({"inputs": None}, "holds no arrays"),
    ],
)
def test_an_example_input_that_is_not_arrays_raises(tmp_path, key, example, what):
    model = nf.Sequential([nf.Dense(2)])
    params, state = model.init(key, jnp.zeros((1, 3)))
    with pytest.raises(TypeError, match=what):
        nf.export(model, params, state, example, tmp_path / "m.jax_exported")
    assert list(tmp_path.iterdir()) == []


def test_a_path_that_cannot_be_written_raises(tmp_path, key):
    model = nf.Sequential([nf.Dense(2)])
    params, state = model.init(key, jnp.zeros((1, 3)))
    x = jnp.zeros((1, 3))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=r"a_file.* is not a writable directory"):
        nf.export(model, params, state, x, blocker / "m.jax_exported")
    with pytest.raises(IsADirectoryError, match="is a directory. Fix: name a file"):
        nf.export(model, params, state, x, tmp_path)
    with pytest.raises(TypeError, match="expected an nnfun Layer"):
        nf.export(lambda v: v, params, state, x, tmp_path / "m.jax_exported")
