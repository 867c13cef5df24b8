"""``fit(steps_per_call="auto")``: it fuses steps, never across a boundary, and the run is
bitwise the run of K=1."""

import chex
import jax
import numpy as np
import optax

import nnfun as nf
from nnfun.train import _run

RNG = np.random.default_rng(0)
TRAIN = {
    "x": RNG.normal(size=(64, 6)).astype(np.float32),
    "y": RNG.integers(0, 3, size=64).astype(np.int32),
}
MODEL = nf.Sequential([nf.Dense(16), jax.nn.relu, nf.Dropout(0.25), nf.Dense(3)])
ADAM = optax.adam(1e-2)


class Calls(nf.Callback):
    def __init__(self):
        self.calls = []

    def on_step(self, train_state, step, metrics):
        self.calls.append((step - len(metrics["loss"]), step))


def run(steps_per_call, callbacks=()):
    return nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, TRAIN, steps=48, batch_size=16,
                  eval_data=TRAIN, eval_every=16, steps_per_call=steps_per_call,
                  metrics={"accuracy": nf.accuracy}, progress=False,
                  callbacks=callbacks)  # fmt: skip


def test_auto_fuses_steps_within_boundaries_and_equals_one_step_per_call(monkeypatch):
    # A long target makes "auto" fuse the most it may (64) however fast this machine is.
    monkeypatch.setattr(_run, "TARGET_CALL_SECONDS", 1.0)
    single, single_history = run(1)
    calls = Calls()
    auto, auto_history = run("auto", [calls])
    lengths = [end - first for first, end in calls.calls]
    assert lengths[:4] == [1, 1, 1, 1]  # timed before choosing
    assert max(lengths) == 16  # 64 capped at the distance between evaluations
    assert set(lengths) == {1, 16}  # remainders run as single steps: nothing else compiles
    assert all(first // 16 == (end - 1) // 16 for first, end in calls.calls)
    chex.assert_trees_all_equal(auto, single)
    chex.assert_trees_all_equal(auto_history, single_history)


def test_planner_keeps_one_step_when_the_run_cannot_repay_a_compile():
    planner = _run.Planner("auto", steps=100, bounds=[100])
    for step, seconds in enumerate([2.0, 1e-4, 1e-4, 1e-4], 1):  # compiling took 2 s
        planner.observe(step, 1, seconds)
    assert planner.decided and planner.k == 1  # 96 steps x 0.1 ms << 2 x 2 s
    planner = _run.Planner("auto", steps=10**6, bounds=[10**6])
    for step, seconds in enumerate([2.0, 1e-4, 1e-4, 1e-4], 1):
        planner.observe(step, 1, seconds)
    assert planner.k == 64  # ceil(log2(5 ms / 0.1 ms)) = 6
