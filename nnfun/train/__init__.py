"""Training: a ``TrainState`` pytree, pure train/eval steps, losses, and ``fit``
with its metric writers (``CSVLogger``, ``JSONLinesLogger``, ``TensorBoardLogger``),
callbacks (``Callback``, ``EarlyStopping``, ``LearningRateFinder``), and the
batched ``evaluate`` and ``predict``.

A batch is ``{"x": inputs, "y": targets}``, either any pytree of arrays. The
``loss_fn`` and every metric are ``fn(outputs, targets)`` returning per-example
values (the built-in losses and ``accuracy``, as in Optax) or a scalar; the
steps and ``fit`` take the mean. This package owns the losses and metrics;
``nnfun`` re-exports them.
"""

from ._callbacks import Callback as Callback
from ._callbacks import EarlyStopping as EarlyStopping
from ._callbacks import LearningRateFinder as LearningRateFinder
from ._ctc import character_error_rate as character_error_rate
from ._ctc import check_ctc_inputs as check_ctc_inputs
from ._ctc import ctc as ctc
from ._ctc import ctc_beam_search as ctc_beam_search
from ._ctc import ctc_greedy_decode as ctc_greedy_decode
from ._ctc import ctc_loss as ctc_loss
from ._ctc import ctc_prefix_beam_search as ctc_prefix_beam_search
from ._ctc import edit_distance as edit_distance
from ._ctc import word_error_rate as word_error_rate
from ._fit import fit as fit
from ._guard import first_nonfinite as first_nonfinite
from ._loggers import CSVLogger as CSVLogger
from ._loggers import JSONLinesLogger as JSONLinesLogger
from ._loggers import Logger as Logger
from ._loggers import TensorBoardLogger as TensorBoardLogger
from ._losses import accuracy as accuracy
from ._losses import mse as mse
from ._losses import softmax_cross_entropy as softmax_cross_entropy
from ._predict import evaluate as evaluate
from ._predict import predict as predict
from ._sequence import corpus_bleu as corpus_bleu
from ._sequence import exact_match as exact_match
from ._sequence import sequence_cross_entropy as sequence_cross_entropy
from ._sequence import token_accuracy as token_accuracy
from ._step import TrainState as TrainState
from ._step import eval_step as eval_step
from ._step import scan_steps as scan_steps
from ._step import train_step as train_step
