"""The families registry: Hugging Face ``model_type`` -> how to build, map and describe a model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ...core._layer import Layer

Split = Callable[[np.ndarray], tuple[np.ndarray, ...]]
Join = Callable[[tuple[np.ndarray, ...]], np.ndarray]

#: ``config.json`` fields that never change a model's outputs (bookkeeping, generation
#: and training defaults); every family accepts them on top of the ones it reads.
COMMON_CONFIG_FIELDS = frozenset(
    {
        "_name_or_path", "architectures", "model_type", "transformers_version", "dtype",
        "torch_dtype", "use_cache", "initializer_range", "bos_token_id", "eos_token_id",
        "pad_token_id", "sep_token_id", "decoder_start_token_id", "tokenizer_class",
        "id2label", "label2id", "num_labels", "problem_type", "finetuning_task",
        "task_specific_params", "return_dict", "output_hidden_states", "output_attentions",
        "torchscript", "use_bfloat16", "pruned_heads", "chunk_size_feed_forward", "prefix",
        "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder",
        "cross_attention_hidden_size", "tf_legacy_loss", "_attn_implementation_autoset",
        "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
        "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
        "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
        "output_scores", "return_dict_in_generate", "forced_bos_token_id",
        "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
        "suppress_tokens", "begin_suppress_tokens", "gradient_checkpointing",
    }
)  # fmt: skip


class ConfigError(ValueError):
    """A ``config.json`` is missing a field, or asks for something nnfun does not implement."""


class ConfigReader:
    """Reads a ``config.json`` dict, remembering which fields were looked at.

    A family reads every field that shapes the model through ``get``/``require``
    and then calls ``finish``: any field neither read nor in
    :data:`COMMON_CONFIG_FIELDS` (or the family's own ``harmless`` list) raises,
    naming it, so a setting nnfun does not implement is never dropped silently.

    Example:
        >>> reader = ConfigReader({"hidden_size": 8, "fancy_norm": True}, "demo")
        >>> reader.get("hidden_size")
        8
        >>> try:
        ...     reader.finish()
        ... except ConfigError as e:
        ...     print(str(e).split(";")[0])
        demo config.json: unsupported field(s) fancy_norm
    """

    def __init__(self, config: Mapping[str, Any], family: str) -> None:
        self.config, self.family, self.seen = dict(config), family, set[str]()

    def get(self, name: str, default: Any = ...) -> Any:
        """The field's value (``default`` when absent or null; no default: required)."""
        self.seen.add(name)
        value = self.config.get(name)
        if value is None:
            if default is ...:
                raise ConfigError(f"{self.family} config.json: required field {name!r} is missing")
            return default
        return value

    def require(self, name: str, allowed: Iterable[Any], default: Any = None) -> Any:
        """The field's value, which must be one of ``allowed`` (absent: ``default``)."""
        value, allowed = self.get(name, default), list(allowed)
        if value not in allowed:
            raise ConfigError(
                f"{self.family} config.json: {name}={value!r} is not supported; nnfun "
                f"implements {allowed}"
            )
        return value

    def finish(self, harmless: Iterable[str] = ()) -> None:
        """Raises for fields that were not read and are not known to be harmless."""
        known = self.seen | COMMON_CONFIG_FIELDS | set(harmless)
        unknown = sorted(k for k in self.config if k not in known and not k.startswith("_"))
        if unknown:
            raise ConfigError(
                f"{self.family} config.json: unsupported field(s) {', '.join(unknown)}; nnfun "
                "does not implement them and will not load a model that may compute "
                "something else"
            )


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One checkpoint tensor and the nnfun parameters it holds.

    Attributes:
        name: the tensor's full name as ``AutoModel*.save_pretrained`` writes it.
        targets: the nnfun parameter paths it fills (``"blocks/layer/mlp/out/kernel"``);
            several for a fused weight, none for a tensor nnfun does not need (a
            buffer such as GPT-2's causal mask, or a copy of a tied weight).
        layer: the row of a stacked (``Stack``) parameter it fills in every target,
            or None for the whole parameter.
        split: checkpoint array -> one array per target, in nnfun's layout.
        join: the inverse, for ``save_pretrained``.
        required: a missing tensor raises; optional ones (``targets=()``) may be absent.
    """

    name: str
    targets: tuple[str, ...]
    layer: int | None = None
    split: Split = lambda a: (a,)
    join: Join = lambda parts: parts[0]
    required: bool = True


def linear(name: str, target: str, layer: int | None = None) -> Tensor:
    """A ``torch.nn.Linear`` weight ``(out, in)`` for an nnfun kernel ``(in, out)``."""
    return Tensor(name, (target,), layer, lambda a: (a.T,), lambda parts: parts[0].T)


def same(name: str, target: str, layer: int | None = None) -> Tensor:
    """A tensor stored in nnfun's layout already (biases, norms, embedding tables)."""
    return Tensor(name, (target,), layer)


def fused_columns(name: str, targets: tuple[str, ...], layer: int | None = None) -> Tensor:
    """A tensor whose last axis concatenates equal parts (GPT-2's ``c_attn``: q, k, v)."""
    n = len(targets)
    return Tensor(
        name,
        targets,
        layer,
        lambda a: tuple(np.split(a, n, axis=-1)),
        lambda parts: np.concatenate(parts, axis=-1),
    )


def unused(name: str) -> Tensor:
    """An optional tensor nnfun does not read (a buffer, a tied copy)."""
    return Tensor(name, (), None, lambda a: (), lambda parts: np.zeros(0), required=False)


@dataclasses.dataclass(frozen=True)
class Family:
    """How one Hugging Face ``model_type`` maps to an nnfun model.

    Attributes:
        model_type: the ``config.json`` ``model_type`` (``"gpt2"``, ``"llama"``).
        build: ``config.json`` dict -> the nnfun model; reads it through a
            :class:`ConfigReader` and raises :class:`ConfigError` naming any field
            it does not support.
        example: model -> an input spec for ``model.init`` (shapes only).
        tensors: model -> every checkpoint :class:`Tensor`, full names.
        to_config: model -> the ``config.json`` dict ``transformers`` reads back
            (with ``model_type`` and ``architectures``).
        accepts: model -> whether ``save_pretrained`` should write it as this family.
        prefix: the base-model prefix (``"transformer."``, ``"model."``): a
            checkpoint saved from the bare model lacks it, and is read as well.
        rename: a checkpoint tensor name -> the name ``tensors`` lists, for
            older spellings of the same tensor (BERT's ``LayerNorm.gamma`` and
            ``beta``, from TensorFlow); the identity by default.
    """

    model_type: str
    build: Callable[[Mapping[str, Any]], Layer]
    example: Callable[[Layer], Any]
    tensors: Callable[[Layer], list[Tensor]]
    to_config: Callable[[Layer], dict[str, Any]]
    accepts: Callable[[Layer], bool]
    prefix: str = ""
    rename: Callable[[str], str] = lambda name: name


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Adds ``family`` to the registry under its ``model_type`` (a second one raises)."""
    if family.model_type in FAMILIES:
        raise ValueError(f"a family for model_type {family.model_type!r} is registered already")
    FAMILIES[family.model_type] = family
    return family


def family_of_config(config: Mapping[str, Any], where: str) -> Family:
    """The family of a ``config.json`` dict, or a ``ConfigError`` listing the known ones."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(
            f"{where}: model_type {model_type!r} (architectures "
            f"{config.get('architectures')}) is not one nnfun knows; known: "
            f"{', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def family_of_model(model: Layer) -> Family:
    """The first registered family whose ``accepts`` takes ``model``."""
    for family in FAMILIES.values():
        if family.accepts(model):
            return family
    raise ValueError(
        f"save_pretrained: no Hugging Face family describes a {type(model).__name__} with "
        f"these settings; known model types: {', '.join(sorted(FAMILIES))}"
    )
