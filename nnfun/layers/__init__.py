"""The layer catalogue; every name is re-exported from ``nnfun``."""

from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._embedding import Embedding as Embedding
from ._norm import GroupNorm as GroupNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._reshape import Flatten as Flatten
from ._reshape import Reshape as Reshape
