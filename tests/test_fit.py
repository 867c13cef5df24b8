"""``fit``: history, fused steps, evaluation, checkpoint resume, the NaN guard, errors."""

import os
import subprocess
import sys

import chex
import jax
import numpy as np
import optax
import pytest

import nnfun as nf
from nnfun.checkpoint import CheckpointManager
from nnfun.data import Batches

RNG = np.random.default_rng(0)
TRAIN = {
    "x": RNG.normal(size=(32, 6)).astype(np.float32),
    "y": RNG.integers(0, 3, size=32).astype(np.int32),
}
EVAL = {
    "x": RNG.normal(size=(10, 6)).astype(np.float32),
    "y": RNG.integers(0, 3, size=10).astype(np.int32),
}
MODEL = nf.Sequential({"hidden": nf.Dense(8), "relu": jax.nn.relu, "drop": nf.Dropout(0.25)})
MODEL = nf.Sequential({"body": MODEL, "out": nf.Dense(3)})
METRICS = {"accuracy": nf.accuracy}
ADAM = optax.adam(1e-2)  # one object, so fit's compiled functions are reused across tests


def run(steps, **kwargs):
    options = dict(batch_size=8, seed=1, metrics=METRICS, progress=False)
    options.update(kwargs)
    return nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, TRAIN, steps=steps, **options)


def assert_same_state(a, b):
    chex.assert_trees_all_equal(a, b)


def test_history_and_eval_each_epoch():
    ts, history = run(12, eval_data=EVAL)
    assert int(ts.step) == 12
    np.testing.assert_array_equal(history["train"]["step"], np.arange(1, 13))
    assert history["train"]["loss"].shape == history["train"]["accuracy"].shape == (12,)
    np.testing.assert_array_equal(history["eval"]["step"], [4, 8, 12])  # 32 / 8 = 4 per epoch
    assert set(history["eval"]) == {"step", "loss", "accuracy"}


def test_eval_metrics_equal_numpy_over_uneven_chunks():
    ts, history = run(6, eval_data=EVAL, eval_every=6, eval_batch_size=4)  # chunks 4, 4, 2
    p = jax.device_get(ts.params)
    hidden = np.maximum(EVAL["x"] @ p["body"]["hidden"]["kernel"] + p["body"]["hidden"]["bias"], 0)
    logits = hidden @ p["out"]["kernel"] + p["out"]["bias"]
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    loss = -log_probs[np.arange(10), EVAL["y"]].mean()
    np.testing.assert_allclose(history["eval"]["loss"], [loss], rtol=1e-5)
    np.testing.assert_allclose(
        history["eval"]["accuracy"], [(logits.argmax(-1) == EVAL["y"]).mean()]
    )


def test_steps_per_call_gives_the_same_run():
    # 20 steps, evaluation every 18: calls of 16, 2 (to the evaluation), 2 with K=16.
    ts1, h1 = run(20, eval_data=EVAL, eval_every=18, steps_per_call=1)
    ts16, h16 = run(20, eval_data=EVAL, eval_every=18, steps_per_call=16)
    assert_same_state(ts1, ts16)
    np.testing.assert_array_equal(h1["train"]["loss"], h16["train"]["loss"])
    np.testing.assert_array_equal(h1["eval"]["step"], [18, 20])
    chex.assert_trees_all_equal(h1["eval"], h16["eval"])


def test_resume_is_bitwise_equal(tmp_path):
    straight, _ = run(12, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=4)
    run(8, checkpoint_dir=str(tmp_path / "b"), checkpoint_every=4, steps_per_call=2)  # "killed"
    assert CheckpointManager(tmp_path / "b").latest_step() == 8
    resumed, history = run(12, checkpoint_dir=str(tmp_path / "b"), checkpoint_every=4)
    np.testing.assert_array_equal(history["train"]["step"], np.arange(9, 13))
    assert_same_state(straight, resumed)


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    done, _ = run(4, checkpoint_dir=str(tmp_path), eval_data=EVAL)
    again, history = run(4, checkpoint_dir=str(tmp_path), eval_data=EVAL)
    assert_same_state(done, again)
    assert history["train"]["loss"].shape == history["eval"]["accuracy"].shape == (0,)


def test_checkpoints_keep_the_last_n(tmp_path):
    run(10, checkpoint_dir=str(tmp_path), checkpoint_every=2, keep=2, steps_per_call=2)
    assert CheckpointManager(tmp_path).all_steps() == [8, 10]


def nan_data(row):
    x = TRAIN["x"].copy()
    x[row, 0] = np.nan
    return Batches({"x": x, "y": TRAIN["y"]}, 8, shuffle=False)


def test_nan_guard_names_step_and_gradient_leaf(tmp_path):
    with pytest.raises(FloatingPointError, match=r"at step 3; the first non-finite leaf is grads/"):
        nf.fit(
            MODEL, nf.softmax_cross_entropy, ADAM, nan_data(row=27), steps=8,
            progress=False, checkpoint_dir=str(tmp_path), checkpoint_every=2, steps_per_call=2,
        )  # fmt: skip
    manager = CheckpointManager(tmp_path)
    assert manager.latest_step() == 2
    like = jax.device_get(nf.TrainState.create(MODEL, ADAM, jax.random.key(0), EVAL["x"]))
    last = manager.restore(like=like)
    assert nf.train.first_nonfinite(last.params) is None


def test_nan_guard_on_diverging_params():
    with pytest.raises(FloatingPointError, match=r"at step \d+; the first non-finite leaf is"):
        nf.fit(MODEL, nf.softmax_cross_entropy, optax.sgd(1e30), TRAIN, steps=20, batch_size=8,
               progress=False)  # fmt: skip


def test_checkpoint_refuses_non_finite_params(tmp_path):
    # The first loss is finite, but the update makes every parameter NaN.
    nan_updates = optax.scale(float("nan"))
    with pytest.raises(
        FloatingPointError, match=r"params/body/hidden/bias is non-finite after step 1"
    ):
        nf.fit(MODEL, nf.softmax_cross_entropy, nan_updates, TRAIN, steps=1, batch_size=8,
               progress=False, checkpoint_dir=str(tmp_path))  # fmt: skip
    assert CheckpointManager(tmp_path).latest_step() is None


def test_nan_guard_off_lets_nan_through():
    _, history = nf.fit(
        MODEL, nf.softmax_cross_entropy, ADAM, nan_data(row=3), steps=2,
        progress=False, nan_guard=False,
    )  # fmt: skip
    assert np.isnan(history["train"]["loss"][0])


def test_progress_bar_shows_loss_and_eval(capsys):
    run(4, progress=True, eval_data=EVAL, eval_every=4)
    err = capsys.readouterr().err
    assert "loss=" in err and " accuracy=" in err and "val_accuracy=" in err and "4/4" in err


def test_mesh_data_parallel_matches_single_device():
    from nnfun import parallel

    mesh = parallel.make_mesh({"data": -1})
    plain, _ = run(4, steps_per_call=2)
    sharded, _ = run(4, steps_per_call=2, mesh=mesh)
    chex.assert_trees_all_close(sharded.params, plain.params, rtol=1e-5, atol=1e-6)


def test_given_train_state_is_continued():
    ts, _ = run(4)
    more, _ = run(6, train_state=ts)
    straight, _ = run(6)
    assert_same_state(more, straight)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps_per_call": 0}, ValueError, "steps_per_call must be a positive int, got 0"),
        ({"steps": 0}, ValueError, "steps must be a positive int"),
        ({"eval_every": -1}, ValueError, "eval_every must be a positive int"),
        ({"checkpoint_every": 1.5}, ValueError, "checkpoint_every must be a positive int"),
        ({"batch_size": None}, ValueError, "batch_size is required"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    options = {"steps": 2, "batch_size": 8, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, TRAIN, **options)


def test_unequal_batches_cannot_be_fused():
    ragged = Batches(TRAIN, 12, shuffle=False, drop_remainder=False)  # 12, 12, 8
    with pytest.raises(ValueError, match="needs equal shapes.*drop_remainder=True"):
        nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, ragged, steps=3, steps_per_call=3,
               progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("eval_data", "error", "match"),
    [
        ({"val": EVAL}, TypeError, r"eval_data must be one dict .* got \['val'\]"),
        ([EVAL["x"], EVAL["y"]], TypeError, "eval_data must be one dict .* got list"),
        ({"x": EVAL["x"], "y": EVAL["y"][:7]}, ValueError, r"equal length, got shapes .*\(7,\)"),
        ({"x": EVAL["x"], "y": np.int32(1)}, ValueError, "one leading example axis"),
    ],
)
def test_bad_eval_data_fails_before_training(eval_data, error, match):
    traced = []

    def loss(outputs, targets):
        traced.append(outputs.shape)  # runs when fit traces its first step
        return nf.softmax_cross_entropy(outputs, targets)

    with pytest.raises(error, match=match):
        nf.fit(MODEL, loss, ADAM, TRAIN, steps=2, batch_size=8, eval_data=eval_data,
               progress=False)  # fmt: skip
    assert traced == []


def test_bad_train_data():
    with pytest.raises(TypeError, match="train_data must be a dict"):
        nf.fit(MODEL, nf.mse, ADAM, [TRAIN], steps=2, batch_size=8, progress=False)


MESH_SCRIPT = """
import jax, numpy as np, optax, nnfun as nf
from nnfun import parallel
assert jax.device_count() == 2
rng = np.random.default_rng(0)
data = {"x": rng.normal(size=(32, 6)).astype(np.float32),
        "y": rng.integers(0, 3, size=32).astype(np.int32)}
model = nf.Sequential([nf.Dense(8), jax.nn.relu, nf.Dense(3)])
opt = optax.adam(1e-2)
def run(**kw):
    return nf.fit(model, nf.softmax_cross_entropy, opt, data, steps=6, batch_size=8,
                  steps_per_call=4, progress=False, **kw)[0]
plain, sharded = run(), run(mesh=parallel.make_mesh({"data": -1}))
batch_sharding = sharded.params["0"]["kernel"].sharding
assert len(batch_sharding.device_set) == 2, batch_sharding
np.testing.assert_allclose(sharded.params["0"]["kernel"], plain.params["0"]["kernel"],
                           rtol=1e-5, atol=1e-6)
print("ok")
"""


@pytest.mark.slow  # a subprocess with two host devices
def test_mesh_over_two_devices_matches_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", MESH_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
