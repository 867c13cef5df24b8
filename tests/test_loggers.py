"""``fit(..., loggers=...)``: CSV, JSON lines and TensorBoard files read back, an
unwritable directory, and rows surviving a SIGKILL up to the last flush."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import optax
import pytest

import nnfun as nf

RNG = np.random.default_rng(0)
DATA = {
    "x": RNG.normal(size=(48, 4)).astype(np.float32),
    "y": RNG.integers(0, 3, size=48).astype(np.int32),
}
MODEL = nf.Dense(3)
METRICS = {"accuracy": nf.accuracy}


def linear_rate(count):
    """optax.linear_schedule(1e-2, 1e-3, 12), written from its formula."""
    return 1e-2 + (1e-3 - 1e-2) * min(count, 12) / 12


def run(loggers, **kwargs):
    options = dict(batch_size=16, seed=0, metrics=METRICS, progress=False, eval_data=DATA)
    options.update(kwargs)
    schedule = optax.linear_schedule(1e-2, 1e-3, 12)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=schedule)
    return nf.fit(MODEL, nf.softmax_cross_entropy, optimizer, DATA, steps=12, eval_every=6,
                  loggers=loggers, **options)  # fmt: skip


def read_csv(path):
    with open(path) as file:
        rows = list(csv.reader(file))
    return rows[0], np.array(rows[1:], np.float64)


def test_csv_and_json_lines_hold_every_step_and_the_run_settings(tmp_path):
    _, history = run([nf.CSVLogger(tmp_path), nf.JSONLinesLogger(tmp_path)], steps_per_call=1)
    header, train = read_csv(tmp_path / "train.csv")
    assert header == ["step", "loss", "accuracy", "learning_rate", "steps_per_second",
                      "examples_per_second"]  # fmt: skip
    np.testing.assert_array_equal(train[:, 0], np.arange(1, 13))
    np.testing.assert_allclose(train[:, 1], history["train"]["loss"], rtol=1e-6)
    np.testing.assert_allclose(train[:, 2], history["train"]["accuracy"], rtol=1e-6)
    # The rate each update used: the schedule at the update's 0-based count.
    np.testing.assert_allclose(train[:, 3], [linear_rate(s - 1) for s in range(1, 13)], rtol=1e-6)
    assert np.all(train[:, 4] > 0)
    np.testing.assert_allclose(train[:, 5], train[:, 4] * 16, rtol=1e-9)  # 16 examples a step
    header, evals = read_csv(tmp_path / "eval.csv")
    assert header == ["step", "loss", "accuracy"]
    np.testing.assert_array_equal(evals[:, 0], [6, 12])
    np.testing.assert_allclose(evals[:, 1], history["eval"]["loss"], rtol=1e-6)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["steps"] == 12 and config["batch_size"] == 16 and config["eval_every"] == 6
    # The optimizer's injected hyperparameters as they stood at the start: step 0's rate.
    assert config["optimizer_hyperparams"]["learning_rate"] == pytest.approx(linear_rate(0))
    assert "kernel" not in config and "Dense" in (tmp_path / "summary.txt").read_text()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["part"] == "config" and lines[0]["config"]["steps"] == 12
    train_lines = [line for line in lines if line["part"] == "train"]
    np.testing.assert_allclose([line["loss"] for line in train_lines], train[:, 1], rtol=1e-6)
    assert [line["step"] for line in lines if line["part"] == "eval"] == [6, 12]


def test_tensorboard_events_read_back_with_tensorboard(tmp_path):
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    schedule = optax.linear_schedule(1e-2, 1e-3, 12)
    _, history = run([nf.TensorBoardLogger(tmp_path)], steps_per_call=4, schedule=schedule)
    events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()
    expected = {"train/loss", "train/accuracy", "train/learning_rate", "train/steps_per_second",
                "train/examples_per_second", "eval/loss", "eval/accuracy"}  # fmt: skip
    assert expected <= set(tags["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 13))
    np.testing.assert_allclose([e.value for e in loss], history["train"]["loss"], rtol=1e-6)
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    np.testing.assert_allclose(rates, [linear_rate(s - 1) for s in range(1, 13)], rtol=1e-6)
    evals = events.Scalars("eval/accuracy")
    assert [e.step for e in evals] == [6, 12]
    np.testing.assert_allclose([e.value for e in evals], history["eval"]["accuracy"], rtol=1e-6)
    assert {"config/text_summary", "model/text_summary"} <= set(tags["tensors"])


class Recorder(nf.Logger):
    def __init__(self):
        self.writes = []

    def write(self, part, rows):
        self.writes.append(part)


def test_unwritable_directory_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    recorder = Recorder()
    with pytest.raises(OSError, match=r"fit: CSVLogger\(.*a_file/logs'\) cannot write to .*Fix"):
        run([recorder, nf.CSVLogger(blocker / "logs")])
    assert recorder.writes == []


def test_a_logger_without_the_methods_is_refused():
    with pytest.raises(TypeError, match=r"loggers item .* lacks \['open', 'write'.*nf.Logger"):
        run([object()])


KILLED = """
import sys, time, numpy as np, optax, nnfun as nf
sys.path.insert(0, {tests!r})
from test_loggers import DATA, METRICS, MODEL

class Hang(nf.Callback):
    def on_step(self, train_state, step, metrics):
        if step == 13:  # rows 11-13 are written but not yet flushed
            open({marker!r}, "w").close()
            time.sleep(120)

nf.fit(MODEL, nf.softmax_cross_entropy, optax.adam(1e-2), DATA, steps=20, batch_size=16,
       metrics=METRICS, eval_data=DATA, eval_every=5, steps_per_call=1, progress=False,
       loggers=[nf.CSVLogger({logs!r})], callbacks=[Hang()])
"""


@pytest.mark.slow
def test_rows_up_to_the_last_flush_survive_sigkill(tmp_path):
    marker, logs = str(tmp_path / "marker"), str(tmp_path / "logs")
    script = KILLED.format(tests=os.path.dirname(__file__), marker=marker, logs=logs)
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(marker):
            assert process.poll() is None, "the training process ended before the kill"
            assert time.monotonic() < deadline, "the training process never reached step 13"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    _, history = nf.fit(MODEL, nf.softmax_cross_entropy, optax.adam(1e-2), DATA, steps=10,
                        batch_size=16, metrics=METRICS, progress=False)  # fmt: skip
    header, train = read_csv(os.path.join(logs, "train.csv"))
    assert header[:3] == ["step", "loss", "accuracy"]
    assert 10 <= len(train) <= 13  # flushed at the evaluation of step 10, killed at 13
    np.testing.assert_array_equal(train[:, 0], np.arange(1, len(train) + 1))
    np.testing.assert_allclose(train[:10, 1], history["train"]["loss"], rtol=1e-6)
    _, evals = read_csv(os.path.join(logs, "eval.csv"))
    np.testing.assert_array_equal(evals[:, 0], [5, 10])
