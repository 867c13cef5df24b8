"""Transformer blocks against PyTorch, through committed fixtures (no torch needed).

``tests/fixtures/make_transformer_torch.py`` ran ``nn.TransformerEncoderLayer``,
``nn.TransformerDecoderLayer`` and ``nn.Transformer`` once and saved their
weights, inputs and outputs; here the same weights go into nnfun's blocks.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "transformer_torch.npz"
CASES = [f"{a}_{n}" for a in ("relu", "gelu", "gelu_tanh") for n in ("post", "pre")]


@pytest.fixture(scope="module")
def data():
    return dict(np.load(FIXTURE))


def _dense(weights, name):
    return {"kernel": weights[f"{name}.weight"].T, "bias": weights[f"{name}.bias"]}


def _attention(weights, name):
    w, b = weights[f"{name}.in_proj_weight"], weights[f"{name}.in_proj_bias"]
    pairs = zip(("query", "key", "value"), np.split(w, 3), np.split(b, 3))
    params = {name: {"kernel": wi.T, "bias": bi} for name, wi, bi in pairs}
    params["out"] = _dense(weights, f"{name}.out_proj")
    return params


def _norm(weights, name):
    return {"scale": weights[f"{name}.weight"], "bias": weights[f"{name}.bias"]}


def _layer_params(weights, decoder):
    params = {
        "attention": _attention(weights, "self_attn"),
        "attention_norm": _norm(weights, "norm1"),
    }
    params["mlp"] = {"hidden": _dense(weights, "linear1"), "out": _dense(weights, "linear2")}
    if decoder:
        params["cross_attention"] = _attention(weights, "multihead_attn")
        params["cross_attention_norm"] = _norm(weights, "norm2")
    params["mlp_norm"] = _norm(weights, "norm3" if decoder else "norm2")
    return params


def _weights(data, prefix, separator="/"):
    start = f"{prefix}{separator}"
    return {k[len(start) :]: v for k, v in data.items() if k.startswith(start)}


def _settings(case):
    activation, order = case.rsplit("_", 1)
    return dict(num_heads=2, mlp_features=12, activation=activation, norm_first=order == "pre")


@pytest.mark.parametrize("case", CASES)
def test_encoder_layer_equals_pytorch(data, case):
    block = nf.TransformerBlock(causal=False, **_settings(case))
    params = _layer_params(_weights(data, f"{case}/encoder"), decoder=False)
    x = {"inputs": jnp.asarray(data["src"]), "lengths": jnp.asarray(data["src_lengths"])}
    y, _ = block.apply(params, {}, x)
    np.testing.assert_allclose(y, data[f"{case}/encoder_out"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_decoder_layer_equals_pytorch(data, case):
    block = nf.DecoderBlock(**_settings(case))
    params = _layer_params(_weights(data, f"{case}/decoder"), decoder=True)
    x = {
        "inputs": jnp.asarray(data["tgt"]),
        "lengths": jnp.asarray(data["tgt_lengths"]),
        "memory": jnp.asarray(data["src"]),
        "memory_lengths": jnp.asarray(data["src_lengths"]),
    }
    y, _ = block.apply(params, {}, x)
    np.testing.assert_allclose(y, data[f"{case}/decoder_out"], rtol=1e-5, atol=1e-5)


def _stacked(weights, prefix, n, decoder):
    layers = [
        _layer_params(_weights(weights, f"{prefix}.layers.{i}", "."), decoder) for i in range(n)
    ]
    return {"layer": jax.tree.map(lambda *a: np.stack(a), *layers)}


@pytest.mark.parametrize("case", CASES)
def test_two_layer_transformer_equals_pytorch(data, case):
    # nn.Transformer = encoder layers + LayerNorm, decoder layers + LayerNorm, padding
    # flowing through each Stack as extras.
    settings = _settings(case)
    encoder = nf.Sequential(
        {
            "blocks": nf.Stack(2, nf.TransformerBlock(causal=False, **settings)),
            "norm": nf.LayerNorm(),
        }
    )
    decoder = nf.Sequential(
        {"blocks": nf.Stack(2, nf.DecoderBlock(**settings)), "norm": nf.LayerNorm()}
    )
    weights = _weights(data, f"{case}/transformer")
    enc_params = {
        "blocks": _stacked(weights, "encoder", 2, False),
        "norm": _norm(weights, "encoder.norm"),
    }
    dec_params = {
        "blocks": _stacked(weights, "decoder", 2, True),
        "norm": _norm(weights, "decoder.norm"),
    }
    src_lengths = jnp.asarray(data["src_lengths"])
    memory, _ = encoder.apply(
        enc_params, {}, {"inputs": jnp.asarray(data["src"]), "lengths": src_lengths}
    )
    y, _ = decoder.apply(
        dec_params,
        {},
        {
            "inputs": jnp.asarray(data["tgt"]),
            "lengths": jnp.asarray(data["tgt_lengths"]),
            "memory": memory,
            "memory_lengths": src_lengths,
        },
    )
    np.testing.assert_allclose(y, data[f"{case}/transformer_out"], rtol=1e-5, atol=2e-5)
