"""The layer catalogue; every name is re-exported from ``nnfun``.

Families, one private module each: dense (``Dense``), convolution and pooling
(``Conv``, ``ConvTranspose``, ``MaxPool``, ``AvgPool``, global pooling),
normalisation (``BatchNorm``, ``LayerNorm``, ``RMSNorm``, ``GroupNorm``),
``Dropout``, ``Embedding``, shape layers (``Flatten``, ``Reshape``), recurrent
cells (``SimpleRNN``, ``LSTM``, ``GRU``) with the scan-over-time wrapper ``RNN``
and ``Bidirectional``, attention and transformer blocks, and positional
encodings. Inputs are batched and channels-last; dense kernels are ``(in, out)``.
"""

from ._attention import MultiHeadAttention as MultiHeadAttention
from ._batchnorm import BatchNorm as BatchNorm
from ._conv import Conv as Conv
from ._conv import ConvTranspose as ConvTranspose
from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._embedding import Embedding as Embedding
from ._norm import GroupNorm as GroupNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._pool import AvgPool as AvgPool
from ._pool import GlobalAvgPool as GlobalAvgPool
from ._pool import GlobalMaxPool as GlobalMaxPool
from ._pool import MaxPool as MaxPool
from ._position import LearnedPositions as LearnedPositions
from ._position import RotaryPositions as RotaryPositions
from ._position import SinusoidalPositions as SinusoidalPositions
from ._recurrent import GRU as GRU
from ._recurrent import LSTM as LSTM
from ._recurrent import RecurrentCell as RecurrentCell
from ._recurrent import SimpleRNN as SimpleRNN
from ._reshape import Flatten as Flatten
from ._reshape import Reshape as Reshape
from ._rnn import RNN as RNN
from ._rnn import Bidirectional as Bidirectional
from ._transformer import TransformerBlock as TransformerBlock
