"""TrainState and the pure train/eval steps, against NumPy references (losses: test_losses)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun as nf
from nnfun.train import first_nonfinite, scan_steps

RNG = np.random.default_rng(0)


def np_cross_entropy(logits, labels):
    """The mean cross-entropy, from the formula."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], axis=-1).mean()


def classification_batch(n=12, features=5, classes=4):
    x = RNG.normal(size=(n, features)).astype(np.float32)
    return {"x": x, "y": RNG.integers(0, classes, size=n).astype(np.int32)}


def test_train_state_is_a_pytree(key):
    ts = nf.TrainState.create(nf.Dense(3), optax.adam(1e-3), key, jnp.zeros((1, 2)))
    leaves, treedef = jax.tree.flatten(ts)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    chex.assert_trees_all_equal(rebuilt.params, ts.params)
    assert ts.step.dtype == jnp.int32 and int(ts.step) == 0
    doubled = jax.jit(lambda t: jax.tree.map(lambda a: a, t))(ts)
    assert isinstance(doubled, nf.TrainState)
    assert int(ts.replace(step=jnp.int32(5)).step) == 5
    assert ts.key.dtype == jnp.uint32  # raw key data: typed keys leave jit's fast path
    from_raw = nf.TrainState.create(
        nf.Dense(3), optax.adam(1e-3), jax.random.key_data(key), jnp.zeros((1, 2))
    )
    chex.assert_trees_all_equal(from_raw, ts)


def test_one_step_equals_numpy_sgd(key):
    model, lr = nf.Dense(2), 0.1
    ts = nf.TrainState.create(model, optax.sgd(lr), key, jnp.zeros((1, 3)))
    batch = {"x": RNG.normal(size=(8, 3)).astype(np.float32)}
    batch["y"] = RNG.normal(size=(8, 2)).astype(np.float32)
    w, b = np.asarray(ts.params["kernel"]), np.asarray(ts.params["bias"])
    residual = batch["x"] @ w + b - batch["y"]
    scale = 2.0 / residual.size  # d mean(r^2) / d r
    new, metrics = jax.jit(nf.train_step(model, nf.mse, optax.sgd(lr)))(ts, batch)
    np.testing.assert_allclose(metrics["loss"], (residual**2).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        new.params["kernel"], w - lr * scale * batch["x"].T @ residual, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        new.params["bias"], b - lr * scale * residual.sum(0), rtol=1e-5, atol=1e-6
    )
    assert int(new.step) == 1


def test_train_step_decreases_the_loss(key):
    model = nf.Sequential([nf.Dense(16), jax.nn.relu, nf.Dense(4)])
    optimizer = optax.adam(1e-2)
    batch = classification_batch()
    ts = nf.TrainState.create(model, optimizer, key, batch["x"])
    step = jax.jit(nf.train_step(model, nf.softmax_cross_entropy, optimizer), donate_argnums=0)
    losses = []
    for _ in range(30):
        ts, metrics = step(ts, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]


def test_eval_step_equals_numpy(key):
    model = nf.Dense(4)
    batch = classification_batch()
    ts = nf.TrainState.create(model, optax.sgd(0.1), key, batch["x"])
    evaluate = jax.jit(nf.eval_step(model, nf.softmax_cross_entropy, {"accuracy": nf.accuracy}))
    got = evaluate(ts, batch)
    logits = batch["x"] @ np.asarray(ts.params["kernel"]) + np.asarray(ts.params["bias"])
    np.testing.assert_allclose(got["loss"], np_cross_entropy(logits, batch["y"]), rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], (logits.argmax(-1) == batch["y"]).mean())


def dropout_setup(key):
    model = nf.Sequential([nf.Dense(8), nf.Dropout(0.5), nf.Dense(4)])
    optimizer = optax.adam(1e-2)
    batch = classification_batch()
    ts = nf.TrainState.create(model, optimizer, key, batch["x"])
    return model, optimizer, batch, ts


def test_dropout_key_comes_from_state_key_and_step(key):
    model, optimizer, batch, ts = dropout_setup(key)
    step = jax.jit(nf.train_step(model, nf.softmax_cross_entropy, optimizer))
    _, first = step(ts, batch)
    _, again = step(ts, batch)
    _, later = step(ts.replace(step=jnp.int32(1)), batch)
    assert float(first["loss"]) == float(again["loss"])
    assert float(first["loss"]) != float(later["loss"])


def test_scan_steps_equals_single_steps(key):
    model, optimizer, batch, ts = dropout_setup(key)
    step = nf.train_step(model, nf.softmax_cross_entropy, optimizer, {"accuracy": nf.accuracy})
    batches = [jax.tree.map(lambda a, i=i: np.roll(a, i, axis=0), batch) for i in range(5)]
    single, expected = ts, []
    for b in batches:
        single, m = jax.jit(step)(single, b)
        expected.append(m)
    stacked = jax.tree.map(lambda *a: np.stack(a), *batches)
    fused, metrics = jax.jit(scan_steps(step))(ts, stacked)
    chex.assert_trees_all_close(fused, single)
    assert metrics["loss"].shape == (5,)
    np.testing.assert_allclose(metrics["loss"], [m["loss"] for m in expected], rtol=1e-6)


def test_missing_dropout_key_says_how_to_pass_one(key):
    model, _, batch, ts = dropout_setup(key)
    with pytest.raises(nf.LayerError, match=r"Dropout at '1'.*key=jax\.random\.key\(0\)"):
        model.apply(ts.params, ts.state, batch["x"], train=True)


def test_step_errors(key):
    model, optimizer, batch, ts = dropout_setup(key)
    step = nf.train_step(model, nf.softmax_cross_entropy, optimizer)
    with pytest.raises(TypeError, match=r"keys 'x' \(inputs\) and 'y'.*\['x'\]"):
        step(ts, {"x": batch["x"]})
    with pytest.raises(TypeError, match="batch dict.*tuple"):
        nf.eval_step(model, nf.mse)(ts, (batch["x"], batch["y"]))
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        nf.train_step(model, "mse", optimizer)
    with pytest.raises(TypeError, match="metric 'acc' must be callable"):
        nf.eval_step(model, nf.mse, {"acc": 1})
    with pytest.raises(ValueError, match="'loss' is reserved"):
        nf.train_step(model, nf.mse, optimizer, {"loss": nf.mse})


def test_first_nonfinite_paths():
    tree = {"a": {"kernel": jnp.ones(3)}, "b": [jnp.zeros(2), jnp.array([0.0, jnp.nan])]}
    assert first_nonfinite(tree) == "b/1"
    assert first_nonfinite({"n": jnp.arange(3), "k": jax.random.key(0)}) is None
    assert first_nonfinite({"x": np.array([np.inf], np.float32)}) == "x"


def test_steps_take_the_mean_of_per_example_losses(key):
    # A per-example loss (optax's own) gives the SGD step of its mean, in NumPy.
    model, lr = nf.Dense(2), 0.1
    ts = nf.TrainState.create(model, optax.sgd(lr), key, jnp.zeros((1, 3)))
    batch = {"x": RNG.normal(size=(8, 3)).astype(np.float32)}
    batch["y"] = RNG.normal(size=(8, 2)).astype(np.float32)
    w, b = np.asarray(ts.params["kernel"]), np.asarray(ts.params["bias"])
    residual = batch["x"] @ w + b - batch["y"]
    per_example = {"abs": lambda o, y: jnp.abs(o - y).sum(-1)}
    step = jax.jit(nf.train_step(model, optax.squared_error, optax.sgd(lr), per_example))
    new, metrics = step(ts, batch)
    np.testing.assert_allclose(metrics["loss"], (residual**2).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["abs"], np.abs(residual).sum(-1).mean(), rtol=1e-5)
    scale = 2.0 / residual.size
    np.testing.assert_allclose(
        new.params["kernel"], w - lr * scale * batch["x"].T @ residual, rtol=1e-5, atol=1e-6
    )
    evaluated = jax.jit(nf.eval_step(model, optax.squared_error, per_example))(ts, batch)
    np.testing.assert_allclose(evaluated["loss"], (residual**2).mean(), rtol=1e-5)


def masked_mean_dense(params, x):
    """A model of a dict input: the mean of each row's first ``lengths`` steps, then dense."""
    steps = jnp.arange(x["inputs"].shape[1])[None, :] < x["lengths"][:, None]
    total = jnp.sum(jnp.where(steps[..., None], x["inputs"], 0.0), axis=1)
    return total / x["lengths"][:, None] @ params["w"] + params["b"][None, :]


NESTED_MODEL = nf.FunctionLayer(
    lambda key, x: {"w": jax.random.normal(key, (x["inputs"].shape[-1], 3)), "b": jnp.zeros(3)},
    masked_mean_dense,
)


def nested_batch(n=6):
    inputs = RNG.normal(size=(n, 5, 2)).astype(np.float32)
    lengths = RNG.integers(1, 6, size=n).astype(np.int32)
    labels = RNG.integers(0, 3, size=n).astype(np.int32)
    return {"x": {"inputs": inputs, "lengths": lengths}, "y": labels}


def np_masked_mean_logits(params, x):
    steps = np.arange(x["inputs"].shape[1])[None, :] < x["lengths"][:, None]
    means = (x["inputs"] * steps[..., None]).sum(1) / x["lengths"][:, None]
    return means @ np.asarray(params["w"]) + np.asarray(params["b"])


def test_eval_step_of_nested_inputs_equals_numpy(key):
    batch = nested_batch()
    ts = nf.TrainState.create(NESTED_MODEL, optax.sgd(0.1), key, batch["x"])
    evaluate = jax.jit(nf.eval_step(NESTED_MODEL, nf.softmax_cross_entropy, {"acc": nf.accuracy}))
    got = evaluate(ts, batch)
    logits = np_masked_mean_logits(ts.params, batch["x"])
    np.testing.assert_allclose(got["loss"], np_cross_entropy(logits, batch["y"]), rtol=1e-5)
    np.testing.assert_allclose(got["acc"], (logits.argmax(-1) == batch["y"]).mean())


def test_train_state_takes_an_int_seed(key):
    from_seed = nf.TrainState.create(nf.Dense(3), optax.sgd(0.1), 0, jnp.zeros((1, 2)))
    from_key = nf.TrainState.create(nf.Dense(3), optax.sgd(0.1), key, jnp.zeros((1, 2)))
    chex.assert_trees_all_equal(from_seed, from_key)
    numpy_seed = nf.TrainState.create(nf.Dense(3), optax.sgd(0.1), np.int64(0), jnp.zeros((1, 2)))
    chex.assert_trees_all_equal(numpy_seed, from_key)


@pytest.mark.parametrize("bad", ["0", 0.5, True, jnp.zeros(2, jnp.float32)])
def test_train_state_refuses_other_keys(bad):
    with pytest.raises(TypeError, match=r"key must be a PRNG key.*Fix: pass jax\.random\.key"):
        nf.TrainState.create(nf.Dense(3), optax.sgd(0.1), bad, jnp.zeros((1, 2)))


@pytest.mark.parametrize(
    ("optimizer", "match"),
    [
        (optax.adam, r"got the function 'adam'.*call the factory.*optax\.adam\(1e-3\)"),
        (0.01, r"got the number 0\.01\. Fix: pass optax\.adam\(0\.01\)"),
        ("adam", r"got str"),
    ],
)
def test_optimizer_factories_and_numbers_are_refused(optimizer, match, key):
    with pytest.raises(TypeError, match=f"TrainState.create: optimizer must be.*{match}"):
        nf.TrainState.create(nf.Dense(3), optimizer, key, jnp.zeros((1, 2)))
    with pytest.raises(TypeError, match=f"train_step: optimizer must be.*{match}"):
        nf.train_step(nf.Dense(3), nf.mse, optimizer)
