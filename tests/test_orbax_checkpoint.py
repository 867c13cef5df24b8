"""Checkpoints through Orbax: one process (format="orbax") and two processes over gloo.

The two-process tests run tests/_orbax_worker.py: a sharded fit that checkpoints and resumes
bitwise equal to an uninterrupted one, a restore of its 2 x 2-device checkpoint onto
1 x 4 devices and onto 1 device, and a SIGKILL in the middle of a save. Every child
process runs under a timeout and is killed if it overruns.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

import nnfun as nf
from nnfun.checkpoint import CheckpointError, CheckpointManager
from nnfun.checkpoint._orbax import check_fits

WORKER = Path(__file__).with_name("_orbax_worker.py")
TIMEOUT_S = 300  # generous: the 2 cores are shared
TEMP = ".orbax-checkpoint-tmp"


def _state():
    ts = nf.TrainState.create(nf.Dense(3), optax.adam(1e-2), jax.random.key(7), jnp.zeros((1, 4)))
    return ts, {"ts": ts, "half": jnp.arange(6, dtype=jnp.bfloat16), "n": 5, "x": 0.5}


def _assert_same(restored, expected):
    def same(a, b):
        if jax.dtypes.issubdtype(getattr(b, "dtype", None) or np.float32, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert type(a) is type(b) or (isinstance(a, jax.Array) and isinstance(b, jax.Array))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype

    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    jax.tree.map(same, restored, expected)


def test_orbax_format_round_trip_keep_and_conversion(tmp_path):
    _, tree = _state()
    mgr = CheckpointManager(tmp_path, keep=2, format="orbax")
    for step in (1, 2, 3):
        bumped = jax.tree.map(lambda a, s=step: a + s if isinstance(a, jax.Array) else a, tree)
        path = mgr.save(step, bumped if step == 3 else tree)
    mgr.wait_until_finished()
    assert os.path.basename(path) == "ckpt_000000003.orbax" and os.path.isdir(path)
    assert mgr.all_steps() == [2, 3]  # pruned only after step 3 was committed
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000000002.orbax", "ckpt_000000003.orbax"]
    _assert_same(mgr.restore(2, like=tree), tree)
    # Without like: NumPy arrays in the saved structure (TrainState -> dict), as nf.load does.
    plain = mgr.restore(2)
    assert plain["n"] == 5 and plain["x"] == 0.5 and plain["half"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(plain["ts"]["params"]["kernel"], tree["ts"].params["kernel"])
    # One safetensors file, readable by nf.load like any single-process checkpoint.
    nf.checkpoint.orbax_to_safetensors(mgr.path(2), tmp_path / "one.safetensors")
    _assert_same(nf.load(tmp_path / "one.safetensors", like=tree), tree)
    mgr.close()


def test_orbax_restore_without_target_sharding_uses_the_saved_one(tmp_path):
    ts, _ = _state()
    mgr = CheckpointManager(tmp_path, format="orbax")
    mgr.save(0, ts)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), ts)
    _assert_same(mgr.restore(like=abstract), ts)
    mgr.close()


def test_unfinished_orbax_directories_are_ignored_then_removed(tmp_path):
    mgr = CheckpointManager(tmp_path, format="orbax")
    mgr.save(1, {"w": jnp.ones(3)})
    mgr.close()
    stale = tmp_path / f"ckpt_000000002.orbax{TEMP}"
    (stale / "arrays").mkdir(parents=True)
    assert CheckpointManager(tmp_path).all_steps() == [1]
    mgr = CheckpointManager(tmp_path, format="orbax")
    mgr.save(3, {"w": jnp.ones(3)})
    mgr.close()
    assert not stale.exists() and mgr.all_steps() == [1, 3]


def test_a_script_that_ends_right_after_a_save_still_commits_it(tmp_path):
    script = (
        "import sys, jax.numpy as jnp\n"
        "from nnfun.checkpoint import CheckpointManager\n"
        "CheckpointManager(sys.argv[1], format='orbax').save(4, {'w': jnp.ones((2048, 2048))})\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], timeout=TIMEOUT_S)
    assert done.returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000000004.orbax"]
    restored = CheckpointManager(tmp_path).restore(like={"w": np.zeros((2048, 2048), np.float32)})
    np.testing.assert_array_equal(restored["w"], np.ones((2048, 2048), np.float32))


def test_orbax_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="format must be one of"):
        CheckpointManager(tmp_path, format="zarr")
    mgr = CheckpointManager(tmp_path, format="orbax")
    mgr.save(1, {"w": jnp.ones(3)})
    with pytest.raises(CheckpointError, match=r"keys missing .*: v\n.*keys unexpected .*: w"):
        mgr.restore(like={"v": jnp.ones(3)})
    with pytest.raises(CheckpointError, match=r"w: expected float32\[4\], found float32\[3\]"):
        mgr.restore(like={"w": jnp.ones(4)})
    mgr.close()
    with pytest.raises(CheckpointError, match="no such Orbax checkpoint directory"):
        nf.checkpoint.orbax_to_safetensors(tmp_path / "nowhere", tmp_path / "x.safetensors")
    (tmp_path / "ckpt_000000005.orbax").mkdir()  # a directory that Orbax did not write
    with pytest.raises(CheckpointError, match="not an nnfun Orbax checkpoint"):
        mgr.restore(5)
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    with pytest.raises(ImportError, match=r"needs Orbax .* Fix: pip install 'nnfun\[scale\]'"):
        CheckpointManager(tmp_path / "x", format="orbax").save(0, {"w": jnp.ones(3)})


def test_a_mesh_that_cannot_hold_the_sharding_names_array_and_axis():
    mesh = AbstractMesh((3, 2), ("data", "model"))
    check_fits("params/kernel", (6, 4), NamedSharding(mesh, PartitionSpec("data", "model")))
    with pytest.raises(
        CheckpointError, match=r"'params/kernel' .* dimension 1 \(size 5\) .*'model'"
    ):
        check_fits("params/kernel", (6, 5), NamedSharding(mesh, PartitionSpec(None, "model")))
    with pytest.raises(CheckpointError, match=r"axis 'data' x 'model' of size 6"):
        check_fits("w", (4,), NamedSharding(mesh, PartitionSpec(("data", "model"))))


# Two processes over gloo on loopback.


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, mode, port, process_id, stdout=None):
    log = open(tmp_path / f"{mode}{process_id}.log", "w")  # noqa: SIM115
    cmd = [sys.executable, str(WORKER), mode, str(port), str(process_id), str(tmp_path)]
    proc = subprocess.Popen(
        cmd, stdout=stdout or log, stderr=log, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu")
    )
    return proc, log


def _finish(procs, timeout=TIMEOUT_S):
    deadline, codes = time.monotonic() + timeout, []
    for proc, _ in procs:
        try:
            codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return codes


def _logs(tmp_path):
    return "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))


def _pair(tmp_path, mode):
    port = _free_port()
    return [_start(tmp_path, mode, port, i) for i in range(2)]


@pytest.mark.slow
def test_sharded_fit_resumes_bitwise_and_restores_onto_other_meshes(tmp_path):
    assert _finish(_pair(tmp_path, "train")) == [0, 0], _logs(tmp_path)
    assert CheckpointManager(tmp_path / "a").all_steps() == [3, 6]
    assert os.path.isdir(CheckpointManager(tmp_path / "b").path(3))  # an Orbax directory
    # The resumed pair and the 1-process x 4-device restore run side by side.
    procs = [*_pair(tmp_path, "resume"), _start(tmp_path, "restore", "-", "-")]
    assert _finish(procs) == [0, 0, 0], _logs(tmp_path)

    uninterrupted = np.load(tmp_path / "uninterrupted.npz")
    resumed = np.load(tmp_path / "resumed.npz")
    restored = np.load(tmp_path / "restored.npz")
    messages = {
        **json.loads((tmp_path / "uninterrupted.json").read_text()),
        **json.loads((tmp_path / "restored.json").read_text()),
    }
    assert messages["kernel_shards"] == [[5, 4]]  # the kernel really was split over processes
    names = ["0/bias", "0/kernel", "2/bias", "2/kernel"]
    assert sorted(uninterrupted.files) == names
    assert sorted(resumed.files) == names + [f"host/{name}" for name in names]
    for name in uninterrupted.files:
        assert resumed[name].dtype == uninterrupted[name].dtype == np.float32
        np.testing.assert_array_equal(resumed[name], uninterrupted[name])  # bitwise
        np.testing.assert_array_equal(resumed[f"host/{name}"], uninterrupted[name])
        np.testing.assert_array_equal(restored[f"mesh/{name}"], uninterrupted[name])
        np.testing.assert_array_equal(restored[f"one/{name}"], uninterrupted[name])
    assert messages["steps"] == [6, 6]
    assert messages["kernel_spec"] == "P(None, 'data')"
    converted = nf.load(tmp_path / "a.safetensors")
    for name in uninterrupted.files:
        np.testing.assert_array_equal(
            nf.flatten_params(converted["params"])[name], uninterrupted[name]
        )
    assert "pip install 'nnfun[scale]'" in messages["orbax_missing"]
    assert messages["orbax_missing"].startswith("ImportError")
    assert "'params/0/kernel'" in messages["too_small"]
    assert "mesh axis 'data' of size 3" in messages["too_small"]
    assert "saved by 2 processes and this run has 1" in messages["no_target"]


def _wait_for_line(stream, wanted):
    for line in stream:
        if line.strip() == wanted:
            return
    raise AssertionError(f"the worker ended before printing {wanted!r}")


@pytest.mark.slow
def test_sigkill_of_one_process_mid_save_leaves_the_previous_checkpoint(tmp_path):
    port = _free_port()
    first = _start(tmp_path, "kill", port, 0)
    second = _start(tmp_path, "kill", port, 1, stdout=subprocess.PIPE)
    final = tmp_path / "ckpt_000000002.orbax"
    try:
        _wait_for_line(second[0].stdout, "saving 2")  # then it stops itself (SIGSTOP)
        os.kill(second[0].pid, signal.SIGKILL)
        second[0].wait(timeout=30)
        time.sleep(2)  # the survivor may not commit step 2 on its own
        assert not final.exists()
        assert (tmp_path / f"{final.name}{TEMP}").is_dir()  # killed in the middle of the save
    finally:
        for proc, _ in (first, second):
            if proc.poll() is None:
                proc.kill()
        codes = _finish([first, second], timeout=30)
        second[0].stdout.close()
    assert codes[1] == -signal.SIGKILL, _logs(tmp_path)

    mgr = CheckpointManager(tmp_path)
    assert mgr.all_steps() == [1]
    like = {"w": np.zeros((8192, 4096), np.int32), "step": 0}
    restored = mgr.restore(like=like)
    expected = np.arange(8192 * 4096, dtype=np.int64).reshape(8192, 4096) + 1
    np.testing.assert_array_equal(restored["w"], expected)
    assert restored["step"] == 1
