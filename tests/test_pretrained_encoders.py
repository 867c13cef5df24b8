"""Bert and ViT against Hugging Face ``transformers``: outputs, gradients, round trip, bad input.

The references in ``tests/fixtures/hf/<name>/`` (``reference.npz``,
``roundtrip.npz``) were written once by ``tests/fixtures/make_hf_encoders.py``
with ``transformers`` and PyTorch, which these tests do not need.
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.checkpoint import read_safetensors
from nnfun.models import Bert, ViT
from nnfun.models import hf_encoders as hf

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "hf"
FAMILIES = {
    "bert": (hf.bert_from_config, hf.bert_tensors, hf.bert_config),
    "vit": (hf.vit_from_config, hf.vit_tensors, hf.vit_config),
}
RTOL = 1e-5


@functools.cache
def load(name):
    directory = FIXTURES / name
    config = json.loads((directory / "config.json").read_text())
    tensors, _ = read_safetensors(directory / "model.safetensors")
    from_config, rules_of, _ = FAMILIES[config["model_type"]]
    model = from_config(config, frozenset(tensors))
    return model, hf.params_from_tensors(model, rules_of(model), tensors), tensors


@functools.cache
def reference(name, file="reference.npz"):
    return dict(np.load(FIXTURES / name / file))


def model_input(name, ref):
    if name == "bert":
        ids, types = jnp.asarray(ref["in/ids"]), jnp.asarray(ref["in/token_types"])
        return {"inputs": ids, "token_types": types, "mask": jnp.asarray(ref["in/mask"])}
    return jnp.asarray(ref["in/images"])


@functools.cache
def outputs_and_gradients(name):
    """One compiled function per model: its outputs and the fixture loss's gradients."""
    model, _, _ = load(name)
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
    model, params, _ = load(name)
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
def test_gradients_equal_transformers(name):
    """Every parameter's gradient, mapped back to the checkpoint's name and layout.

    The key projection's bias gets no gradient in exact arithmetic (softmax
    ignores a shift shared by all keys); both sides give rounding noise there,
    so there both must be below 1e-6 of the model's largest gradient.
    """
    model, params, _ = load(name)
    ref = reference(name)
    grads, _ = outputs_and_gradients(name)(params, model_input(name, ref))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    mine = hf.tensors_from_params(FAMILIES[model_type(model)][1](model), grads)
    assert sorted(f"grad/{k}" for k in mine) == sorted(k for k in ref if k.startswith("grad/"))
    scale = max(float(np.max(np.abs(ref[f"grad/{k}"]))) for k in mine)
    for tensor, g in mine.items():
        want = ref[f"grad/{tensor}"]
        if "key.bias" in tensor:  # zero, up to rounding, on both sides
            assert max(np.max(np.abs(want)), np.max(np.abs(g))) < 1e-6 * scale, tensor
        else:
            assert_close(g, want, f"{name} gradient of {tensor}")


@pytest.mark.parametrize("name", ["bert", "vit", "vit_model"])
def test_round_trip(name):
    """nnfun's writer, read by transformers (recorded), and by nnfun again (here)."""
    ref, again = reference(name), reference(name, "roundtrip.npz")
    for key in again:
        assert_close(again[key], ref[f"out/{key}"], f"{name} {key} after the round trip")
    model, params, tensors = load(name)
    rules = FAMILIES[model_type(model)][1](model)
    written = hf.tensors_from_params(rules, params)
    assert sorted(written) == sorted(tensors)
    for tensor, a in written.items():
        np.testing.assert_array_equal(a, tensors[tensor], err_msg=tensor)
    config = FAMILIES[model_type(model)][2](model)
    assert FAMILIES[model_type(model)][0](config, frozenset(written)) == model


def model_type(model):
    return "bert" if isinstance(model, Bert) else "vit"


def test_bert_padding_never_reaches_real_tokens():
    _, params, _ = load("bert")
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
    model, params, _ = load("bert")
    x = model_input("bert", reference("bert"))
    bare, _ = jax.jit(model.apply)(params, {}, x["inputs"])
    full = {**x, "token_types": jnp.zeros_like(x["inputs"]), "mask": jnp.ones_like(x["mask"])}
    _, out = outputs_and_gradients("bert")(params, full)
    for key in out:
        np.testing.assert_allclose(bare[key], out[key], rtol=1e-6, atol=1e-6)


def test_bad_inputs_are_named():
    model, params, _ = load("bert")
    ids = jnp.ones((2, 5), jnp.int32)
    with pytest.raises(
        nf.LayerError, match=r"'token_types' must lie in \[0, 3\).*got values from 3 to 3"
    ):
        model.apply(params, {}, {"inputs": ids, "token_types": jnp.full((2, 5), 3)})
    with pytest.raises(nf.LayerError, match=r"'token_types' of ints shaped like the ids \(2, 5\)"):
        model.apply(params, {}, {"inputs": ids, "token_types": jnp.zeros((2, 4), jnp.int32)})
    with pytest.raises(nf.LayerError, match=r"'inputs' of int token ids \(batch, time\)"):
        model.apply(params, {}, jnp.ones((2, 5)))
    vit, vit_params, _ = load("vit")
    with pytest.raises(nf.LayerError, match=r"\[15, 15\] is not divisible by patch_size=4"):
        vit.apply(vit_params, {}, jnp.zeros((1, 15, 15, 3)))
    with pytest.raises(nf.LayerError, match=r"channels-first; use images.transpose\(0, 2, 3, 1\)"):
        vit.apply(vit_params, {}, jnp.zeros((1, 3, 16, 16)))
    with pytest.raises(ValueError, match="patch_size=4 does not divide image_size=15"):
        ViT(image_size=15, patch_size=4)


def test_bad_checkpoints_are_named():
    model, _, tensors = load("bert")
    rules = hf.bert_tensors(model)
    name = "encoder.layer.1.attention.self.query.weight"
    wrong = {**tensors, name: tensors[name][:, :31]}
    with pytest.raises(ValueError, match=rf"'{name}' has shape \(32, 31\), expected \(32, 32\)"):
        hf.params_from_tensors(model, rules, wrong)
    extra = {**tensors, "cls.predictions.bias": np.zeros(64, np.float32)}
    with pytest.raises(ValueError, match=r"not used by the model: \['cls.predictions.bias'\]"):
        hf.params_from_tensors(model, rules, extra)
    fewer = {k: v for k, v in tensors.items() if not k.startswith("pooler.")}
    with pytest.raises(ValueError, match=r"lacks: \['pooler.dense.bias', 'pooler.dense.weight'\]"):
        hf.params_from_tensors(model, rules, fewer)
    config = json.loads((FIXTURES / "bert" / "config.json").read_text())
    with pytest.raises(hf.ConfigError, match="position_embedding_type='relative_key'"):
        hf.bert_from_config({**config, "position_embedding_type": "relative_key"})
    with pytest.raises(hf.ConfigError, match="hidden_act='swish'"):
        hf.bert_from_config({**config, "hidden_act": "swish"})


def test_legacy_layer_norm_names_load():
    model, params, tensors = load("bert")
    old = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in tensors.items()
    }
    again = hf.params_from_tensors(model, hf.bert_tensors(model), old)
    jax.tree.map(np.testing.assert_array_equal, again, params)
