"""Several processes: nnfun.parallel.initialize and data parallelism across two processes.

Two processes with 2 CPU devices each talk over 127.0.0.1 (gloo collectives) and train
data-parallel; their params must equal a single process's with 4 devices. Every child
process runs under a timeout and is killed if it overruns, so this file never hangs.
"""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnfun import parallel as P

WORKER = Path(__file__).with_name("_dist_worker.py")
TIMEOUT_S = 300  # generous: the 2 cores are shared; a healthy run takes ~20 s


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path, mode, port, process_id, out):
    # A log file, not a pipe: a full pipe could block the child. finish() closes it.
    log = open(tmp_path / f"{mode}{process_id}.log", "w")  # noqa: SIM115
    cmd = [sys.executable, str(WORKER), mode, str(port), str(process_id), str(out)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True), log


def finish(procs, timeout):
    """Waits for all processes until a shared deadline; kills the rest; returns the codes."""
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


def logs(tmp_path):
    return "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("*.log")))


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    port = free_port()
    outs = [tmp_path / f"multi{i}.json" for i in range(2)]
    procs = [start(tmp_path, "multi", port, i, outs[i]) for i in range(2)]
    procs.append(start(tmp_path, "single", "-", "-", tmp_path / "single.json"))
    codes = finish(procs, TIMEOUT_S)
    assert codes == [0, 0, 0], logs(tmp_path)
    first, second, single = (json.loads(p.read_text()) for p in [*outs, tmp_path / "single.json"])
    assert (first["processes"], first["devices"], first["local_devices"]) == (2, 4, 2)
    assert (single["processes"], single["devices"]) == (1, 4)
    for path, value in single["params"].items():
        np.testing.assert_array_equal(first["params"][path], second["params"][path])
        # float64, 20 Adam steps: only the order of the gradient sum differs.
        np.testing.assert_allclose(first["params"][path], value, rtol=0, atol=1e-12)
    np.testing.assert_allclose(first["loss"], single["loss"], rtol=1e-12)
    # Kernels sharded over both processes (FSDP-style) train the same way.
    assert first["fsdp_local_shards"] == [[5, 4], [5, 4]]  # (5, 16) over 4 devices, 2 local
    assert single["fsdp_local_shards"] == [[5, 4]] * 4
    for path, value in single["params"].items():
        np.testing.assert_allclose(first["fsdp_params"][path], value, rtol=0, atol=1e-12)
        np.testing.assert_allclose(second["fsdp_params"][path], value, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_missing_process_ends_by_itself_with_a_hint(tmp_path):
    begin = time.monotonic()
    codes = finish([start(tmp_path, "lonely", free_port(), 0, "-")], TIMEOUT_S)
    assert codes[0] is not None, "a process waiting for a peer that never comes must not hang"
    assert codes[0] != 0
    assert time.monotonic() - begin < TIMEOUT_S
    assert "fewer than num_processes=2 connected" in logs(tmp_path)


@pytest.mark.parametrize(
    "args, match",
    [
        (("localhost", 2, 0), "must be 'host:port'"),
        (("localhost:http", 2, 0), "must be 'host:port'"),
        ((":1234", 2, 0), "must be 'host:port'"),
        (("127.0.0.1:1234", 0, 0), "num_processes must be at least 1"),
        (("127.0.0.1:1234", 2, 2), "process_id=2 is out of range for num_processes=2"),
        (("127.0.0.1:1234", 2, -1), "out of range"),
        (("127.0.0.1:1234", 2.0, 0), "num_processes must be an int"),
        (("127.0.0.1:1234", 2, True), "process_id must be an int"),
    ],
)
def test_initialize_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        P.initialize(*args)


def test_initialize_rejects_bad_timeout():
    with pytest.raises(ValueError, match="initialization_timeout must be a positive int"):
        P.initialize("127.0.0.1:1234", 2, 0, initialization_timeout=0)


def test_initialize_after_a_computation_raises():
    jnp.zeros(1).block_until_ready()  # JAX has run here, so initialize must refuse
    assert not jax.distributed.is_initialized()
    with pytest.raises(RuntimeError, match="must be called before any JAX"):
        P.initialize(f"127.0.0.1:{free_port()}", 1, 0, initialization_timeout=2)
