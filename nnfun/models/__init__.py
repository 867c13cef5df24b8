"""Ready-made models built from the public layers.

``nnfun.models.gpt``: a GPT-style decoder language model (``GPT``) and
jit-compiled sampling with a KV cache (``generate``).
``nnfun.models.mnist1d``: models for MNIST-1D with the recipes that train them
(``RECIPES``: name to a function returning a ``Recipe``).
"""

from . import mnist1d as mnist1d
from .gpt import GPT as GPT
from .gpt import generate as generate
