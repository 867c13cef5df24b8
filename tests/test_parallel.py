"""nnfun.parallel: meshes, sharding rules, batches, data-parallel steps.

Multi-device behaviour runs in a subprocess with 8 host CPU devices
(tests/_parallel_worker.py); rule and batch errors are checked here against an
``AbstractMesh``, which needs no devices.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as PS

import nnfun as nf
from nnfun import parallel as P

WORKER = Path(__file__).with_name("_parallel_worker.py")


def abstract_mesh(**axes):
    return AbstractMesh(tuple(axes.values()), tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def mlp_params():
    model = nf.Sequential([nf.Dense(16), jax.nn.relu, nf.Dense(8)])
    return model.init(jax.random.key(0), jnp.zeros((1, 8)))[0]


@pytest.fixture(scope="module")
def eight():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    # ~20 s of CPU; the timeout is generous because the 2 cores are shared with other tests.
    done = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=480
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- 8 devices (subprocess) ---------------------------------------------------------------


@pytest.mark.slow
def test_eight_devices_seen(eight):
    assert eight["devices"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["replicated", "fsdp", "tensor"])
def test_data_parallel_matches_single_device_float32(eight, layout):
    # Float32 sums in another order differ by ~1 ulp per step; a few steps stay within 1e-6.
    assert len(eight[layout]["diffs"]) == 4
    assert max(eight[layout]["diffs"]) < 1e-6


@pytest.mark.slow
def test_data_parallel_matches_single_device_float64_long_run(eight):
    assert len(eight["x64"]["diffs"]) == 30
    assert max(eight["x64"]["diffs"]) < 1e-12


@pytest.mark.slow
def test_replicated_params_live_whole_on_every_device(eight):
    for entry in eight["replicated"]["params"].values():
        assert entry["spec"] == "P()" and entry["devices"] == 8


@pytest.mark.slow
def test_fsdp_rules_shard_the_largest_axis_of_each_kernel(eight):
    assert eight["fsdp_rules"] == {"0/kernel": "P(None, 'data')", "2/kernel": "P('data',)"}
    params, mu = eight["fsdp"]["params"], eight["fsdp"]["mu"]
    assert params["0/kernel"]["shards"] == [[8, 2]]  # (8, 16) split 8 ways on its 16
    assert params["2/kernel"]["shards"] == [[2, 8]]  # (16, 8) split 8 ways on its 16
    assert params["0/bias"]["shards"] == [[16]]
    assert mu["0/kernel"]["shards"] == [[8, 2]]  # Adam's moments follow their parameter


@pytest.mark.slow
def test_tensor_parallel_dense_layout(eight):
    params = eight["tensor"]["params"]
    assert params["0/kernel"] == {"spec": "P(None, 'model')", "shards": [[8, 8]], "devices": 8}
    assert params["0/bias"]["shards"] == [[8]]
    assert params["2/kernel"]["shards"] == [[8, 8]]
    assert eight["tensor"]["mu"]["2/kernel"]["spec"] == "P('model',)"


@pytest.mark.slow
def test_tensor_parallel_attention_heads(eight):
    layout = eight["attention"]["layout"]
    for name in ("query", "key", "value"):  # (16, 4 heads x 4) -> 2 heads per "model" device
        assert layout[f"layer/{name}/kernel"]["shards"] == [[16, 8]]
    assert layout["layer/query/bias"]["shards"] == [[8]]
    assert layout["layer/out/kernel"]["shards"] == [[8, 16]]
    assert layout["layer/out/bias"]["spec"] == "P()"
    assert eight["attention"]["diff"] < 1e-6  # one training step equals one device's


@pytest.mark.slow
def test_shard_batch_splits_rows(eight):
    assert eight["batch"] == {"spec": "P('data',)", "shards": [[4, 8]], "devices": 8}


@pytest.mark.slow
def test_train_step_and_fit_with_a_mesh_match_one_device(eight):
    # nf.train_step with dropout (a replicated key) and nf.fit(mesh=, steps_per_call=2).
    result = eight["train_module"]
    assert result["step_diff"] < 1e-6
    assert result["fit_diff"] < 1e-6
    assert result["fit_spec"] == "P()" and result["fit_devices"] == 8


# --- one device and abstract meshes -------------------------------------------------------


def test_make_mesh_uses_auto_axes():
    mesh = P.make_mesh({"data": -1})
    assert mesh.axis_types == (AxisType.Auto,)
    assert P.make_mesh((1,), ("data",)).shape == {"data": 1}


@pytest.mark.parametrize(
    "args, match",
    [
        (({"data": 2},), "needs 2 devices, but only 1"),
        (({"data": -1, "model": -1},), "at most one mesh axis may be -1"),
        (({"data": 0},), "positive ints"),
        (((1,),), "needs names="),
        (((1, 1), ("data",)), "2 axis sizes"),
        (({},), "distinct strings"),
    ],
)
def test_make_mesh_errors(args, match):
    with pytest.raises(ValueError, match=match):
        P.make_mesh(*args)


def test_make_mesh_cannot_fill_axis():
    with pytest.raises(ValueError, match="cannot fill axis 'data'"):
        P.make_mesh({"data": -1, "model": 2}, devices=jax.devices() * 3)


def test_param_specs_first_matching_rule_wins_and_others_replicate():
    rules = {"0/kernel": PS("data"), "**/kernel": PS(None, "data")}
    specs = P.param_specs(mlp_params(), abstract_mesh(data=8), rules)
    assert specs == {
        "0": {"kernel": PS("data"), "bias": PS()},
        "2": {"kernel": PS(None, "data"), "bias": PS()},
    }


def test_param_specs_accept_tuples():
    specs = P.param_specs(mlp_params(), abstract_mesh(data=8), {"**/bias": ("data",)})
    assert specs["0"]["bias"] == PS("data")


@pytest.mark.parametrize(
    "rules, match",
    [
        ({"encoder/**": PS()}, r"\['encoder/\*\*'\] match no parameter path"),
        ({"**/kernel": PS("model")}, "names mesh axis 'model', but the mesh has axes"),
        ({"**/bias": PS(None, "data")}, "gives at most 1 entries|Fix: give at most 1"),
        ({"0/kernel": PS("data")}, r"dimension 0 \(size 8\).*16 shards"),
        ({"**/kernel": "data"}, "expected a PartitionSpec"),
    ],
)
def test_param_specs_errors(rules, match):
    with pytest.raises((ValueError, TypeError), match=match):
        P.param_specs(mlp_params(), abstract_mesh(data=16), rules)


def test_fsdp_rules_pick_the_largest_divisible_axis():
    params = {"a": {"kernel": np.zeros((6, 4))}, "b": {"kernel": np.zeros((3, 5))}}
    rules = P.fsdp_rules(params, abstract_mesh(data=2))
    assert rules == {"a/kernel": PS("data")}  # 6 beats 4; (3, 5) has no even axis


def test_fsdp_rules_errors():
    with pytest.raises(ValueError, match="matches no parameter path"):
        P.fsdp_rules(mlp_params(), abstract_mesh(data=2), pattern="**/embedding")
    with pytest.raises(ValueError, match="names mesh axis 'fsdp'"):
        P.fsdp_rules(mlp_params(), abstract_mesh(data=2), axis="fsdp")


def test_state_shardings_follow_params_into_optimizer_state():
    params = mlp_params()
    ts = {"params": params, "opt_state": optax.adam(1e-3).init(params), "step": jnp.zeros(())}
    sh = P.state_shardings(ts, abstract_mesh(data=2), {"**/kernel": PS("data")})
    adam = sh["opt_state"][0]
    assert sh["params"]["0"]["kernel"].spec == PS("data")
    assert adam.mu["2"]["kernel"].spec == adam.nu["2"]["kernel"].spec == PS("data")
    assert adam.mu["0"]["bias"].spec == PS()
    assert adam.count.spec == PS() and sh["step"].spec == PS()


def test_state_shardings_find_params_attribute():
    class TS:  # any object with .params; only its arrays matter
        def __init__(self, params):
            self.params = params

    assert P.params_of(TS({"w": 1})) == {"w": 1}
    assert P.params_of({"params": {"w": 1}}) == {"w": 1}
    assert P.params_of({"w": 1}) == {"w": 1}


@pytest.mark.parametrize("rows", [10, 4])
def test_shard_batch_rejects_indivisible_batch(rows):
    batch = {"x": np.zeros((rows, 3)), "y": np.zeros((rows,))}
    with pytest.raises(ValueError, match=f"batch size {rows}, which the data-parallel size 8"):
        P.shard_batch(batch, abstract_mesh(data=8))


def test_shard_batch_errors():
    with pytest.raises(ValueError, match="names mesh axis 'batch'"):
        P.shard_batch({"x": np.zeros((8, 3))}, abstract_mesh(data=8), axis="batch")
    with pytest.raises(ValueError, match="no dimension 0 to split"):
        P.shard_batch({"x": np.float32(1.0)}, abstract_mesh(data=8))
    with pytest.raises(ValueError, match="no dimension 1 to split"):
        P.shard_batch({"x": np.zeros((8,))}, abstract_mesh(data=8), batch_dim=1)


def test_batch_sharding_over_two_axes_and_a_leading_steps_axis():
    mesh = abstract_mesh(data=2, fsdp=4)
    sharding = P.batch_sharding(mesh, ("data", "fsdp"), batch_dim=1)
    assert sharding.spec == PS(None, ("data", "fsdp"))
    assert P.axis_size(mesh, ("data", "fsdp")) == 8


def test_data_parallel_step_on_one_device_equals_plain_jit():
    params = mlp_params()
    optimizer = optax.sgd(0.1)
    model = nf.Sequential([nf.Dense(16), jax.nn.relu, nf.Dense(8)])

    def step(ts, batch):
        def loss(p):
            return jnp.mean((model.apply(p, {}, batch["x"])[0] - batch["y"]) ** 2)

        value, grads = jax.value_and_grad(loss)(ts["params"])
        updates, opt_state = optimizer.update(grads, ts["opt_state"])
        return {"params": optax.apply_updates(ts["params"], updates), "opt_state": opt_state}, value

    ts = {"params": params, "opt_state": optimizer.init(params)}
    batch = {"x": jnp.ones((4, 8)), "y": jnp.zeros((4, 8))}
    mesh = P.make_mesh({"data": 1})
    placed = P.place_state(ts, mesh)
    assert isinstance(placed["params"]["0"]["kernel"].sharding, NamedSharding)
    ours = P.data_parallel_step(step, mesh, placed)(placed, P.shard_batch(batch, mesh))
    chex.assert_trees_all_close(ours, jax.jit(step)(ts, batch), rtol=1e-6)
