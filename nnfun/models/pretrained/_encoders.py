"""Encoders: BERT (``bert``, :class:`Bert`) and ViT (``vit``, :class:`ViT`).

Tensor names are those ``BertModel`` / ``ViTForImageClassification`` write,
under the base-model prefix (``bert.``, ``vit.``); a checkpoint of the bare
``BertModel`` / ``ViTModel`` (no prefix) reads as well. Hugging Face stores a
Linear's weight ``(out, in)`` (nnfun's kernel is ``(in, out)``), the patch
embedding's convolution ``(out, in, height, width)`` (nnfun's ``(height,
width, in, out)``), and ViT's class token ``(1, 1, d)`` and position table
``(1, patches + 1, d)`` with leading axes of 1.

``BertForPreTraining`` / ``BertForMaskedLM`` checkpoints (``bert-base-uncased``
and most others on the Hub) carry the pretraining heads under ``cls.``:
:class:`Bert` is the encoder, so those tensors are optional and skipped, as
``transformers.BertModel.from_pretrained`` skips them. Checkpoints converted
from TensorFlow (``bert-base-uncased`` again) name the LayerNorm parameters
``gamma``/``beta``; the family renames them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ...core._layer import Layer
from ..bert import Bert
from ..vit import ViT
from ._registry import ConfigError, ConfigReader, Family, Tensor, linear, register, same, unused

#: Hugging Face ``hidden_act`` -> the FeedForward activation (``gelu`` is the exact one).
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
#: Pretraining heads of BERT checkpoints: not part of the encoder (optional, skipped).
BERT_HEADS = (
    "cls.predictions.bias",
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
    "cls.seq_relationship.weight",
    "cls.seq_relationship.bias",
)
#: Dropout rates are not carried into the model (as for the decoders): set ``dropout`` yourself.
_HARMLESS = frozenset({"hidden_dropout_prob", "attention_probs_dropout_prob"})
_BLOCK_NAMES = {  # nnfun sub-layer -> Hugging Face module, per family
    "bert": {
        "attention/query": "attention.self.query",
        "attention/key": "attention.self.key",
        "attention/value": "attention.self.value",
        "attention/out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "mlp/hidden": "intermediate.dense",
        "mlp/out": "output.dense",
        "mlp_norm": "output.LayerNorm",
    },
    "vit": {
        "attention/query": "attention.attention.query",
        "attention/key": "attention.attention.key",
        "attention/value": "attention.attention.value",
        "attention/out": "attention.output.dense",
        "attention_norm": "layernorm_before",
        "mlp/hidden": "intermediate.dense",
        "mlp/out": "output.dense",
        "mlp_norm": "layernorm_after",
    },
}


def _conv(name: str, target: str) -> Tensor:
    """A ``torch.nn.Conv2d`` weight ``(out, in, h, w)`` for an nnfun kernel ``(h, w, in, out)``."""
    return Tensor(
        name,
        (target,),
        None,
        lambda a: (a.transpose(2, 3, 1, 0),),
        lambda parts: parts[0].transpose(3, 2, 0, 1),
    )


def _batch1(name: str, target: str) -> Tensor:
    """A tensor stored with a leading axis of 1 (two for ViT's class token)."""
    return Tensor(
        name,
        (target,),
        None,
        lambda a: (a[0, 0] if a.ndim == 3 and a.shape[1] == 1 else a[0],),
        lambda parts: parts[0].reshape((1,) * (3 - parts[0].ndim) + parts[0].shape),
    )


def _dense(name: str, target: str, layer: int | None = None) -> list[Tensor]:
    return [linear(f"{name}.weight", f"{target}/kernel", layer), _bias(name, target, layer)]


def _bias(name: str, target: str, layer: int | None) -> Tensor:
    return same(f"{name}.bias", f"{target}/bias", layer)


def _norm(name: str, target: str, layer: int | None = None) -> list[Tensor]:
    return [same(f"{name}.weight", f"{target}/scale", layer), _bias(name, target, layer)]


def _blocks(model: Bert | ViT, family: str, prefix: str) -> list[Tensor]:
    out = []
    for i in range(model.num_layers):
        base, row = ("blocks/layer", i) if model.stacked else (f"blocks/{i}", None)
        for ours, hf in _BLOCK_NAMES[family].items():
            add = _norm if ours.endswith("_norm") else _dense
            out += add(f"{prefix}encoder.layer.{i}.{hf}", f"{base}/{ours}", row)
    return out


def _shared(r: ConfigReader) -> dict[str, Any]:
    """The encoder settings BERT and ViT configs spell the same way."""
    return {
        "d_model": r.get("hidden_size"),
        "num_heads": r.get("num_attention_heads"),
        "num_layers": r.get("num_hidden_layers"),
        "mlp_features": r.get("intermediate_size"),
        "activation": ACTIVATIONS[r.require("hidden_act", ACTIVATIONS, "gelu")],
        "epsilon": float(r.get("layer_norm_eps", 1e-12)),
    }


def _shared_config(model: Bert | ViT) -> dict[str, Any]:
    return {
        "hidden_size": model.d_model,
        "num_attention_heads": model.num_heads,
        "num_hidden_layers": model.num_layers,
        "intermediate_size": model.mlp_features or 4 * model.d_model,
        "hidden_dropout_prob": model.dropout,
        "attention_probs_dropout_prob": model.dropout,
        "hidden_act": _NAMES[model.activation],
        "layer_norm_eps": model.epsilon,
    }


def _bert(config: Mapping[str, Any]) -> Bert:
    r = ConfigReader(config, "bert")
    r.require("position_embedding_type", ["absolute"], "absolute")
    r.require("is_decoder", [False], False)
    r.require("add_cross_attention", [False], False)
    model = Bert(
        vocab_size=r.get("vocab_size"),
        max_length=r.get("max_position_embeddings"),
        type_vocab_size=r.get("type_vocab_size", 2),
        **_shared(r),
    )
    r.finish(_HARMLESS | {"classifier_dropout", "tie_word_embeddings"})  # heads Bert lacks
    return model


def _bert_tensors(model: Layer) -> list[Tensor]:
    assert isinstance(model, Bert)
    out = [
        same("bert.embeddings.word_embeddings.weight", "embedding/embedding"),
        same("bert.embeddings.position_embeddings.weight", "positions/embedding"),
        same("bert.embeddings.token_type_embeddings.weight", "token_types/embedding"),
        *_norm("bert.embeddings.LayerNorm", "embedding_norm"),
        *_blocks(model, "bert", "bert."),
    ]
    if model.pooler:
        out += _dense("bert.pooler.dense", "pooler")
    out += [unused("bert.embeddings.position_ids"), *(unused(n) for n in BERT_HEADS)]
    return out


def _bert_config(model: Layer) -> dict[str, Any]:
    assert isinstance(model, Bert)
    return {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": model.vocab_size,
        "max_position_embeddings": model.max_length,
        "type_vocab_size": model.type_vocab_size,
        "position_embedding_type": "absolute",
        **_shared_config(model),
    }


def _accepts_bert(model: Layer) -> bool:
    return isinstance(model, Bert) and model.activation in _NAMES and model.pooler


def _vit(config: Mapping[str, Any]) -> ViT:
    r = ConfigReader(config, "vit")
    shared = _shared(r)
    size = r.get("image_size")
    if not isinstance(size, int):
        raise ConfigError(f"vit config.json: image_size={size!r} is not supported; one int is")
    r.require("qkv_bias", [True], True)
    r.require("pooler_act", ["tanh"], "tanh")
    r.require("pooler_output_size", [shared["d_model"]], shared["d_model"])
    architectures = r.get("architectures", ["ViTModel"])
    classify = architectures == ["ViTForImageClassification"]
    if not classify and architectures != ["ViTModel"]:
        raise ConfigError(
            f"vit config.json: architectures {architectures} are not supported; nnfun "
            "implements ViTModel and ViTForImageClassification"
        )
    labels = r.get("id2label", {})
    model = ViT(
        image_size=size,
        patch_size=r.get("patch_size"),
        channels=r.get("num_channels", 3),
        num_classes=(len(labels) or r.get("num_labels", 2)) if classify else None,
        pooler=not classify,
        **shared,
    )
    r.finish(_HARMLESS | {"encoder_stride"})  # ViTForMaskedImageModeling's decoder only
    return model


def _vit_tensors(model: Layer) -> list[Tensor]:
    assert isinstance(model, ViT)
    out = [
        _batch1("vit.embeddings.cls_token", "class_token"),
        _batch1("vit.embeddings.position_embeddings", "positions/embedding"),
        _conv("vit.embeddings.patch_embeddings.projection.weight", "patches/kernel"),
        same("vit.embeddings.patch_embeddings.projection.bias", "patches/bias"),
        *_blocks(model, "vit", "vit."),
        *_norm("vit.layernorm", "norm"),
    ]
    if model.pooler:
        out += _dense("vit.pooler.dense", "pooler")
    if model.num_classes is not None:
        out += _dense("classifier", "head")
    return out


def _vit_config(model: Layer) -> dict[str, Any]:
    assert isinstance(model, ViT)
    config: dict[str, Any] = {
        "model_type": "vit",
        "architectures": ["ViTModel" if model.num_classes is None else "ViTForImageClassification"],
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "num_channels": model.channels,
        "qkv_bias": True,
        **_shared_config(model),
    }
    if model.num_classes is not None:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(model.num_classes)}
    return config


def _accepts_vit(model: Layer) -> bool:
    """ViTModel has the pooler and no head, ViTForImageClassification the reverse."""
    return (
        isinstance(model, ViT)
        and model.activation in _NAMES
        and model.pooler == (model.num_classes is None)
    )


def _vit_example(model: Layer) -> jax.ShapeDtypeStruct:
    assert isinstance(model, ViT)
    return jax.ShapeDtypeStruct(
        (1, model.image_size, model.image_size, model.channels), jnp.float32
    )


def _ids_example(model: Layer) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, 1), jnp.int32)


def _bert_rename(name: str) -> str:
    """``LayerNorm.gamma``/``beta`` (checkpoints converted from TensorFlow, such as
    ``bert-base-uncased``) -> ``LayerNorm.weight``/``bias``."""
    stem, _, leaf = name.rpartition(".")
    if stem.endswith("LayerNorm") and leaf in ("gamma", "beta"):
        return f"{stem}.{'weight' if leaf == 'gamma' else 'bias'}"
    return name


register(
    Family(
        "bert",
        _bert,
        _ids_example,
        _bert_tensors,
        _bert_config,
        _accepts_bert,
        "bert.",
        _bert_rename,
    )
)
register(Family("vit", _vit, _vit_example, _vit_tensors, _vit_config, _accepts_vit, "vit."))
