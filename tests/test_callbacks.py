"""``fit(..., callbacks=...)``: stopping (a user's callback, early stopping with restore),
the learning-rate finder against the closed-form stability bound, and a raising callback."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun as nf
from nnfun.checkpoint import CheckpointManager

RNG = np.random.default_rng(0)
TRAIN = {
    "x": RNG.normal(size=(32, 5)).astype(np.float32),
    "y": RNG.integers(0, 3, size=32).astype(np.int32),
}
# The same inputs with other labels: the better the model fits TRAIN, the worse it does here.
SHIFTED = {"x": TRAIN["x"], "y": (TRAIN["y"] + 1) % 3}
MODEL = nf.Sequential([nf.Dense(16), jax.nn.relu, nf.Dense(3)])
ADAM = optax.adam(3e-2)  # one object: fit's compiled functions are reused across tests


def run(steps, **kwargs):
    options = dict(batch_size=8, seed=0, progress=False)
    options.update(kwargs)
    return nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, TRAIN, steps=steps, **options)


class StopAt(nf.Callback):
    def __init__(self, step, every=None):
        self.step, self.every, self.seen = step, every, []

    def on_step(self, train_state, step, metrics):
        self.seen.append((step, len(metrics["loss"])))
        return step >= self.step


@pytest.mark.parametrize("every, expected", [(None, 8), (1, 7)])
def test_a_user_callback_stops_training(every, expected):
    # Calls of 4 steps: without `every` the callback first sees step 7 at the end of the
    # call 5-8, and training stops there; with every=1 each step ends a call.
    callback = StopAt(7, every)
    ts, history = run(20, steps_per_call=4, callbacks=[callback])
    assert int(ts.step) == expected
    np.testing.assert_array_equal(history["train"]["step"], np.arange(1, expected + 1))
    assert callback.seen[-1][0] == expected
    assert {length for _, length in callback.seen} == ({4} if every is None else {1})
    reference, _ = run(expected)  # the call queued after the stop left no trace
    chex.assert_trees_all_equal(ts.params, reference.params)


def patience_reference(losses, patience):
    """The best evaluation and the one training stops at, from the rule, in plain Python."""
    best, waited = 0, 0
    for i in range(1, len(losses)):
        if losses[i] < losses[best]:
            best, waited = i, 0
        else:
            waited += 1
            if waited == patience:
                return best, i
    return best, None


def test_early_stopping_restores_the_best_evaluation():
    _, full = run(40, eval_data=SHIFTED, eval_every=4)
    best, stop = patience_reference(full["eval"]["loss"], patience=2)
    assert stop is not None and stop < 9, "the shifted labels should make the loss rise"
    early = nf.EarlyStopping("loss", patience=2)
    ts, history = run(40, eval_data=SHIFTED, eval_every=4, callbacks=[early])
    steps = full["eval"]["step"]
    assert early.stopped_step == steps[stop] and early.best_step == steps[best]
    np.testing.assert_array_equal(history["eval"]["step"], steps[: stop + 1])
    assert int(ts.step) == steps[best]
    reference, _ = run(int(steps[best]))
    chex.assert_trees_all_equal(ts.params, reference.params)


def test_early_stopping_errors():
    with pytest.raises(KeyError, match=r"monitor='acc' is not an evaluation metric.*\['loss'\]"):
        run(8, eval_data=SHIFTED, eval_every=4, callbacks=[nf.EarlyStopping("acc")])
    with pytest.raises(ValueError, match="patience must be an int >= 1, got 0"):
        nf.EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        nf.EarlyStopping(mode="lowest")


def finder_reference(x, y, rate, steps, smoothing=0.9, stop_factor=4.0):
    """Full-batch gradient descent from zero on the mean squared error, in float64 NumPy,
    with the range test's rule: how many steps run before the smoothed loss exceeds
    stop_factor times its minimum."""
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    w, average, smoothed = np.zeros((design.shape[1], 1)), 0.0, []
    for count in range(steps):
        residual = design @ w - y
        average = smoothing * average + (1 - smoothing) * np.mean(residual**2)
        smoothed.append(average / (1 - smoothing ** (count + 1)))
        if not np.isfinite(smoothed[-1]) or smoothed[-1] > stop_factor * min(smoothed):
            return count + 1
        w = w - rate(count) * 2 * design.T @ residual / len(x)
    return steps


def test_learning_rate_finder_stops_past_the_stability_bound():
    # Full-batch gradient descent on a least-squares loss diverges exactly when the rate
    # exceeds 2 / (largest eigenvalue of the Hessian).
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(64, 3)) * [1.0, 2.0, 0.5]).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(64, 1))).astype(np.float32)
    design = np.concatenate([x, np.ones((64, 1))], axis=1).astype(np.float64)
    bound = 2 / np.linalg.eigvalsh(2 * design.T @ design / 64).max()
    finder = nf.LearningRateFinder(1e-3, 10.0, steps=60)
    optimizer, model = optax.sgd(finder.schedule), nf.Dense(1)
    start = nf.TrainState.create(model, optimizer, jax.random.key(0), x)
    start = start.replace(params=jax.tree.map(jnp.zeros_like, start.params))
    nf.fit(model, nf.mse, optimizer, {"x": x, "y": y}, steps=60, batch_size=64,
           train_state=start, progress=False, callbacks=[finder])  # fmt: skip
    expected = finder_reference(x, y, finder.rate, 60)
    assert expected < 60 and abs(len(finder.rates) - expected) <= 1
    assert finder.rates[-1] > bound  # it never stops while the loss still falls
    assert finder.suggestion() < bound


class Boom(nf.Callback):
    def on_step(self, train_state, step, metrics):
        if step == 6:
            raise RuntimeError("boom")


def test_a_raising_callback_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    with pytest.raises(RuntimeError, match="boom") as info:
        run(12, steps_per_call=1, checkpoint_dir=str(tmp_path), checkpoint_every=4,
            callbacks=[Boom()])  # fmt: skip
    assert "callback Boom.on_step raised at step 6" in "".join(info.value.__notes__)
    manager = CheckpointManager(str(tmp_path))
    assert manager.all_steps() == [4]
    reference, _ = run(4)
    restored = manager.restore(like=jax.device_get(reference))
    chex.assert_trees_all_equal(restored.params, jax.device_get(reference.params))


def test_a_callback_without_the_hooks_is_refused():
    with pytest.raises(TypeError, match=r"callbacks item .* lacks \['on_start'.*nf.Callback"):
        run(2, callbacks=[lambda *a: None])
