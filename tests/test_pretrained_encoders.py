"""Bert and ViT against Hugging Face ``transformers``: outputs, gradients, round trip, bad input.

The references in ``tests/fixtures/hf/<name>/`` (``reference.npz``,
``roundtrip.npz``) were written once by ``tests/fixtures/make_hf_encoders.py``
with ``transformers`` and PyTorch, which these tests do not need.
"""

import functools
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.checkpoint import read_safetensors, write_safetensors
from nnfun.models import ViT, from_pretrained, save_pretrained
from nnfun.models.pretrained import ConfigError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
RTOL = 1e-5


@functools.cache
def load(name):
    model, params, state = from_pretrained(FIXTURES / name)
    assert state == {}
    return model, params


@functools.cache
def reference(name, file="reference.npz"):
    return dict(np.load(FIXTURES / name / file))


def checkpoint(directory):
    """``{name without the base-model prefix: array}`` of a directory's safetensors."""
    tensors, _ = read_safetensors(pathlib.Path(directory) / "model.safetensors")
    return {n.removeprefix("bert.").removeprefix("vit."): a for n, a in tensors.items()}


def model_input(name, ref):
    if name == "bert":
        ids, types = jnp.asarray(ref["in/ids"]), jnp.asarray(ref["in/token_types"])
        return {"inputs": ids, "token_types": types, "mask": jnp.asarray(ref["in/mask"])}
    return jnp.asarray(ref["in/images"])


@functools.cache
def outputs_and_gradients(name):
    """One compiled function per model: its outputs and the fixture loss's gradients."""
    model, _ = load(name)
    weights = {k.split("/")[1]: v for k, v in reference(name).items() if k.startswith("loss_")}

    def loss(params, x):
        out, _ = model.apply(params, {}, x)
        return sum(jnp.sum(out[k] * weights[k]) for k in out), out

    return jax.jit(jax.grad(loss, has_aux=True))


def assert_close(got, want, what):
    """Relative to the reference's largest magnitude: float32 rounding, not a loose test."""
    err = float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL}"


@pytest.mark.parametrize("name", ["bert", "vit", "vit_model"])
def test_outputs_equal_transformers(name):
    model, params = load(name)
    ref = reference(name)
    x = model_input(name, ref)
    if name == "vit_model":  # forward only: one compile fewer
        out, _ = jax.jit(model.apply)(params, {}, x)
    else:
        _, out = outputs_and_gradients(name)(params, x)
    outputs = sorted(k.split("/")[1] for k in ref if k.startswith("out/"))
    assert sorted(out) == outputs
    for key in outputs:
        assert_close(out[key], ref[f"out/{key}"], f"{name} {key}")


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_gradients_equal_transformers(name, tmp_path):
    """Every parameter's gradient, written by save_pretrained in the checkpoint's names and layouts.

    The key projection's bias gets no gradient in exact arithmetic (softmax
    ignores a shift shared by all keys); both sides give rounding noise there,
    so there both must be below 1e-6 of the model's largest gradient.
    """
    model, params = load(name)
    ref = reference(name)
    grads, _ = outputs_and_gradients(name)(params, model_input(name, ref))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    save_pretrained(tmp_path, model, grads)
    mine = checkpoint(tmp_path)
    want = {k.removeprefix("grad/").removeprefix("vit."): v for k, v in ref.items() if "grad/" in k}
    assert sorted(mine) == sorted(want)
    scale = max(float(np.max(np.abs(g))) for g in want.values())
    for tensor, g in mine.items():
        if "key.bias" in tensor:  # zero, up to rounding, on both sides
            assert max(np.max(np.abs(want[tensor])), np.max(np.abs(g))) < 1e-6 * scale, tensor
        else:
            assert_close(g, want[tensor], f"{name} gradient of {tensor}")


@pytest.mark.parametrize("name", ["bert", "vit", "vit_model"])
def test_round_trip(name, tmp_path):
    """nnfun's writer, read by transformers' Auto classes (recorded), and by nnfun (here)."""
    ref, again = reference(name), reference(name, "roundtrip.npz")
    outputs = [k for k in again if not k.startswith("loading/")]
    assert sorted(f"out/{k}" for k in outputs) == sorted(k for k in ref if k.startswith("out/"))
    for key in outputs:
        assert_close(again[key], ref[f"out/{key}"], f"{name} {key} after the round trip")
    report = {k: again[k].tolist() for k in again if k.startswith("loading/")}
    assert len(report) == 4 and not any(report.values()), report  # nothing missing or unused
    model, params = load(name)
    save_pretrained(tmp_path, model, params)
    written, original = checkpoint(tmp_path), checkpoint(FIXTURES / name)
    assert sorted(written) == sorted(original)
    for tensor, a in written.items():
        np.testing.assert_array_equal(a, original[tensor], err_msg=tensor)
    model2, params2, _ = from_pretrained(tmp_path)
    assert model2 == model
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_bert_padding_never_reaches_real_tokens():
    _, params = load("bert")
    x = model_input("bert", reference("bert"))
    other = {**x, "inputs": jnp.where(x["mask"], x["inputs"], 5)}
    other["token_types"] = jnp.where(x["mask"], x["token_types"], 2)
    real = np.asarray(x["mask"])
    _, a = outputs_and_gradients("bert")(params, x)
    _, b = outputs_and_gradients("bert")(params, other)
    np.testing.assert_array_equal(np.asarray(a["hidden"])[real], np.asarray(b["hidden"])[real])
    np.testing.assert_array_equal(a["pooled"], b["pooled"])
    assert not np.allclose(np.asarray(a["hidden"])[~real], np.asarray(b["hidden"])[~real])


def test_bert_token_types_and_padding_are_optional():
    """Bare ids mean token type 0 everywhere and no padding (Hugging Face's defaults)."""
    model, params = load("bert")
    x = model_input("bert", reference("bert"))
    bare, _ = jax.jit(model.apply)(params, {}, x["inputs"])
    full = {**x, "token_types": jnp.zeros_like(x["inputs"]), "mask": jnp.ones_like(x["mask"])}
    _, out = outputs_and_gradients("bert")(params, full)
    for key in out:
        np.testing.assert_allclose(bare[key], out[key], rtol=1e-6, atol=1e-6)


def test_bad_inputs_are_named():
    model, params = load("bert")
    ids = jnp.ones((2, 5), jnp.int32)
    with pytest.raises(nf.LayerError, match=r"'token_types' must lie in \[0, 3\).* from 3 to 3"):
        model.apply(params, {}, {"inputs": ids, "token_types": jnp.full((2, 5), 3)})
    with pytest.raises(nf.LayerError, match=r"'token_types' of ints shaped like the ids \(2, 5\)"):
        model.apply(params, {}, {"inputs": ids, "token_types": jnp.zeros((2, 4), jnp.int32)})
    with pytest.raises(nf.LayerError, match=r"'inputs' of int token ids \(batch, time\)"):
        model.apply(params, {}, jnp.ones((2, 5)))
    vit, vit_params = load("vit")
    with pytest.raises(nf.LayerError, match=r"\[15, 15\] is not divisible by patch_size=4"):
        vit.apply(vit_params, {}, jnp.zeros((1, 15, 15, 3)))
    with pytest.raises(nf.LayerError, match=r"channels-first; use images.transpose\(0, 2, 3, 1\)"):
        vit.apply(vit_params, {}, jnp.zeros((1, 3, 16, 16)))
    with pytest.raises(ValueError, match="patch_size=4 does not divide image_size=15"):
        ViT(image_size=15, patch_size=4)


def copy_with(tmp_path, name, tensors=None, config=None):
    """A copy of a fixture directory with its tensors or config changed."""
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    if tensors is not None:
        write_safetensors(target / "model.safetensors", tensors, {"format": "pt"})
    if config is not None:
        (target / "config.json").write_text(json.dumps(config))
    return target


def test_bad_checkpoints_are_named(tmp_path):
    tensors, _ = read_safetensors(FIXTURES / "bert" / "model.safetensors")
    config = json.loads((FIXTURES / "bert" / "config.json").read_text())
    name = "encoder.layer.1.attention.self.query.weight"
    wrong = {**tensors, name: tensors[name][:, :31]}
    with pytest.raises(ValueError, match=rf"'{name}' has shape \(32, 31\), expected \(32, 32\)"):
        from_pretrained(copy_with(tmp_path / "a", "bert", wrong))
    extra = {**tensors, "classifier.weight": np.zeros((2, 32), np.float32)}
    with pytest.raises(ValueError, match="does not use: classifier.weight"):
        from_pretrained(copy_with(tmp_path / "b", "bert", extra))
    fewer = {k: v for k, v in tensors.items() if not k.startswith("pooler.dense.w")}
    with pytest.raises(ValueError, match="missing from the checkpoint: bert.pooler.dense.weight"):
        from_pretrained(copy_with(tmp_path / "c", "bert", fewer))
    for field, value in (("position_embedding_type", "relative_key"), ("hidden_act", "swish")):
        changed = copy_with(tmp_path / field, "bert", config={**config, field: value})
        with pytest.raises(ConfigError, match=f"{field}='{value}' is not supported"):
            from_pretrained(changed)
    vit_config = json.loads((FIXTURES / "vit" / "config.json").read_text())
    odd = copy_with(tmp_path / "d", "vit", config={**vit_config, "image_size": [16, 12]})
    with pytest.raises(ConfigError, match=r"image_size=\[16, 12\] is not supported"):
        from_pretrained(odd)


def test_bert_pretraining_checkpoint_loads_its_encoder(tmp_path):
    """As bert-base-uncased: ``bert.`` names, LayerNorm ``gamma``/``beta``, ``cls.`` heads."""
    tensors, _ = read_safetensors(FIXTURES / "bert" / "model.safetensors")
    legacy = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    renamed = {}
    for name, a in tensors.items():
        for new, old in legacy.items():
            name = name.replace(new, old)
        renamed[f"bert.{name}"] = a
    assert sum(".gamma" in n for n in renamed) == 5
    heads = {"cls.predictions.bias": np.zeros(64, np.float32)}
    heads["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)
    model, params, _ = from_pretrained(copy_with(tmp_path, "bert", {**renamed, **heads}))
    want = load("bert")
    assert model == want[0]
    jax.tree.map(np.testing.assert_array_equal, params, want[1])
    both = {
        **renamed,
        "bert.embeddings.LayerNorm.weight": renamed["bert.embeddings.LayerNorm.gamma"],
    }
    with pytest.raises(ValueError, match="appears twice"):
        from_pretrained(copy_with(tmp_path / "both", "bert", both))
