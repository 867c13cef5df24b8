"""Scale-out: device meshes, sharding rules by parameter path, data parallelism, several hosts.

A typical data-parallel run (the step function is the single-device one)::

    from nnfun import parallel as P
    mesh = P.make_mesh({"data": -1})                         # all devices, Auto axes
    train_state = P.place_state(train_state, mesh)           # replicated
    step = P.data_parallel_step(step_fn, mesh, train_state)
    train_state, metrics = step(train_state, P.shard_batch(batch, mesh))

Sharded parameters (FSDP or tensor parallel) are a rules dict away:
``P.place_state(ts, mesh, {"**/kernel": PartitionSpec(None, "model")})``.
Several hosts: call :func:`initialize` first in every process.
"""

from ._distributed import initialize as initialize
from ._mesh import axis_size as axis_size
from ._mesh import make_mesh as make_mesh
from ._place import batch_sharding as batch_sharding
from ._place import data_parallel_step as data_parallel_step
from ._place import place_state as place_state
from ._place import shard_batch as shard_batch
from ._rules import fsdp_rules as fsdp_rules
from ._rules import param_specs as param_specs
from ._rules import params_of as params_of
from ._rules import state_shardings as state_shardings
