"""CheckpointManager: naming, keeping the newest, restoring, temp files, and a SIGKILL mid-write."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.checkpoint import CheckpointError, CheckpointManager

TESTS = pathlib.Path(__file__).parent


def _tree(step):
    return {"w": jnp.full((2, 3), float(step)), "step": step}


def test_files_are_named_by_step_and_the_newest_are_kept(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2)
    paths = [mgr.save(step, _tree(step)) for step in (5, 1, 12)]
    assert os.path.basename(paths[0]) == "ckpt_000000005.safetensors"
    assert mgr.all_steps() == [5, 12]  # step 1 is older than 5: it goes first
    assert mgr.latest_step() == 12
    assert sorted(os.listdir(tmp_path)) == [
        "ckpt_000000005.safetensors",
        "ckpt_000000012.safetensors",
    ]


def test_keep_none_keeps_everything_and_big_steps_sort_numerically(tmp_path):
    mgr = CheckpointManager(tmp_path / "sub" / "dir", keep=None)
    for step in (999_999_999, 1_000_000_000, 3):
        mgr.save(step, _tree(0))
    assert mgr.all_steps() == [3, 999_999_999, 1_000_000_000]


def test_restore_latest_and_a_given_step(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=3)
    for step in (1, 2, 3):
        mgr.save(np.int64(step), _tree(step))
    latest = mgr.restore(like=_tree(0))
    assert latest["step"] == 3 and float(latest["w"][0, 0]) == 3.0
    assert mgr.restore(2, like=_tree(0))["step"] == 2
    assert mgr.restore(step=1)["step"] == 1  # without like: dicts of NumPy arrays


def test_a_new_manager_sees_existing_checkpoints(tmp_path):
    CheckpointManager(tmp_path).save(7, _tree(7))
    assert CheckpointManager(tmp_path).latest_step() == 7


def test_restore_errors(tmp_path):
    mgr = CheckpointManager(tmp_path)
    assert mgr.latest_step() is None and mgr.all_steps() == []
    with pytest.raises(CheckpointError, match="no checkpoint to restore in"):
        mgr.restore()
    mgr.save(4, _tree(4))
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 5 .* saved steps: \[4\]"):
        mgr.restore(5)
    with pytest.raises(CheckpointError, match="keys missing"):
        mgr.restore(like={"other": jnp.zeros(1)})


def test_argument_errors(tmp_path):
    for keep in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="keep must be a positive int or None"):
            CheckpointManager(tmp_path, keep=keep)
    mgr = CheckpointManager(tmp_path)
    with pytest.raises(ValueError, match="step must be >= 0"):
        mgr.save(-1, _tree(0))
    with pytest.raises(TypeError, match="step must be an int"):
        mgr.save(1.0, _tree(0))


def test_temp_and_unrelated_files_are_ignored_and_stale_temps_removed(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _tree(1))
    stale = tmp_path / ".ckpt_000000002.safetensors.tmp-123-abcd"
    stale.write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "ckpt_3.safetensors.bak").write_text("not a checkpoint")
    assert mgr.latest_step() == 1
    CheckpointManager(tmp_path)
    assert not stale.exists()
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "ckpt_3.safetensors.bak").exists()


def test_a_failed_save_leaves_no_file(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _tree(1))
    with pytest.raises(CheckpointError, match="cannot save a leaf of type object"):
        mgr.save(2, {"bad": object()})
    with pytest.raises(CheckpointError, match="cannot be stored"):
        mgr.save(2, {"bad": np.ones(2, np.complex64)})
    assert os.listdir(tmp_path) == ["ckpt_000000001.safetensors"]


def _wait_for_line(stream, wanted):
    for line in stream:
        if line.strip() == wanted:
            return
    raise AssertionError(f"the writer ended before printing {wanted!r}")


def _partial_temp_file(directory, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in directory.iterdir():
            if ".tmp-" in path.name and path.stat().st_size > 0:
                return path
        time.sleep(0.002)
    raise AssertionError("the writer never started writing a temporary file")


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    writer = subprocess.Popen(
        [sys.executable, str(TESTS / "_ckpt_writer.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_for_line(writer.stdout, "done 1")
        _wait_for_line(writer.stdout, "start 2")
        temp = _partial_temp_file(tmp_path)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    # The kill landed mid-file: the temporary file is partial, and nothing sits under
    # the final name of step 2.
    full_size = (tmp_path / "ckpt_000000001.safetensors").stat().st_size
    assert temp.exists() and temp.stat().st_size < full_size
    with pytest.raises(CheckpointError, match="truncated"):
        nf.load(temp)
    assert not (tmp_path / "ckpt_000000002.safetensors").exists()

    monkeypatch.syspath_prepend(str(TESTS))
    import _ckpt_writer

    mgr = CheckpointManager(tmp_path, keep=2)
    assert not temp.exists()
    assert mgr.all_steps() == [0, 1]
    for step in (0, 1):
        expected = _ckpt_writer.tree_for(step)
        restored = mgr.restore(step, like=expected)
        assert restored["step"] == step
        for name, block in expected["blocks"].items():
            np.testing.assert_array_equal(restored["blocks"][name], block)
