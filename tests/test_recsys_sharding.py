"""Embedding tables sharded by rows over 8 host CPU devices (tests/_recsys_sharding_worker.py).

One rule, ``{"**/embedding": PartitionSpec("model")}``, splits every table; a
plain ``jax.jit`` step then trains exactly as on one device, each device holds
its share of the rows, and the compiled step never gathers a whole table.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_recsys_sharding_worker.py")


@pytest.fixture(scope="module")
def eight():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    done = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=480
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_eight_devices(eight):
    assert eight["devices"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bag", "mf"])
def test_row_sharded_training_matches_one_device(eight, model):
    assert eight[model]["max_diff"] < 1e-6
    assert eight[model]["forward_diff"] < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("model", ["bag", "mf"])
def test_each_device_holds_an_eighth_of_the_rows(eight, model):
    tables = eight[model]["tables"]
    assert len(tables) == (1 if model == "bag" else 4)
    for table in tables.values():
        assert table["spec"] == "P('model',)"
        assert table["shard_rows"] == [table["rows"] // 8]


@pytest.mark.slow
def test_the_step_never_gathers_a_table(eight):
    # The lookup is a local gather of the rows each device owns, then one all-reduce of
    # the looked-up (batch, bag, features) rows; the table's gradient stays sharded.
    for model in ("bag", "mf"):
        assert eight[model]["all_gathers"] == 0
    for shape in eight["bag"]["collective_shapes"]:
        dims = [int(d) for d in re.findall(r"\d+", shape.split("{")[0])]
        assert dims != [1024, 16]
