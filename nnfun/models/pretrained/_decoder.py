"""Decoder-only language models: GPT-2, Llama, Mistral and Qwen2 as :class:`GPT` settings.

GPT-2 stores its projections as ``Conv1D`` weights, already ``(in, out)``, with
query, key and value fused in ``c_attn``; the Llama family stores
``torch.nn.Linear`` weights ``(out, in)`` and separate projections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ...core._layer import Layer
from ...layers._position import RotaryPositions
from ..gpt import GPT, LLAMA_SETTINGS
from ._registry import (
    ConfigError,
    ConfigReader,
    Family,
    Tensor,
    fused_columns,
    linear,
    register,
    same,
    unused,
)

_GPT2_HARMLESS = {
    "attn_pdrop", "embd_pdrop", "resid_pdrop", "n_ctx", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
}  # fmt: skip
_LLAMA_HARMLESS = {"attention_dropout", "pretraining_tp"}
_ROPE_KEYS = {
    "default": set(),
    "linear": {"factor"},
    "llama3": {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
}


def _example(model: Layer) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, 1), jnp.int32)


def _block(model: GPT, i: int, leaf: str) -> tuple[str, int | None]:
    """A block parameter's path and stacked row: ``blocks/layer/...`` row i, or ``blocks/i/...``."""
    return (f"blocks/layer/{leaf}", i) if model.stacked else (f"blocks/{i}/{leaf}", None)


def _gpt2(config: Mapping[str, Any]) -> GPT:
    r = ConfigReader(config, "gpt2")
    d, heads = r.get("n_embd"), r.get("n_head")
    r.require("activation_function", ["gelu_new", "gelu_pytorch_tanh"], "gelu_new")
    r.require("scale_attn_weights", [True], True)
    r.require("scale_attn_by_inverse_layer_idx", [False], False)
    r.require("add_cross_attention", [False], False)
    r.require("reorder_and_upcast_attn", [False, True], False)  # a float32 softmax: the same math
    model = GPT(
        vocab_size=r.get("vocab_size"),
        d_model=d,
        num_heads=heads,
        num_layers=r.get("n_layer"),
        max_length=r.get("n_positions"),
        mlp_features=r.get("n_inner", None),
        epsilon=r.get("layer_norm_epsilon", 1e-5),
        tied_head=r.get("tie_word_embeddings", True),
    )
    r.finish(_GPT2_HARMLESS)
    return model


def _gpt2_tensors(model: Layer) -> list[Tensor]:
    assert isinstance(model, GPT)
    out = [same("transformer.wte.weight", "embedding/embedding")]
    out.append(same("transformer.wpe.weight", "positions/embedding"))
    for i in range(model.num_layers):
        h = f"transformer.h.{i}"
        qkv = ("query", "key", "value")
        for suffix in ("weight", "bias"):
            leaf = "kernel" if suffix == "weight" else "bias"
            paths = [_block(model, i, f"attention/{p}/{leaf}") for p in qkv]
            out.append(
                fused_columns(f"{h}.attn.c_attn.{suffix}", tuple(p for p, _ in paths), paths[0][1])
            )
            for hf, ours in (
                ("ln_1", "attention_norm"),
                ("ln_2", "mlp_norm"),
                ("attn.c_proj", "attention/out"),
                ("mlp.c_fc", "mlp/hidden"),
                ("mlp.c_proj", "mlp/out"),
            ):
                leaf_norm = {"weight": "scale", "bias": "bias"}[suffix] if "ln" in hf else leaf
                out.append(same(f"{h}.{hf}.{suffix}", *_block(model, i, f"{ours}/{leaf_norm}")))
        out += [unused(f"{h}.attn.bias"), unused(f"{h}.attn.masked_bias")]  # causal masks
    out += [
        same("transformer.ln_f.weight", "norm/scale"),
        same("transformer.ln_f.bias", "norm/bias"),
    ]
    out.append(_head(model))
    return out


def _head(model: GPT) -> Tensor:
    """``lm_head.weight``: its own Dense, or (tied) an optional copy of the embedding."""
    return (
        linear("lm_head.weight", "head/kernel") if not model.tied_head else unused("lm_head.weight")
    )


def _gpt2_config(model: Layer) -> dict[str, Any]:
    assert isinstance(model, GPT)
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": model.vocab_size,
        "n_embd": model.d_model,
        "n_head": model.num_heads,
        "n_layer": model.num_layers,
        "n_positions": model.max_length,
        "n_inner": model.mlp_features,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": model.epsilon,
        "tie_word_embeddings": model.tied_head,
        "attn_pdrop": model.dropout,
        "embd_pdrop": model.dropout,
        "resid_pdrop": model.dropout,
    }


def _accepts_gpt2(model: Layer) -> bool:
    return (
        isinstance(model, GPT)
        and (model.positions, model.norm, model.activation) == ("learned", "layer", "gelu_tanh")
        and model.use_bias
        and model.qkv_bias in (None, True)
        and model.num_kv_heads in (None, model.num_heads)
    )


def _rotary(r: ConfigReader, max_length: int) -> RotaryPositions:
    """The rotary settings from ``rope_parameters`` (transformers 5) or ``rope_theta`` and
    ``rope_scaling`` (transformers 4)."""
    params = r.get("rope_parameters", None)
    if params is None:
        params = {**(r.get("rope_scaling", None) or {}), "rope_theta": r.get("rope_theta", 1e4)}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in _ROPE_KEYS:
        raise ConfigError(
            f"{r.family} config.json: rope type {kind!r} (rope_scaling / rope_parameters) is "
            f"not supported; nnfun implements {sorted(_ROPE_KEYS)}"
        )
    extra = set(params) - _ROPE_KEYS[kind] - {"rope_type", "type", "rope_theta"}
    if extra:
        raise ConfigError(
            f"{r.family} config.json: rope field(s) {sorted(extra)} are not supported for "
            f"rope type {kind!r}"
        )
    settings: dict[str, Any] = {"base": float(params.get("rope_theta", 1e4))}
    if kind != "default":
        settings |= {"scaling": kind, "factor": float(params["factor"])}
    if kind == "llama3":
        settings |= {
            "low_freq_factor": float(params["low_freq_factor"]),
            "high_freq_factor": float(params["high_freq_factor"]),
            "original_max_length": int(params["original_max_position_embeddings"]),
        }
    return RotaryPositions(max_length=max_length, **settings)


def _llama_like(model_type: str) -> Callable[[Mapping[str, Any]], GPT]:
    def build(config: Mapping[str, Any]) -> GPT:
        r = ConfigReader(config, model_type)
        d, heads = r.get("hidden_size"), r.get("num_attention_heads")
        r.require("hidden_act", ["silu"], "silu")
        r.require("head_dim", [d // heads], d // heads)
        settings = {
            **LLAMA_SETTINGS,
            "epsilon": r.get("rms_norm_eps", 1e-6),
            "tied_head": r.get("tie_word_embeddings", False),
        }
        if model_type == "qwen2":
            settings |= {"qkv_bias": True}
            r.require("use_sliding_window", [False], False)
            layer_types = r.get("layer_types", ["full_attention"])
            if set(layer_types) != {"full_attention"}:
                raise ConfigError(
                    f"qwen2 config.json: layer_types {sorted(set(layer_types))} "
                    "are not supported; nnfun implements full_attention only"
                )
            harmless = _LLAMA_HARMLESS | {"sliding_window", "max_window_layers"}
        else:
            bias = r.require("attention_bias", [False, True], False)
            r.require("mlp_bias", [bias], False)
            settings |= {"use_bias": bias}
            harmless = _LLAMA_HARMLESS
        if model_type == "mistral":
            window = r.get("sliding_window", None)
            if window is not None and window < r.get("max_position_embeddings"):
                raise ConfigError(
                    f"mistral config.json: sliding_window={window} is not "
                    "supported (nnfun attends to the whole context); null is"
                )
        max_length = r.get("max_position_embeddings")
        model = GPT(
            vocab_size=r.get("vocab_size"),
            d_model=d,
            num_heads=heads,
            num_kv_heads=r.get("num_key_value_heads", heads),
            num_layers=r.get("num_hidden_layers"),
            max_length=max_length,
            mlp_features=r.get("intermediate_size"),
            **settings,
            rotary=_rotary(r, max_length),
        )
        r.finish(harmless)
        return model

    return build


def _llama_tensors(model: Layer) -> list[Tensor]:
    assert isinstance(model, GPT)
    out = [same("model.embed_tokens.weight", "embedding/embedding")]
    qkv_bias = model.use_bias if model.qkv_bias is None else model.qkv_bias
    for i in range(model.num_layers):
        h = f"model.layers.{i}"
        for hf, ours, bias in (
            ("self_attn.q_proj", "attention/query", qkv_bias),
            ("self_attn.k_proj", "attention/key", qkv_bias),
            ("self_attn.v_proj", "attention/value", qkv_bias),
            ("self_attn.o_proj", "attention/out", model.use_bias),
            ("mlp.gate_proj", "mlp/gate", model.use_bias),
            ("mlp.up_proj", "mlp/hidden", model.use_bias),
            ("mlp.down_proj", "mlp/out", model.use_bias),
        ):
            out.append(linear(f"{h}.{hf}.weight", *_block(model, i, f"{ours}/kernel")))
            if bias:
                out.append(same(f"{h}.{hf}.bias", *_block(model, i, f"{ours}/bias")))
        out.append(same(f"{h}.input_layernorm.weight", *_block(model, i, "attention_norm/scale")))
        out.append(
            same(f"{h}.post_attention_layernorm.weight", *_block(model, i, "mlp_norm/scale"))
        )
        out.append(unused(f"{h}.self_attn.rotary_emb.inv_freq"))  # a buffer older files carry
    out += [same("model.norm.weight", "norm/scale"), _head(model)]
    return out


def _llama_config(model: Layer) -> dict[str, Any]:
    assert isinstance(model, GPT)
    rotary = model.rotary or RotaryPositions()
    qwen = model.qkv_bias is True and not model.use_bias
    config: dict[str, Any] = {
        "model_type": "qwen2" if qwen else "llama",
        "architectures": ["Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"],
        "vocab_size": model.vocab_size,
        "hidden_size": model.d_model,
        "num_attention_heads": model.num_heads,
        "num_key_value_heads": model.num_kv_heads or model.num_heads,
        "num_hidden_layers": model.num_layers,
        "intermediate_size": model.mlp_features or model.mlp_ratio * model.d_model,
        "max_position_embeddings": model.max_length,
        "hidden_act": "silu",
        "rms_norm_eps": model.epsilon,
        "tie_word_embeddings": model.tied_head,
        "rope_theta": rotary.base,
    }
    if not qwen:
        config |= {"attention_bias": model.use_bias, "mlp_bias": model.use_bias}
    if rotary.scaling is not None:
        config["rope_scaling"] = {"rope_type": rotary.scaling, "factor": rotary.factor}
    if rotary.scaling == "llama3":
        config["rope_scaling"] |= {
            "low_freq_factor": rotary.low_freq_factor,
            "high_freq_factor": rotary.high_freq_factor,
            "original_max_position_embeddings": rotary.original_max_length,
        }
    return config


def _accepts_llama(model: Layer) -> bool:
    if not isinstance(model, GPT):
        return False
    plain = model.qkv_bias is None or (model.qkv_bias is True and not model.use_bias)
    return (model.positions, model.norm, model.activation) == ("rotary", "rms", "swiglu") and plain


register(
    Family("gpt2", _gpt2, _example, _gpt2_tensors, _gpt2_config, _accepts_gpt2, "transformer.")
)
for _type in ("llama", "mistral", "qwen2"):
    _accepts: Callable[[Layer], bool] = _accepts_llama if _type == "llama" else lambda m: False
    register(
        Family(
            _type, _llama_like(_type), _example, _llama_tensors, _llama_config, _accepts, "model."
        )
    )
