"""nnfun: functional neural networks on JAX.

A model is a frozen, hashable dataclass of hyperparameters; its parameters are
a plain pytree you hold; ``init`` and ``apply`` are pure functions, so
``jax.jit``, ``jax.grad``, ``jax.vmap`` and ``jax.lax.scan`` apply to them
directly.

    params, state = model.init(key, x_spec)        # x_spec: ShapeDtypeStruct or array
    y, state = model.apply(params, state, x, *, key=None, train=False)

Example:
    >>> import jax, jax.numpy as jnp, nnfun as nf
    >>> model = nf.Sequential([nf.Dense(32), jax.nn.relu, nf.Dense(10)])
    >>> params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 40), jnp.float32))
    >>> jax.tree.map(jnp.shape, params)
    {'0': {'bias': (32,), 'kernel': (40, 32)}, '2': {'bias': (10,), 'kernel': (32, 10)}}
    >>> y, state = model.apply(params, state, jnp.ones((8, 40)))
    >>> y.shape
    (8, 10)

Every public layer, combinator and tool is importable from ``nnfun`` itself.
The subpackages group them: ``nnfun.core`` (the contract, combinators,
``Stack``, parameter tools, ``summary``, configs), ``nnfun.layers`` (the layer
catalogue), ``nnfun.train`` (``TrainState``, pure steps, ``fit``, losses),
``nnfun.data`` (offline datasets and batching), ``nnfun.models`` (GPT, MNIST-1D
recipes), ``nnfun.checkpoint``, ``nnfun.parallel``, ``nnfun.ops`` and
``nnfun.testing`` (the conformance checks for your own layers); ``import
nnfun`` makes each of them an attribute (``nf.data.mnist1d``). One module stays
out on purpose: ``nnfun.host_memory``, a process-wide allocator setting for
XLA:CPU that a program imports and calls explicitly when it wants it.

The repository's ``notebooks/`` show it at work (start with
``quickstart.ipynb``); ``docs/design.md`` explains the design decisions.
"""

from . import checkpoint as checkpoint
from . import data as data
from . import models as models
from . import ops as ops
from . import parallel as parallel
from . import recsys as recsys
from . import testing as testing
from .checkpoint import export as export
from .checkpoint import load as load
from .checkpoint import load_model as load_model
from .checkpoint import save as save
from .checkpoint import save_model as save_model
from .core import ACTIVATIONS as ACTIVATIONS
from .core import INITIALIZERS as INITIALIZERS
from .core import Activation as Activation
from .core import Branch as Branch
from .core import FunctionLayer as FunctionLayer
from .core import Lambda as Lambda
from .core import Layer as Layer
from .core import LayerError as LayerError
from .core import LoRA as LoRA
from .core import Parallel as Parallel
from .core import Residual as Residual
from .core import Sequential as Sequential
from .core import Summary as Summary
from .core import count_params as count_params
from .core import flatten_params as flatten_params
from .core import from_config as from_config
from .core import get_initializer as get_initializer
from .core import init_shapes as init_shapes
from .core import labels as labels
from .core import lora as lora
from .core import summary as summary
from .core import to_config as to_config
from .core import unflatten_params as unflatten_params
from .core._precision import MixedPrecision as MixedPrecision
from .core._precision import Policy as Policy
from .core._remat import Remat as Remat
from .core._stack import Stack as Stack
from .data import Graph as Graph
from .layers import GAT as GAT
from .layers import GIN as GIN
from .layers import GRU as GRU
from .layers import LSTM as LSTM
from .layers import MFCC as MFCC
from .layers import MPNN as MPNN
from .layers import RNN as RNN
from .layers import AvgPool as AvgPool
from .layers import BatchNorm as BatchNorm
from .layers import Bidirectional as Bidirectional
from .layers import Conv as Conv
from .layers import ConvTranspose as ConvTranspose
from .layers import CrossNetwork as CrossNetwork
from .layers import DecoderBlock as DecoderBlock
from .layers import Dense as Dense
from .layers import Dropout as Dropout
from .layers import Embedding as Embedding
from .layers import EmbeddingBag as EmbeddingBag
from .layers import FactorizationMachine as FactorizationMachine
from .layers import FeedForward as FeedForward
from .layers import Flatten as Flatten
from .layers import GlobalAvgPool as GlobalAvgPool
from .layers import GlobalMaxPool as GlobalMaxPool
from .layers import GraphConv as GraphConv
from .layers import GroupNorm as GroupNorm
from .layers import LayerNorm as LayerNorm
from .layers import LearnedPositions as LearnedPositions
from .layers import MaxPool as MaxPool
from .layers import MelSpectrogram as MelSpectrogram
from .layers import MultiHeadAttention as MultiHeadAttention
from .layers import OnNodes as OnNodes
from .layers import Readout as Readout
from .layers import RecurrentCell as RecurrentCell
from .layers import Reshape as Reshape
from .layers import RMSNorm as RMSNorm
from .layers import RotaryPositions as RotaryPositions
from .layers import Set2Set as Set2Set
from .layers import SimpleRNN as SimpleRNN
from .layers import SinusoidalPositions as SinusoidalPositions
from .layers import SpecAugment as SpecAugment
from .layers import Spectrogram as Spectrogram
from .layers import TransformerBlock as TransformerBlock
from .layers import UtteranceNorm as UtteranceNorm
from .train import Callback as Callback
from .train import CSVLogger as CSVLogger
from .train import EarlyStopping as EarlyStopping
from .train import JSONLinesLogger as JSONLinesLogger
from .train import LearningRateFinder as LearningRateFinder
from .train import Logger as Logger
from .train import TensorBoardLogger as TensorBoardLogger
from .train import TrainState as TrainState
from .train import accuracy as accuracy
from .train import corpus_bleu as corpus_bleu
from .train import eval_step as eval_step
from .train import evaluate as evaluate
from .train import exact_match as exact_match
from .train import fit as fit
from .train import mse as mse
from .train import predict as predict
from .train import sequence_cross_entropy as sequence_cross_entropy
from .train import softmax_cross_entropy as softmax_cross_entropy
from .train import token_accuracy as token_accuracy
from .train import train_step as train_step

# What `from nnfun import *` and help(nnfun) show: every public name above,
# computed so that it cannot drift from the imports, which are the one list.
__all__ = sorted(name for name in dir() if not name.startswith("_"))

__version__ = "0.1.0"
