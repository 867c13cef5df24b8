"""The MNIST-1D recipes and the ``python -m nnfun.examples.mnist1d`` command line."""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.examples import mnist1d as example
from nnfun.models.mnist1d import RECIPES, Recipe, mlp


def test_help_lists_the_options():
    result = subprocess.run(
        [sys.executable, "-m", "nnfun.examples.mnist1d", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    for option in ("--model", "--steps", "--batch-size", "--lr", "--seed", "--steps-per-call"):
        assert option in result.stdout


@pytest.mark.slow  # generates MNIST-1D (a few seconds) and trains 200 steps
def test_short_run_prints_an_accuracy_line(capsys):
    example.main(["--steps", "200", "--no-progress", "--eval-every", "100"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"test accuracy: (\d+\.\d)% \(model=mlp, seed=0, .* s on \w+\)", line)
    assert match, line
    assert 15.0 < float(match.group(1)) <= 100.0  # well above chance (10%) after 200 steps


def test_unknown_model_is_rejected(capsys):
    with pytest.raises(SystemExit):
        example.parse_args(["--model", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        example.parse_args(["--steps-per-call", "0"])
    assert "argument --steps-per-call: must be positive, got 0" in capsys.readouterr().err


def test_mlp_recipe_is_the_papers_architecture():
    recipe = mlp()
    assert RECIPES["mlp"] is mlp and recipe.input_shape == (40,)
    params, _ = recipe.model.init(jax.random.key(0), jnp.zeros((1, 40)))
    shapes = {path: leaf.shape for path, leaf in nf.flatten_params(params).items()}
    assert shapes == {
        "hidden/kernel": (40, 100),
        "hidden/bias": (100,),
        "block/layer/dense/kernel": (100, 100),
        "block/layer/dense/bias": (100,),
        "out/kernel": (100, 10),
        "out/bias": (10,),
    }
    x = np.random.default_rng(0).normal(size=(3, 40)).astype(np.float32)
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    p = jax.device_get(params)
    h = relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    h = h + relu(h @ p["block"]["layer"]["dense"]["kernel"] + p["block"]["layer"]["dense"]["bias"])
    expected = h @ p["out"]["kernel"] + p["out"]["bias"]
    got, _ = recipe.model.apply(params, {}, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def first_updates(optimizer, count):
    """Adam-family updates for a constant gradient of 1 on a parameter equal to 1."""
    params, grads = {"w": jnp.ones(())}, {"w": jnp.ones(())}
    state, updates = optimizer.init(params), []
    for _ in range(count):
        update, state = optimizer.update(grads, state, params)
        updates.append(float(update["w"]))
    return np.array(updates)


def test_recipe_optimizer_follows_the_schedule():
    # Adam's step on a constant gradient is -lr (bias-corrected m / sqrt(v) = 1), so the
    # updates trace the learning rate: cosine from the peak to 0 over `steps`.
    recipe = Recipe("r", nf.Dense(10), 100, 8, 0.5)
    expected = 0.5 * (1 + np.cos(np.pi * np.arange(10) / 10))
    np.testing.assert_allclose(-first_updates(recipe.optimizer(steps=10, learning_rate=1.0), 10),
                               expected, rtol=1e-4)  # fmt: skip
    # Constant rate 0.5 and decoupled weight decay 0.1 on w = 1: -0.5 * (1 + 0.1).
    constant = Recipe("c", nf.Dense(10), 100, 8, 0.5, schedule="constant", weight_decay=0.1)
    np.testing.assert_allclose(first_updates(constant.optimizer(), 3), [-0.55] * 3, rtol=1e-5)


def test_recipe_reshape_and_errors():
    recipe = Recipe("r", nf.Dense(10), 100, 8, 0.5, input_shape=[40, 1])
    assert recipe.input_shape == (40, 1)
    assert recipe.reshape(np.zeros((5, 40))).shape == (5, 40, 1)
    with pytest.raises(ValueError, match="schedule must be 'cosine' or 'constant'"):
        Recipe("bad", nf.Dense(10), 100, 8, 0.5, schedule="linear")
