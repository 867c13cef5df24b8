"""Ready-made models built from the public layers.

``nnfun.models.gpt``: a GPT-style decoder language model (``GPT``) and
jit-compiled sampling with a KV cache (``generate``).
``nnfun.models.mnist1d``: models for MNIST-1D with the recipes that train them
(``RECIPES``: name to a function returning a ``Recipe``).
``nnfun.models.bert``: a BERT-style encoder (``Bert``: token types, padding, pooler).
``nnfun.models.vit``: a Vision Transformer (``ViT``: patches, class token, head).
"""

from . import mnist1d as mnist1d
from .bert import Bert as Bert
from .gpt import GPT as GPT
from .gpt import generate as generate
from .vit import ViT as ViT
