"""nnfun.host_memory.retain_host_memory: page faults with and without it, when it refuses,
and that ``import nnfun`` never applies it.

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

from nnfun import host_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# A GPT training step: its XLA scratch buffer (about 70 MiB) is far above
# glibc's largest mmap threshold (32 MiB).
PROGRAM = textwrap.dedent(
    """
    import json, resource, sys
    import nnfun.host_memory
    if sys.argv[1] == "call":
        retained = nnfun.host_memory.retain_host_memory()
    else:
        retained = nnfun.host_memory._retained
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


def _run(mode: str) -> dict:
    return _python(PROGRAM, mode)


def _python(program: str, *args: str, **environment: str) -> dict:
    env = dict(os.environ, **environment)
    out = subprocess.run(
        [sys.executable, "-c", program, *args],
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
    assert default["temp_pages"] > 32 * 2**20 / 4096  # the precondition: a buffer glibc maps
    assert not default["retained"] and called["retained"]
    # Without it every step faults in its whole scratch buffer again. With it the
    # pages are reused; a step may still grow the heap once in a while (two
    # queued steps can hold two buffers), hence the margin.
    assert default["faults"] > 0.8 * default["temp_pages"]
    assert called["faults"] < 0.3 * default["temp_pages"]


# Records every library ctypes loads while nnfun is imported: mallopt needs libc.
IMPORT_ONLY = textwrap.dedent(
    """
    import ctypes, json
    loaded = []
    _cdll_init = ctypes.CDLL.__init__
    def _record(self, name, *args, **kwargs):
        loaded.append(str(name))
        _cdll_init(self, name, *args, **kwargs)
    ctypes.CDLL.__init__ = _record
    import nnfun
    import nnfun.host_memory
    print(json.dumps({
        "retained": nnfun.host_memory._retained,
        "libc_loaded": any("libc." in name for name in loaded),
        "top_level": hasattr(nnfun, "retain_host_memory"),
    }))
    """
)


def test_import_changes_no_process_setting_even_with_the_old_environment_variable():
    result = _python(IMPORT_ONLY, NNFUN_RETAIN_HOST_MEMORY="1")
    assert result == {"retained": False, "libc_loaded": False, "top_level": False}


def test_refuses_after_jax_has_started():
    import jax.numpy as jnp

    jnp.ones(1).block_until_ready()  # the backends are up in this process
    if host_memory._retained:
        pytest.skip("an earlier test in this process retained host memory")
    with pytest.warns(RuntimeWarning, match="before the first JAX computation"):
        assert host_memory.retain_host_memory() is False
    assert not host_memory._retained


def test_refuses_without_glibc(monkeypatch):
    if host_memory._retained:
        pytest.skip("an earlier test in this process retained host memory")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    with pytest.warns(RuntimeWarning, match="needs Linux with glibc"):
        assert host_memory.retain_host_memory() is False


def test_no_warning_when_already_retained(monkeypatch):
    monkeypatch.setattr(host_memory, "_retained", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert host_memory.retain_host_memory() is True
