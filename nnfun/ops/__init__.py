"""Fast primitives for XLA:CPU (and elsewhere): pure functions on arrays.

Each op is a formulation chosen by measurement (``benchmarks/research/gpt_variants.py``,
``benchmarks/NOTES.md``); layers call them, and users may call them directly.
"""

from ._attention import causal_attention as causal_attention
from ._norm import layer_norm as layer_norm
from ._norm import rms_norm as rms_norm
