"""The layer contract, combinators, parameter tools and configs.

A layer subclasses :class:`Layer` and becomes a frozen dataclass; it implements
``init(key, x_spec) -> (params, state)`` and ``apply(params, state, x, *,
key=None, train=False) -> (y, state)``. Combinators (:class:`Sequential`,
:class:`Parallel`, :class:`Branch`, :class:`Residual`, ``Stack``) run their
children through :func:`init_child` / :func:`apply_child`, which give each
child its path (used in error messages and parameter keys), its key (the
parent's key folded with a CRC32 of the child's name) and the extra inputs it
reads (:data:`EXTRAS`; :func:`split_inputs` separates them from the main input).

Parameter tools work on the nested-dict params: :func:`count_params`,
:func:`flatten_params` / :func:`unflatten_params` (``"a/b/c"`` paths) and
:func:`labels` (glob rules to label trees for ``optax.multi_transform``);
:func:`lora` adds low-rank adapters to chosen dense layers (:class:`LoRA`).
:func:`summary` tabulates shapes, parameter counts and FLOPs per layer;
:func:`to_config` / :func:`from_config` turn a model into JSON and back.
"""

from ._children import apply_child as apply_child
from ._children import init_child as init_child
from ._children import join_inputs as join_inputs
from ._children import output_spec as output_spec
from ._children import route as route
from ._children import split_inputs as split_inputs
from ._combinators import ACTIVATIONS as ACTIVATIONS
from ._combinators import Activation as Activation
from ._combinators import Branch as Branch
from ._combinators import FunctionLayer as FunctionLayer
from ._combinators import Lambda as Lambda
from ._combinators import Parallel as Parallel
from ._combinators import Residual as Residual
from ._combinators import Sequential as Sequential
from ._combinators import as_layer as as_layer
from ._config import from_config as from_config
from ._config import to_config as to_config
from ._initializers import INITIALIZERS as INITIALIZERS
from ._initializers import get_initializer as get_initializer
from ._layer import EXTRAS as EXTRAS
from ._layer import Layer as Layer
from ._layer import LayerError as LayerError
from ._layer import as_key as as_key
from ._layer import child_key as child_key
from ._layer import init_shapes as init_shapes
from ._layer import layer_error as layer_error
from ._layer import require_key as require_key
from ._layer import spec_of as spec_of
from ._lora import LoRA as LoRA
from ._lora import lora as lora
from ._params import count_params as count_params
from ._params import flatten_params as flatten_params
from ._params import labels as labels
from ._params import unflatten_params as unflatten_params
from ._summary import Summary as Summary
from ._summary import summary as summary
