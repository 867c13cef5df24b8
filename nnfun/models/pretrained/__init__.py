"""Hugging Face checkpoints in and out: ``from_pretrained`` and ``save_pretrained``.

    model, params, state = nf.models.from_pretrained("path/to/llama")   # a local directory
    logits, _ = model.apply(params, state, ids)
    nf.models.save_pretrained("path/to/out", model, params)             # transformers reads it

The registry: each Hugging Face ``model_type`` has one :class:`Family`
(``FAMILIES[model_type]``), added with :func:`register`. A family gives

- ``build(config) -> model``: reads ``config.json`` through a
  :class:`ConfigReader`, whose ``finish`` raises a :class:`ConfigError`
  naming every field the family neither read nor lists as harmless;
- ``tensors(model) -> [Tensor]``: every checkpoint tensor by its full name
  (as ``AutoModel*.save_pretrained`` writes it), the nnfun parameter paths it
  fills, the row of a stacked parameter, and ``split``/``join`` functions
  between the two layouts (helpers: :func:`same`, :func:`linear` for a
  ``torch.nn.Linear`` weight, :func:`fused_columns`, :func:`unused` for
  buffers and tied copies);
- ``to_config(model)`` for the way back, ``accepts(model)`` to pick the family
  on save, ``example(model)`` an input spec for ``init``, and ``prefix``, the
  base-model prefix a checkpoint of the bare model drops.

The loader checks names (each tensor used exactly once), shapes and the config
before reading any data, then streams tensor by tensor. Families registered
here: ``gpt2``, ``llama``, ``mistral``, ``qwen2`` (all :class:`nnfun.models.GPT`),
``bert`` (:class:`nnfun.models.Bert`) and ``vit`` (:class:`nnfun.models.ViT`).
"""

from . import _decoder as _decoder
from . import _encoders as _encoders
from ._io import from_pretrained as from_pretrained
from ._io import read_config as read_config
from ._io import save_pretrained as save_pretrained
from ._registry import FAMILIES as FAMILIES
from ._registry import ConfigError as ConfigError
from ._registry import ConfigReader as ConfigReader
from ._registry import Family as Family
from ._registry import Tensor as Tensor
from ._registry import fused_columns as fused_columns
from ._registry import linear as linear
from ._registry import register as register
from ._registry import same as same
from ._registry import unused as unused
