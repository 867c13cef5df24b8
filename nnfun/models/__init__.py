"""Ready-made models built from the public layers.

``nnfun.models.gpt``: a GPT-style decoder language model (``GPT``) and
jit-compiled sampling with a KV cache (``generate``).
``nnfun.models.mnist1d``: models for MNIST-1D with the recipes that train them
(``RECIPES``: name to a function returning a ``Recipe``).
``nnfun.models.bert``: a BERT-style encoder (``Bert``: token types, padding, pooler).
``nnfun.models.vit``: a Vision Transformer (``ViT``: patches, class token, head).
``nnfun.models.pretrained``: Hugging Face directories in and out
(``from_pretrained``, ``save_pretrained``) and the registry of model families.
``nnfun.models.speech``: a CTC acoustic model (``CTCModel``) and a keyword classifier
on a log-mel front end, with their recipes.
"""

from . import mnist1d as mnist1d
from . import speech as speech
from .bert import Bert as Bert
from .gpt import GPT as GPT
from .gpt import generate as generate
from .pretrained import from_pretrained as from_pretrained
from .pretrained import save_pretrained as save_pretrained
from .vit import ViT as ViT
