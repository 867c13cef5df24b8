"""The layer catalogue; every name is re-exported from ``nnfun``.

Families, one private module each: dense (``Dense``), convolution and pooling
(``Conv``, ``ConvTranspose``, ``MaxPool``, ``AvgPool``, global pooling),
normalisation (``BatchNorm``, ``LayerNorm``, ``RMSNorm``, ``GroupNorm``),
``Dropout``, ``Embedding`` and ``EmbeddingBag``, feature interactions
(``CrossNetwork``, ``FactorizationMachine``), shape layers (``Flatten``, ``Reshape``), recurrent
cells (``SimpleRNN``, ``LSTM``, ``GRU``) with the scan-over-time wrapper ``RNN``
and ``Bidirectional``, attention and transformer blocks, positional
encodings, the audio front end (``Spectrogram``, ``MelSpectrogram``, ``MFCC``,
``SpecAugment``, ``UtteranceNorm``), and graph layers on a padded
``nnfun.data.Graph`` batch (``GraphConv``, ``GIN``, ``GAT``, ``MPNN``,
``OnNodes``, the readouts ``Readout`` and ``Set2Set``, and the segment
reductions they use). Inputs are batched and channels-last; dense
kernels are ``(in, out)``.
"""

from ._attention import MultiHeadAttention as MultiHeadAttention
from ._audio import MFCC as MFCC
from ._audio import MelSpectrogram as MelSpectrogram
from ._audio import Spectrogram as Spectrogram
from ._audio_frames import SpecAugment as SpecAugment
from ._audio_frames import UtteranceNorm as UtteranceNorm
from ._batchnorm import BatchNorm as BatchNorm
from ._conv import Conv as Conv
from ._conv import ConvTranspose as ConvTranspose
from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._embedding import Embedding as Embedding
from ._embedding_bag import EmbeddingBag as EmbeddingBag
from ._feedforward import FeedForward as FeedForward
from ._graph import GIN as GIN
from ._graph import GraphConv as GraphConv
from ._graph import OnNodes as OnNodes
from ._graph import check_graph as check_graph
from ._graph_messages import GAT as GAT
from ._graph_messages import MPNN as MPNN
from ._interactions import CrossNetwork as CrossNetwork
from ._interactions import FactorizationMachine as FactorizationMachine
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
from ._readout import Readout as Readout
from ._readout import Set2Set as Set2Set
from ._recurrent import GRU as GRU
from ._recurrent import LSTM as LSTM
from ._recurrent import RecurrentCell as RecurrentCell
from ._recurrent import SimpleRNN as SimpleRNN
from ._reshape import Flatten as Flatten
from ._reshape import Reshape as Reshape
from ._rnn import RNN as RNN
from ._rnn import Bidirectional as Bidirectional
from ._segment import segment_count as segment_count
from ._segment import segment_max as segment_max
from ._segment import segment_mean as segment_mean
from ._segment import segment_softmax as segment_softmax
from ._segment import segment_sum as segment_sum
from ._transformer import DecoderBlock as DecoderBlock
from ._transformer import TransformerBlock as TransformerBlock
