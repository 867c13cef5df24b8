"""``fit``: history, fused steps, evaluation, checkpoint resume, the NaN guard, errors."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
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
        ({"x": EVAL["x"], "y": EVAL["y"][:7]}, ValueError, "y has 7 examples, x has 10"),
        ({"x": EVAL["x"], "y": np.int32(1)}, ValueError, "y is a scalar"),
        (
            {"x": {"inputs": EVAL["x"], "lengths": EVAL["y"][:9]}, "y": EVAL["y"]},
            ValueError,
            "x/lengths has 9 examples, x/inputs has 10",
        ),
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


# ------------------------------------------------ nested inputs, labels, optimizer and seed

SEQ_RNG = np.random.default_rng(1)
SEQ = {
    "x": {
        "inputs": SEQ_RNG.normal(size=(32, 6, 3)).astype(np.float32),
        "lengths": SEQ_RNG.integers(1, 7, size=32).astype(np.int32),
    },
    "y": SEQ_RNG.integers(0, 3, size=32).astype(np.int32),
}
GRU_MODEL = nf.Sequential([nf.RNN(nf.GRU(8), return_sequences=False), nf.Dense(3)])


def test_nested_inputs_fused_steps_equal_single_steps():
    # Today's nnfun refused this: "Batches: arrays need a leading example axis; ['x'] are scalars".
    def train(k):
        return nf.fit(GRU_MODEL, nf.softmax_cross_entropy, ADAM, SEQ, steps=16, batch_size=4,
                      steps_per_call=k, eval_data=SEQ, eval_every=8, metrics=METRICS,
                      progress=False)  # fmt: skip

    (ts1, h1), (ts8, h8) = train(1), train(8)
    assert int(ts8.step) == 16
    chex.assert_trees_all_close(ts8.params, ts1.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h8["train"]["loss"], h1["train"]["loss"], rtol=1e-5)
    np.testing.assert_array_equal(h8["eval"]["step"], [8, 16])
    np.testing.assert_allclose(h8["eval"]["loss"], h1["eval"]["loss"], rtol=1e-5)
    assert h1["train"]["loss"][-4:].mean() < h1["train"]["loss"][:4].mean()


def masked_mean(params, x):
    steps = jnp.arange(x["inputs"].shape[1])[None, :] < x["lengths"][:, None]
    total = jnp.sum(jnp.where(steps[..., None], x["inputs"], 0.0), axis=1)
    return total / x["lengths"][:, None] @ params["w"] + params["b"][None, :]


MASKED_MEAN = nf.FunctionLayer(
    lambda key, x: {"w": jax.random.normal(key, (x["inputs"].shape[-1], 3)), "b": jnp.zeros(3)},
    masked_mean,
)


def np_sgd_on_masked_mean(params, data, batch_size, seed, steps, lr):
    """The SGD run that fit should do, in NumPy: Batches' documented order, the
    mean cross-entropy and its gradient written out."""
    w, b = np.array(params["w"], np.float64), np.array(params["b"], np.float64)
    per_epoch = len(data["y"]) // batch_size
    for step in range(steps):
        epoch, i = divmod(step, per_epoch)
        rows = np.random.default_rng((seed, epoch)).permutation(len(data["y"]))
        rows = rows[i * batch_size : (i + 1) * batch_size]
        inputs, lengths = data["x"]["inputs"][rows], data["x"]["lengths"][rows]
        valid = np.arange(inputs.shape[1])[None, :] < lengths[:, None]
        means = (inputs * valid[..., None]).sum(1) / lengths[:, None]
        logits = means @ w + b
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        dlogits = (probs - np.eye(3)[data["y"][rows]]) / batch_size
        w, b = w - lr * means.T @ dlogits, b - lr * dlogits.sum(0)
    return {"w": w, "b": b}


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_fit_on_nested_inputs_equals_numpy_sgd(steps_per_call):
    opt = optax.sgd(0.5)
    ts, _ = nf.fit(MASKED_MEAN, nf.softmax_cross_entropy, opt, SEQ, steps=9, batch_size=8,
                   seed=2, steps_per_call=steps_per_call, progress=False)  # fmt: skip
    start = nf.TrainState.create(MASKED_MEAN, opt, jax.random.key(2), SEQ["x"])
    expected = np_sgd_on_masked_mean(start.params, SEQ, 8, seed=2, steps=9, lr=0.5)
    chex.assert_trees_all_close(jax.device_get(ts.params), expected, rtol=2e-5, atol=2e-6)


def pair_model_apply(params, x):
    source, target = x
    return source @ params["s"] + target @ params["t"]


PAIR_MODEL = nf.FunctionLayer(
    lambda key, x: {"s": jnp.zeros((x[0].shape[-1], 2)), "t": jnp.zeros((x[1].shape[-1], 2))},
    pair_model_apply,
)


def test_fit_takes_a_source_target_pair():
    source, target = TRAIN["x"][:, :4], TRAIN["x"][:, 4:]
    data = {"x": (source, target), "y": TRAIN["x"][:, :2]}
    ts, history = nf.fit(PAIR_MODEL, nf.mse, optax.sgd(0.1), data, steps=1, batch_size=32,
                         progress=False)  # fmt: skip
    # One full-batch step from zeros: the gradient of mean((0 - y)^2) is -2 y / y.size.
    np.testing.assert_allclose(history["train"]["loss"], [(data["y"] ** 2).mean()], rtol=1e-6)
    grad_s = -2 * source.T @ data["y"] / data["y"].size
    np.testing.assert_allclose(ts.params["s"], -0.1 * grad_s, rtol=1e-5, atol=1e-7)


def test_nested_train_data_names_the_leaf_whose_length_differs():
    data = {"x": {"inputs": SEQ["x"]["inputs"][:8], "lengths": SEQ["x"]["lengths"][:7]},
            "y": SEQ["y"][:8]}  # fmt: skip
    with pytest.raises(ValueError, match="x/lengths has 7 examples, x/inputs has 8"):
        nf.fit(GRU_MODEL, nf.softmax_cross_entropy, ADAM, data, steps=2, batch_size=4,
               progress=False)  # fmt: skip


def test_first_batch_without_targets_fails_before_training():
    batches = Batches({"x": SEQ["x"]}, 4)
    with pytest.raises(TypeError, match=r"keys 'x' \(inputs\) and 'y' \(targets\).*\['x'\]"):
        nf.fit(GRU_MODEL, nf.softmax_cross_entropy, ADAM, batches, steps=2, progress=False)


def bad_labels(values, rows):
    y = TRAIN["y"].copy()
    y[rows] = values
    return y


def tracing_loss(traced):
    def loss(outputs, targets):
        traced.append(outputs.shape)  # runs when fit traces its first step
        return nf.softmax_cross_entropy(outputs, targets)

    return loss


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("train", r"train_data\['y'\]: labels hold -1, 3, outside \[0, 3\)"),
        ("eval", r"eval_data\['y'\]: labels hold 5, outside \[0, 3\)"),
        ("batches", r"first batch's 'y'.*labels hold -1, outside \[0, 3\)"),
    ],
)
def test_labels_outside_the_output_width_fail_before_training(where, match):
    train, evals = TRAIN, None
    if where == "train":
        train = {"x": TRAIN["x"], "y": bad_labels([-1, 3], [5, 30])}
    elif where == "eval":
        evals = {"x": EVAL["x"], "y": np.where(np.arange(10) == 4, 5, EVAL["y"])}
    else:
        train = Batches({"x": TRAIN["x"], "y": bad_labels(-1, 2)}, 8, shuffle=False)
    traced = []
    with pytest.raises(ValueError, match=match + r".*has 3 classes.*Fix: map the labels to 0\.\.2"):
        nf.fit(MODEL, tracing_loss(traced), ADAM, train, steps=2, batch_size=8,
               metrics=METRICS, eval_data=evals, progress=False)  # fmt: skip
    assert traced == []


def test_label_check_names_the_output_width_and_the_fix():
    train = {"x": TRAIN["x"], "y": bad_labels(6, 0)}
    match = r"output \(batch, 3\) has 3 classes.*a last Dense\(7\)"
    with pytest.raises(ValueError, match=match):
        nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, train, steps=2, batch_size=8, progress=False)


def test_nan_guard_names_labels_out_of_range():
    # A loss of the user's own is not checked before training; under jit the bad
    # label gives NaN, and the guard names it.
    batches = Batches({"x": TRAIN["x"], "y": bad_labels(-1, 27)}, 8, shuffle=False)
    match = r"at step 3; this batch's labels hold -1, outside \[0, 3\)"
    with pytest.raises(FloatingPointError, match=match):
        nf.fit(MODEL, tracing_loss([]), ADAM, batches, steps=4, progress=False)


@pytest.mark.parametrize(
    ("optimizer", "match"),
    [
        (optax.adam, r"fit: optimizer must be .* call the factory .* optax\.adam\(1e-3\)"),
        (0.01, r"fit: optimizer must be .* the number 0\.01\. Fix: pass optax\.adam\(0\.01\)"),
    ],
)
def test_optimizer_factory_or_number_says_how_to_call_it(optimizer, match):
    with pytest.raises(TypeError, match=match):
        nf.fit(MODEL, nf.softmax_cross_entropy, optimizer, TRAIN, steps=2, batch_size=8,
               progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("seed", "error"), [(jax.random.key(0), TypeError), (1.0, TypeError), (-1, ValueError)]
)
def test_seed_must_be_an_int(seed, error):
    with pytest.raises(error, match="seed must be a non-negative int.*train_state="):
        nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, TRAIN, steps=2, batch_size=8, seed=seed,
               progress=False)  # fmt: skip


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
