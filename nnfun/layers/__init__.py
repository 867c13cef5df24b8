"""The layer catalogue; every name is re-exported from ``nnfun``."""

from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._reshape import Flatten as Flatten
from ._reshape import Reshape as Reshape
