"""Hugging Face name maps of the encoders: ``bert`` (:class:`Bert`) and ``vit`` (:class:`ViT`).

For each family: ``*_from_config(config) -> model`` reads a ``config.json``
dict (an unsupported field raises, naming it), ``*_config(model) -> dict``
writes one that ``transformers`` reads back, and ``*_tensors(model, prefix)``
maps every checkpoint tensor name to a :class:`TensorRule`: where it goes in
the params (and which block of a stacked array) and how its layout changes.
Hugging Face stores a Linear's weight ``(out, in)`` (ours is ``(in, out)``)
and a convolution's ``(out, in, height, width)`` (ours ``(height, width, in,
out)``); the class token and the ViT position table carry leading 1-axes.
:func:`params_from_tensors` and :func:`tensors_from_params` apply the rules,
using each tensor exactly once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._layer import Layer, Params, init_shapes
from .bert import Bert
from .vit import ViT

#: Hugging Face ``hidden_act`` -> our FeedForward activation.
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
_OUR_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
#: Old checkpoints (converted from TensorFlow) name LayerNorm params gamma/beta.
_LEGACY = {".gamma": ".weight", ".beta": ".bias"}


class ConfigError(ValueError):
    """A ``config.json`` asks for something these models do not implement."""


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """Where one checkpoint tensor goes.

    Attributes:
        path: keys into our params.
        index: the block's row of a stacked (``Stack``) array, or None.
        layout: ``"same"``; ``"linear"``: ``(out, in)`` there, ``(in, out)`` here;
            ``"conv"``: ``(out, in, h, w)`` there, ``(h, w, in, out)`` here;
            ``"batch1"``: a leading axis of 1 there, none here (ViT's class
            token ``(1, 1, d)`` and positions ``(1, n, d)``).
    """

    path: tuple[str, ...]
    index: int | None = None
    layout: str = "same"

    def to_ours(self, a: np.ndarray) -> np.ndarray:
        """The checkpoint tensor ``a`` in our layout."""
        if self.layout == "linear":
            return a.T
        if self.layout == "conv":
            return a.transpose(2, 3, 1, 0)
        if self.layout == "batch1":
            return a.reshape(a.shape[2:] if a.shape[:2] == (1, 1) else a.shape[1:])
        return a

    def to_hf(self, a: np.ndarray) -> np.ndarray:
        """Our array ``a`` in the checkpoint's layout."""
        if self.layout == "linear":
            return a.T
        if self.layout == "conv":
            return a.transpose(3, 2, 0, 1)
        return a.reshape(self.hf_shape(a.shape))

    def hf_shape(self, ours: tuple[int, ...]) -> tuple[int, ...]:
        """The checkpoint shape that our (one block's) shape ``ours`` comes from."""
        if self.layout == "linear":
            return ours[::-1]
        if self.layout == "conv":
            return (ours[3], ours[2], ours[0], ours[1])
        if self.layout == "batch1":
            return (1, 1, *ours) if len(ours) == 1 else (1, *ours)
        return tuple(ours)


def _config(config: Mapping[str, Any], name: str, family: str) -> Any:
    if name not in config:
        raise ConfigError(f"{family} config.json lacks the field {name!r}, which the model needs")
    return config[name]


def _require(config: Mapping[str, Any], name: str, allowed: Any, family: str) -> None:
    if name in config and config[name] not in allowed:
        raise ConfigError(
            f"{family} config.json sets {name}={config[name]!r}; nnfun supports only "
            f"{list(allowed)} (loading it anyway would give wrong outputs)"
        )


def _activation(config: Mapping[str, Any], family: str) -> str:
    _require(config, "hidden_act", ACTIVATIONS, family)
    return ACTIVATIONS[config.get("hidden_act", "gelu")]


def bert_from_config(config: Mapping[str, Any], names: frozenset[str] = frozenset()) -> Bert:
    """The :class:`Bert` a BERT ``config.json`` describes.

    ``names`` are the checkpoint's tensor names, when known: the pooler is
    built when its weights are there (or, without names, always).
    """
    family = "bert"
    _require(config, "position_embedding_type", ("absolute",), family)
    for flag in ("is_decoder", "add_cross_attention"):
        _require(config, flag, (False, None), family)
    pooler = not names or any(n.endswith("pooler.dense.weight") for n in names)
    return Bert(
        vocab_size=_config(config, "vocab_size", family),
        d_model=_config(config, "hidden_size", family),
        num_heads=_config(config, "num_attention_heads", family),
        num_layers=_config(config, "num_hidden_layers", family),
        mlp_features=_config(config, "intermediate_size", family),
        max_length=_config(config, "max_position_embeddings", family),
        type_vocab_size=config.get("type_vocab_size", 2),
        dropout=float(config.get("hidden_dropout_prob", 0.0)),
        activation=_activation(config, family),
        epsilon=float(config.get("layer_norm_eps", 1e-12)),
        pooler=pooler,
    )


def bert_config(model: Bert) -> dict[str, Any]:
    """The ``config.json`` of ``model`` (a ``BertModel``)."""
    return {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": model.vocab_size,
        "hidden_size": model.d_model,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.mlp_features or 4 * model.d_model,
        "hidden_act": _OUR_ACTIVATIONS[model.activation],
        "hidden_dropout_prob": model.dropout,
        "attention_probs_dropout_prob": model.dropout,
        "max_position_embeddings": model.max_length,
        "type_vocab_size": model.type_vocab_size,
        "layer_norm_eps": model.epsilon,
        "position_embedding_type": "absolute",
    }


def _block_path(model: Bert | ViT, i: int) -> tuple[tuple[str, ...], int | None]:
    return (("blocks", "layer"), i) if model.stacked else (("blocks", str(i)), None)


def _linear(rules: dict[str, TensorRule], hf: str, path: tuple[str, ...], i: int | None) -> None:
    rules[f"{hf}.weight"] = TensorRule((*path, "kernel"), i, "linear")
    rules[f"{hf}.bias"] = TensorRule((*path, "bias"), i)


def _norm(rules: dict[str, TensorRule], hf: str, path: tuple[str, ...], i: int | None) -> None:
    rules[f"{hf}.weight"] = TensorRule((*path, "scale"), i)
    rules[f"{hf}.bias"] = TensorRule((*path, "bias"), i)


def _block_rules(
    rules: dict[str, TensorRule], model: Bert | ViT, layer: str, names: dict[str, str]
) -> None:
    """The rules of every block; ``names`` maps our sub-layer paths to HF names."""
    for i in range(model.num_layers):
        base, index = _block_path(model, i)
        for ours, hf in names.items():
            add = _norm if ours.endswith("_norm") else _linear
            add(rules, f"{layer}.{i}.{hf}", (*base, *ours.split("/")), index)


def bert_tensors(model: Bert, prefix: str = "") -> dict[str, TensorRule]:
    """Checkpoint tensor name -> :class:`TensorRule`, for ``BertModel`` names after ``prefix``."""
    rules: dict[str, TensorRule] = {}
    for hf, ours in (
        ("word_embeddings", "embedding"),
        ("position_embeddings", "positions"),
        ("token_type_embeddings", "token_types"),
    ):
        rules[f"embeddings.{hf}.weight"] = TensorRule((ours, "embedding"))
    _norm(rules, "embeddings.LayerNorm", ("embedding_norm",), None)
    _block_rules(
        rules,
        model,
        "encoder.layer",
        {
            "attention/query": "attention.self.query",
            "attention/key": "attention.self.key",
            "attention/value": "attention.self.value",
            "attention/out": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm",
            "mlp/hidden": "intermediate.dense",
            "mlp/out": "output.dense",
            "mlp_norm": "output.LayerNorm",
        },
    )
    if model.pooler:
        _linear(rules, "pooler.dense", ("pooler",), None)
    return {prefix + name: rule for name, rule in rules.items()}


def vit_from_config(config: Mapping[str, Any], names: frozenset[str] = frozenset()) -> ViT:
    """The :class:`ViT` a ViT ``config.json`` describes.

    ``ViTForImageClassification`` (in ``architectures``) gets a head of
    ``len(id2label)`` classes; the pooler is built when the checkpoint has its
    weights (``ViTModel``'s default), or without ``names`` for a ``ViTModel``.
    """
    family = "vit"
    _require(config, "qkv_bias", (True,), family)
    _require(config, "pooler_act", ("tanh",), family)
    size = _config(config, "image_size", family)
    if not isinstance(size, int):
        raise ConfigError(f"vit config.json sets image_size={size!r}; nnfun supports one int")
    width = _config(config, "hidden_size", family)
    _require(config, "pooler_output_size", (width, None), family)
    classify = "ViTForImageClassification" in (config.get("architectures") or [])
    pooler = any(n.endswith("pooler.dense.weight") for n in names) if names else not classify
    labels = config.get("id2label") or {}
    return ViT(
        image_size=size,
        patch_size=_config(config, "patch_size", family),
        channels=config.get("num_channels", 3),
        d_model=width,
        num_heads=_config(config, "num_attention_heads", family),
        num_layers=_config(config, "num_hidden_layers", family),
        mlp_features=_config(config, "intermediate_size", family),
        num_classes=(len(labels) or config.get("num_labels", 2)) if classify else None,
        pooler=pooler,
        dropout=float(config.get("hidden_dropout_prob", 0.0)),
        activation=_activation(config, family),
        epsilon=float(config.get("layer_norm_eps", 1e-12)),
    )


def vit_config(model: ViT) -> dict[str, Any]:
    """The ``config.json`` of ``model``: ``ViTForImageClassification`` with a head, else
    ``ViTModel``."""
    config: dict[str, Any] = {
        "model_type": "vit",
        "architectures": ["ViTModel" if model.num_classes is None else "ViTForImageClassification"],
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "num_channels": model.channels,
        "hidden_size": model.d_model,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "intermediate_size": model.mlp_features or 4 * model.d_model,
        "hidden_act": _OUR_ACTIVATIONS[model.activation],
        "hidden_dropout_prob": model.dropout,
        "attention_probs_dropout_prob": model.dropout,
        "layer_norm_eps": model.epsilon,
        "qkv_bias": True,
    }
    if model.num_classes is not None:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(model.num_classes)}
    return config


def vit_tensors(model: ViT, prefix: str | None = None) -> dict[str, TensorRule]:
    """Checkpoint tensor name -> :class:`TensorRule`, for ``ViTModel`` names after ``prefix``.

    The default prefix is ``"vit."`` with a head (``ViTForImageClassification``)
    and ``""`` without; the head is ``classifier``, outside the prefix.
    """
    prefix = ("" if model.num_classes is None else "vit.") if prefix is None else prefix
    rules: dict[str, TensorRule] = {
        "embeddings.cls_token": TensorRule(("class_token",), layout="batch1"),
        "embeddings.position_embeddings": TensorRule(("positions", "embedding"), layout="batch1"),
        "embeddings.patch_embeddings.projection.weight": TensorRule(
            ("patches", "kernel"), layout="conv"
        ),
        "embeddings.patch_embeddings.projection.bias": TensorRule(("patches", "bias")),
    }
    _block_rules(
        rules,
        model,
        "encoder.layer",
        {
            "attention/query": "attention.attention.query",
            "attention/key": "attention.attention.key",
            "attention/value": "attention.attention.value",
            "attention/out": "attention.output.dense",
            "attention_norm": "layernorm_before",
            "mlp/hidden": "intermediate.dense",
            "mlp/out": "output.dense",
            "mlp_norm": "layernorm_after",
        },
    )
    _norm(rules, "layernorm", ("norm",), None)
    if model.pooler:
        _linear(rules, "pooler.dense", ("pooler",), None)
    rules = {prefix + name: rule for name, rule in rules.items()}
    if model.num_classes is not None:
        _linear(rules, "classifier", ("head",), None)
    return rules


def example_input(model: Layer) -> jax.ShapeDtypeStruct:
    """A one-example input spec for ``model`` (to build its params' shapes)."""
    if isinstance(model, ViT):
        return jax.ShapeDtypeStruct(
            (1, model.image_size, model.image_size, model.channels), jnp.float32
        )
    return jax.ShapeDtypeStruct((1, 1), jnp.int32)


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def canonical_name(name: str) -> str:
    """``name`` with the legacy ``LayerNorm.gamma``/``beta`` spelt ``weight``/``bias``."""
    for old, new in _LEGACY.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def params_from_tensors(
    model: Layer, rules: Mapping[str, TensorRule], tensors: Mapping[str, np.ndarray]
) -> Params:
    """Our params from checkpoint ``tensors``, each used exactly once; shapes checked.

    Raises:
        ValueError: naming a tensor the rules do not use, one they need that is
            missing, or one of the wrong shape (expected and found).
    """
    spec, _ = init_shapes(model, example_input(model))
    given = {canonical_name(n): n for n in tensors}
    unused = sorted(given[n] for n in set(given) - set(rules))
    missing = sorted(set(rules) - set(given))
    if unused or missing:
        raise ValueError(
            f"{type(model).__name__} checkpoint: tensors not used by the model: {unused[:8]}; "
            f"tensors the model needs but the checkpoint lacks: {missing[:8]}. Fix: check the "
            "config.json matches the weights (the number of layers, the pooler, the head)."
        )
    stacked: dict[tuple[str, ...], np.ndarray] = {}
    params: dict[str, Any] = {}
    for name, rule in rules.items():
        target = _get(spec, rule.path)
        shape = target.shape[1:] if rule.index is not None else target.shape
        a = np.asarray(tensors[given[name]])
        if a.shape != rule.hf_shape(shape):
            raise ValueError(
                f"{type(model).__name__} checkpoint: tensor {given[name]!r} has shape "
                f"{a.shape}, expected {rule.hf_shape(shape)} from config.json"
            )
        value = rule.to_ours(a)
        if rule.index is None:
            _set(params, rule.path, jnp.asarray(value))
            continue
        if rule.path not in stacked:
            stacked[rule.path] = np.empty(target.shape, value.dtype)
        stacked[rule.path][rule.index] = value
    for path, array in stacked.items():
        _set(params, path, jnp.asarray(array))
    return params


def tensors_from_params(rules: Mapping[str, TensorRule], params: Params) -> dict[str, np.ndarray]:
    """Checkpoint tensors (Hugging Face names and layouts) from our params."""
    out = {}
    for name, rule in rules.items():
        a = np.asarray(_get(params, rule.path))
        out[name] = np.ascontiguousarray(rule.to_hf(a if rule.index is None else a[rule.index]))
    return out
