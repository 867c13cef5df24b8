"""Checkpoints: pytrees and models in safetensors files, atomic writes, a step-numbered manager.

The format is safetensors (an 8-byte header length, a JSON header, raw
little-endian tensor bytes), written and read here with NumPy alone: loading a
file never runs code from it. See ``docs/design.md`` ("Checkpoints") for why.

    nf.save(path, tree); tree = nf.load(path, like=tree)
    nf.save_model(path, model, params, state); model, params, state = nf.load_model(path)
    mgr = nf.checkpoint.CheckpointManager(directory, keep=3)
    mgr.save(step, tree); mgr.restore(like=tree)
    nf.export(model, params, state, example_input, path)   # StableHLO, loads without nnfun

Arrays sharded across processes go through Orbax instead (``ckpt_<step>.orbax``
directories, written asynchronously by every process; the ``[scale]`` extra);
``orbax_to_safetensors`` turns such a checkpoint into one file.
"""

from ._export import export as export
from ._format import DTYPES as DTYPES
from ._format import CheckpointError as CheckpointError
from ._format import read_safetensors as read_safetensors
from ._format import write_safetensors as write_safetensors
from ._manager import CheckpointManager as CheckpointManager
from ._model import load_model as load_model
from ._model import save_model as save_model
from ._orbax import orbax_to_safetensors as orbax_to_safetensors
from ._torch import import_state_dict as import_state_dict
from ._tree import leaf_name as leaf_name
from ._tree import load as load
from ._tree import save as save
