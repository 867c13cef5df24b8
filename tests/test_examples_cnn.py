"""Short runs of the CNN examples: they train end to end and beat chance clearly."""

import jax.numpy as jnp
import pytest

import nnfun as nf
from nnfun.examples import digits, mnist1d
from nnfun.models.mnist1d import RECIPES


def test_mnist1d_cnn_recipe_shapes():
    recipe = RECIPES["cnn"]()
    assert recipe.input_shape == (40, 1)
    params, _ = nf.init_shapes(recipe.model, jnp.zeros((2, 40, 1)))
    # Lengths 40 -> 19 -> 10 -> 5 with kernels 5, 3, 3, stride 2, padding 1: a 125-wide head.
    assert params["out"]["kernel"].shape == (125, 10)
    assert params["conv1"]["kernel"].shape == (5, 1, 25)


@pytest.mark.slow
def test_mnist1d_cnn_short_run():
    args = mnist1d.parse_args(
        [
            "--model",
            "cnn",
            "--steps",
            "100",
            "--eval-every",
            "100",
            "--steps-per-call",
            "1",
            "--no-progress",
        ]
    )
    assert mnist1d.run(args) > 0.3  # chance is 0.1


@pytest.mark.slow
def test_digits_short_run():
    args = digits.parse_args(["--steps", "60", "--no-progress"])
    assert digits.run(args) > 0.6  # chance is 0.1
