"""nnfun.retain_host_memory: page faults per call with and without it, and when it refuses.

The setting is process-wide and must come before JAX starts, so each case runs
in a fresh interpreter.
"""

import json
import os
import platform
import subprocess
import sys
import textwrap
import warnings

import pytest

import nnfun as nf
from nnfun import _host_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# A GPT training step: its XLA scratch buffer (about 70 MiB) is far above
# glibc's largest mmap threshold (32 MiB).
PROGRAM = textwrap.dedent(
    """
    import json, resource, sys
    import nnfun as nf
    if sys.argv[1] == "call":
        retained = nf.retain_host_memory()
    else:
        retained = nf._host_memory._retained
    import jax, jax.numpy as jnp, optax
    from nnfun.models.gpt import GPT
    from nnfun.train import TrainState, softmax_cross_entropy, train_step

    model = GPT(vocab_size=32, d_model=128, num_heads=4, num_layers=2, max_length=128)
    batch = {"x": jnp.zeros((16, 128), jnp.int32), "y": jnp.ones((16, 128), jnp.int32)}
    ts = TrainState.create(model, optax.adam(1e-3), jax.random.key(0), batch["x"])
    step = jax.jit(train_step(model, softmax_cross_entropy, optax.adam(1e-3)), donate_argnums=0)
    compiled = step.lower(ts, batch).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    for _ in range(10):  # the heap grows to its high-water mark (steps overlap)
        ts, metrics = compiled(ts, batch)
    jax.block_until_ready(ts)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        ts, metrics = compiled(ts, batch)
    jax.block_until_ready(ts)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8
    print(json.dumps({"retained": retained, "faults": faults, "temp_pages": temp / 4096}))
    """
)


def _run(mode: str, env_value: str | None = None) -> dict:
    env = dict(os.environ)
    env.pop("NNFUN_RETAIN_HOST_MEMORY", None)
    if env_value is not None:
        env["NNFUN_RETAIN_HOST_MEMORY"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="retain_host_memory needs Linux with glibc")
def test_retained_memory_stops_the_page_faults_of_every_call():
    default = _run("default")
    called = _run("call")
    from_env = _run("env", "1")
    assert default["temp_pages"] > 32 * 2**20 / 4096  # the precondition: a buffer glibc maps
    assert not default["retained"] and called["retained"] and from_env["retained"]
    # Without it every step faults in its whole scratch buffer again. With it the
    # pages are reused; a step may still grow the heap once in a while (two
    # queued steps can hold two buffers), hence the margin.
    assert default["faults"] > 0.8 * default["temp_pages"]
    assert called["faults"] < 0.3 * default["temp_pages"]
    assert from_env["faults"] < 0.3 * default["temp_pages"]


def test_refuses_after_jax_has_started():
    import jax.numpy as jnp

    jnp.ones(1).block_until_ready()  # the backends are up in this process
    if _host_memory._retained:
        pytest.skip("this test process runs with NNFUN_RETAIN_HOST_MEMORY set")
    with pytest.warns(RuntimeWarning, match="before the first JAX computation"):
        assert nf.retain_host_memory() is False
    assert not _host_memory._retained


def test_refuses_without_glibc(monkeypatch):
    if _host_memory._retained:
        pytest.skip("this test process runs with NNFUN_RETAIN_HOST_MEMORY set")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    with pytest.warns(RuntimeWarning, match="needs Linux with glibc"):
        assert nf.retain_host_memory() is False


@pytest.mark.parametrize("value", ["", "0", "off", "False"])
def test_environment_values_that_leave_it_off(monkeypatch, value):
    monkeypatch.setenv("NNFUN_RETAIN_HOST_MEMORY", value)
    called = []
    monkeypatch.setattr(_host_memory, "retain_host_memory", lambda: called.append(1))
    _host_memory._from_environment()
    assert called == []


def test_environment_value_that_turns_it_on(monkeypatch):
    monkeypatch.setenv("NNFUN_RETAIN_HOST_MEMORY", "yes")
    called = []
    monkeypatch.setattr(_host_memory, "retain_host_memory", lambda: called.append(1))
    _host_memory._from_environment()
    assert called == [1]


def test_bad_environment_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NNFUN_RETAIN_HOST_MEMORY", "maybe")
    with pytest.raises(ValueError, match="NNFUN_RETAIN_HOST_MEMORY must be .* got 'maybe'"):
        _host_memory._from_environment()


def test_no_warning_when_already_retained(monkeypatch):
    monkeypatch.setattr(_host_memory, "_retained", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nf.retain_host_memory() is True
