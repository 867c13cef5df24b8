"""Saves checkpoints in a loop until it is killed; the SIGKILL test runs it as a subprocess.

Usage: ``python tests/_ckpt_writer.py DIRECTORY``. Before each save it prints
``start <step>``, after it ``done <step>``. Each tensor write sleeps a little (a slow
disk), so that a save takes most of a second and the parent can kill it mid-file.
"""

import itertools
import sys
import time

import numpy as np

from nnfun.checkpoint import CheckpointManager, _format

BLOCKS = 32
_write_tensor = _format._write_tensor


def tree_for(step):
    """The tree saved at ``step``: 32 blocks of 256 KiB filled with the step, and the step."""
    blocks = {f"block{i:02d}": np.full((256, 256), step + i, np.float32) for i in range(BLOCKS)}
    return {"blocks": blocks, "step": step}


def _slow_write_tensor(file, array):
    time.sleep(0.02)
    _write_tensor(file, array)


def main(directory):
    _format._write_tensor = _slow_write_tensor
    manager = CheckpointManager(directory, keep=2)
    for step in itertools.count():
        print(f"start {step}", flush=True)
        manager.save(step, tree_for(step))
        print(f"done {step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
