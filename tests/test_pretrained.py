"""from_pretrained / save_pretrained on the decoder families, against outputs of transformers.

The fixtures (tests/fixtures/hf/{gpt2,llama,qwen2}) were written by
tests/fixtures/make_hf.py with torch and transformers: tiny random-weight models,
their logits, hidden states and greedy generations, and the outputs transformers
gave after loading nnfun's save_pretrained output (roundtrip.npz).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.checkpoint import CheckpointError, read_safetensors, write_safetensors
from nnfun.core._children import apply_child
from nnfun.models.pretrained import ConfigError

HF = pathlib.Path(__file__).parent / "fixtures" / "hf"
DECODERS = ("gpt2", "llama", "qwen2")


def _reference(name: str, kind: str = "reference") -> dict[str, np.ndarray]:
    return dict(np.load(HF / name / f"{kind}.npz"))


def _close(actual, expected, rtol=1e-5):
    # float32 to 1e-5 relative, with the absolute floor at 1e-5 of the largest value
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=rtol * scale)


def _hidden(model, params, ids):
    """The last hidden state (after the final norm): the model's children up to the head."""
    x = ids
    for name, layer in model._children():
        if name == "head":
            break
        x, _ = apply_child(name, layer, params.get(name, {}), {}, x, None, False, {})
    return x


@pytest.fixture(scope="module", params=DECODERS)
def loaded(request):
    return request.param, nf.models.from_pretrained(HF / request.param)


def test_logits_hidden_states_and_greedy_match_transformers(loaded):
    name, (model, params, state) = loaded
    ref = _reference(name)
    ids = jnp.asarray(ref["ids"], jnp.int32)
    logits, _ = model.apply(params, state, ids)
    _close(logits, ref["logits"])
    _close(_hidden(model, params, ids), ref["hidden_states"][-1])
    prompt = ids[:, : ref["greedy"].shape[1] - 8]
    tokens = nf.models.generate(model, params, prompt, jax.random.key(0), 8, top_k=1)
    np.testing.assert_array_equal(np.asarray(tokens), ref["greedy"])


@pytest.mark.parametrize("name", DECODERS)
def test_transformers_loads_what_save_pretrained_wrote(name):
    # Recorded by make_hf.py: transformers' outputs from nnfun's save_pretrained output.
    ref, back = _reference(name), _reference(name, "roundtrip")
    _close(back["logits"], ref["logits"])
    np.testing.assert_array_equal(back["greedy"], ref["greedy"])


def test_save_then_load_keeps_every_parameter_and_the_model(loaded, tmp_path):
    name, (model, params, _) = loaded
    nf.models.save_pretrained(tmp_path, model, params, max_shard_bytes=30_000)
    again, params_again, _ = nf.models.from_pretrained(tmp_path)
    assert again == model
    jax.tree.map(np.testing.assert_array_equal, params_again, params)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == name


def test_llama3_rope_config_read_in_both_spellings():
    # transformers 5 writes rope_parameters; 4 wrote rope_theta and rope_scaling.
    config = json.loads((HF / "llama" / "config.json").read_text())
    build = nf.models.pretrained.FAMILIES["llama"].build
    model = build(config)
    rope = dict(config.pop("rope_parameters"))
    old = {**config, "rope_theta": rope.pop("rope_theta"), "rope_scaling": rope}
    assert build(old) == model
    assert model.rotary.scaling == "llama3" and model.rotary.original_max_length == 64


def test_llama3_frequencies_follow_the_formula():
    # Llama 3.1's rule in NumPy (float64): keep high frequencies, divide low ones, blend between.
    rope = nf.RotaryPositions(base=10000.0, scaling="llama3", factor=8.0, original_max_length=64)
    inv = 10000.0 ** (-np.arange(8) / 8)
    wavelength = 2 * np.pi / inv
    smooth = (64 / wavelength - 1.0) / (4.0 - 1.0)
    expected = np.where(
        wavelength < 64 / 4.0,
        inv,
        np.where(wavelength > 64 / 1.0, inv / 8.0, (1 - smooth) * inv / 8.0 + smooth * inv),
    )
    assert (wavelength < 16).any() and (wavelength > 64).any() and (abs(smooth - 0.5) < 0.5).any()
    np.testing.assert_allclose(np.asarray(rope.inverse_frequencies(8)), expected, rtol=1e-6)
    linear = nf.RotaryPositions(base=100.0, scaling="linear", factor=2.0)
    np.testing.assert_allclose(
        linear.inverse_frequencies(4), 100.0 ** (-np.arange(4) / 4) / 2, 1e-6
    )


def test_dtype_and_sharding(tmp_path):
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    _, params, _ = nf.models.from_pretrained(HF / "gpt2", dtype=jnp.bfloat16, sharding=sharding)
    leaves = jax.tree.leaves(params)
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.bfloat16)}
    assert all(leaf.sharding == sharding for leaf in leaves)
    tensors, _ = read_safetensors(HF / "gpt2" / "model.safetensors")
    expected = tensors["transformer.wte.weight"].astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(params["embedding"]["embedding"]), expected)
    seen = []
    nf.models.from_pretrained(HF / "gpt2", sharding=lambda p, s: seen.append(p) or sharding)
    assert "blocks/layer/attention/query/kernel" in seen
    tree = jax.tree.map(lambda _: sharding, params)
    _, again, _ = nf.models.from_pretrained(HF / "gpt2", sharding=tree)
    assert all(leaf.sharding == sharding for leaf in jax.tree.leaves(again))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_checkpoint_is_read_as_stored(tmp_path, dtype):
    shutil.copytree(HF / "qwen2", tmp_path / "m")
    file = tmp_path / "m" / "model.safetensors"
    tensors, metadata = read_safetensors(file)
    half = {k: v.astype(dtype) for k, v in tensors.items()}
    write_safetensors(file, half, metadata)
    _, params, _ = nf.models.from_pretrained(tmp_path / "m")
    got = np.asarray(params["blocks"]["layer"]["attention"]["query"]["bias"][1])
    np.testing.assert_array_equal(got, half["model.layers.1.self_attn.q_proj.bias"])


def test_checkpoint_of_the_bare_model_with_buffers(tmp_path):
    # GPT2Model.save_pretrained drops the "transformer." prefix; old files carry attn.bias.
    directory = _copy(tmp_path, "gpt2")
    file = directory / "model.safetensors"
    mask = np.tril(np.ones((1, 1, 32, 32), np.float32))
    _rewrite(file, lambda t: {k.removeprefix("transformer."): v for k, v in t.items()})
    _rewrite(file, lambda t: {**t, "h.0.attn.bias": mask, "h.1.attn.bias": mask})
    model, params, state = nf.models.from_pretrained(directory)
    ref = _reference("gpt2")
    _close(model.apply(params, state, jnp.asarray(ref["ids"], jnp.int32))[0], ref["logits"])


def test_mistral_config_loads_as_the_llama_model():
    config = json.loads((HF / "llama" / "config.json").read_text())
    families = nf.models.pretrained.FAMILIES
    mistral = {**config, "model_type": "mistral", "sliding_window": None}
    for field in ("attention_bias", "mlp_bias", "pretraining_tp"):
        mistral.pop(field)
    assert families["mistral"].build(mistral) == families["llama"].build(config)
    with pytest.raises(ConfigError, match="sliding_window=16 is not supported"):
        families["mistral"].build({**mistral, "sliding_window": 16})


SHARDED_LOAD = """
import sys, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import nnfun as nf
path, reference = sys.argv[1], np.load(sys.argv[2])
mesh = nf.parallel.make_mesh({"model": 4})
rules = {"blocks/layer/mlp/*/kernel": P(None, None, "model"), "embedding/embedding": P("model")}
built = nf.models.pretrained.FAMILIES["llama"].build(nf.models.pretrained.read_config(path))
shapes, _ = nf.init_shapes(built, jax.ShapeDtypeStruct((1, 1), jnp.int32))
specs = nf.parallel.param_specs(shapes, mesh, rules)
tree = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                    is_leaf=lambda x: isinstance(x, P))
model, params, state = nf.models.from_pretrained(path, sharding=tree)
kernel = params["blocks"]["layer"]["mlp"]["gate"]["kernel"]
assert kernel.sharding.spec == P(None, None, "model"), kernel.sharding
assert {s.data.shape for s in kernel.addressable_shards} == {(2, 64, 24)}
logits, _ = jax.jit(model.apply)(params, state, jnp.asarray(reference["ids"], jnp.int32))
scale = np.abs(reference["logits"]).max()
np.testing.assert_allclose(np.asarray(logits), reference["logits"], 1e-5, 1e-5 * scale)
print("ok")
"""


@pytest.mark.slow
def test_sharded_placement_on_four_devices():
    # A fresh process with 4 host devices: the MLP kernels split over "model", logits unchanged.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    args = [str(HF / "llama"), str(HF / "llama" / "reference.npz")]
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_LOAD, *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


# Bad input: each a clear error.


def _copy(tmp_path, name="llama"):
    return pathlib.Path(shutil.copytree(HF / name, tmp_path / name))


def _edit_config(directory, **changes):
    file = directory / "config.json"
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config))


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        nf.models.from_pretrained(tmp_path)


def test_unknown_architecture_lists_known_ones(tmp_path):
    directory = _copy(tmp_path, "gpt2")
    _edit_config(directory, model_type="mamba", architectures=["MambaForCausalLM"])
    with pytest.raises(ConfigError, match=r"'mamba'.*known: .*gpt2, llama"):
        nf.models.from_pretrained(directory)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn'"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported"),
        ({"sliding_window_pattern": 4}, "unsupported field.*sliding_window_pattern"),
        ({"head_dim": 8}, r"head_dim=8 is not supported"),
        ({"mlp_bias": True}, r"mlp_bias=True"),
    ],
)
def test_unsupported_config_field_is_named(tmp_path, changes, message):
    directory = _copy(tmp_path)
    _edit_config(directory, **changes)
    with pytest.raises(ConfigError, match=message):
        nf.models.from_pretrained(directory)


def _rewrite(file, change):
    tensors, metadata = read_safetensors(file)
    write_safetensors(file, change(dict(tensors)), metadata)


def test_wrong_shape_names_tensor_expected_and_found(tmp_path):
    directory = _copy(tmp_path, "gpt2")
    name = "transformer.h.1.mlp.c_fc.weight"
    _rewrite(directory / "model.safetensors", lambda t: {**t, name: t[name][:, :-1].copy()})
    with pytest.raises(CheckpointError, match=rf"{name}.*\(32, 127\), expected \(32, 128\)"):
        nf.models.from_pretrained(directory)


def test_unused_and_missing_tensors_are_named(tmp_path):
    directory = _copy(tmp_path, "gpt2")
    file = directory / "model.safetensors"
    _rewrite(file, lambda t: {**t, "transformer.extra.weight": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match="does not use: transformer.extra.weight"):
        nf.models.from_pretrained(directory)
    _rewrite(file, lambda t: {k: v for k, v in t.items() if "extra" not in k and "ln_f.b" not in k})
    with pytest.raises(CheckpointError, match="missing from the checkpoint: transformer.ln_f.bias"):
        nf.models.from_pretrained(directory)


def test_truncated_shard(tmp_path):
    directory = _copy(tmp_path)
    shard = sorted(directory.glob("model-*.safetensors"))[2]
    os.truncate(shard, shard.stat().st_size - 10)
    with pytest.raises(CheckpointError, match=f"{shard.name}: truncated file"):
        nf.models.from_pretrained(directory)


def test_index_naming_a_missing_shard(tmp_path):
    directory = _copy(tmp_path)
    shard = sorted(directory.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"names shard {shard.name}.*not in"):
        nf.models.from_pretrained(directory)


def test_corrupted_index(tmp_path):
    directory = _copy(tmp_path)
    (directory / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(CheckpointError, match="index.json: not a JSON object"):
        nf.models.from_pretrained(directory)


def test_save_pretrained_refuses_a_model_no_family_describes(tmp_path):
    model = nf.models.GPT(
        vocab_size=8, d_model=8, num_heads=2, num_layers=1, positions="sinusoidal"
    )
    with pytest.raises(ValueError, match="no Hugging Face family describes a GPT"):
        nf.models.save_pretrained(tmp_path, model, {})
