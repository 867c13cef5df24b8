# %% [markdown]
# # MNIST-1D: MLP, CNN and GRU against the paper
#
# The MNIST-1D paper (Greydanus & Kobak, *Scaling down deep learning*, 2020)
# reports test accuracies of about **68%** for an MLP, **94%** for a CNN and **91%**
# for a GRU. Here the three recipes of `nnfun.models.mnist1d.RECIPES` train side by
# side on the same data, and a bar chart puts our numbers next to the paper's.
#
# The data are generated locally with the `mnist1d` package's `make_dataset` and
# its default arguments (4000 training and 1000 test signals of length 40), with
# seed 0 rather than the package's 42. Results vary by a point or two with the seed.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import nnfun as nf
import nnfun.data as nd
from nnfun.models.mnist1d import RECIPES
from nnfun.train import accuracy, fit, softmax_cross_entropy

PAPER = {"mlp": 0.68, "cnn": 0.94, "gru": 0.91}
train, test = nd.mnist1d(seed=0)

# %% [markdown]
# ## The models
#
# Each recipe bundles a model with the optimizer settings it was tuned with and the
# input shape it expects: `(40,)` for the MLP, `(40, 1)` (length, channels) for the
# convolution and the recurrent network.

# %%
recipes = {name: RECIPES[name]() for name in PAPER}
for name, recipe in recipes.items():
    spec = jax.ShapeDtypeStruct((1, *recipe.input_shape), jnp.float32)
    params, _ = nf.init_shapes(recipe.model, spec)  # abstract: no memory, no FLOPs
    print(f"{name}: {nf.count_params(params):,} parameters, {recipe.steps} steps in the "
          f"recipe, batch {recipe.batch_size}, peak learning rate {recipe.learning_rate}")
print(nf.summary(recipes["cnn"].model, jax.ShapeDtypeStruct((1, 40, 1), jnp.float32)))

# %% [markdown]
# ## Training
#
# One `fit` per model, for its recipe's full step count, with the recipe's steps
# per compiled call; the test set is evaluated every 500 steps and at the end.

# %%
results = {}
for name, recipe in recipes.items():
    steps = recipe.steps
    x_train, x_test = recipe.reshape(train["x"]), recipe.reshape(test["x"])
    start = time.perf_counter()
    _, history = fit(
        recipe.model,
        softmax_cross_entropy,
        recipe.optimizer(steps=steps),
        {"x": x_train, "y": train["y"]},
        steps=steps,
        batch_size=recipe.batch_size,
        metrics={"accuracy": accuracy},
        eval_data={"x": x_test, "y": test["y"]},
        eval_every=500,
        steps_per_call=recipe.steps_per_call,
        progress=False,
    )
    seconds = time.perf_counter() - start
    results[name] = {"history": history, "accuracy": float(history["eval"]["accuracy"][-1])}
    print(f"{name}: {steps} steps in {seconds:.0f} s, test accuracy "
          f"{results[name]['accuracy']:.1%} (paper {PAPER[name]:.0%})")

# %%
names = list(PAPER)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
positions = np.arange(len(names))
left.bar(positions - 0.2, [100 * results[n]["accuracy"] for n in names], 0.4, label="nnfun")
left.bar(positions + 0.2, [100 * PAPER[n] for n in names], 0.4, label="paper")
for i, name in enumerate(names):
    left.text(i - 0.2, 100 * results[name]["accuracy"] + 1,
              f"{100 * results[name]['accuracy']:.0f}", ha="center")
    left.text(i + 0.2, 100 * PAPER[name] + 1, f"{100 * PAPER[name]:.0f}", ha="center")
left.set(xticks=positions, xticklabels=[n.upper() for n in names], ylim=(0, 110),
         ylabel="test accuracy (%)", title="MNIST-1D: ours vs the paper")
left.legend(loc="upper left")
for name in names:
    evals = results[name]["history"]["eval"]
    right.plot(evals["step"], 100 * evals["accuracy"], "o-", label=name.upper())
right.set(xlabel="step", ylabel="test accuracy (%)", title="during training")
right.legend()
plt.show()

# %% [markdown]
# When this notebook was last run the three reached 72.8% (MLP), 95.8% (CNN) and
# 97.2% (GRU, 58 s for its 2000 steps): each at or above the paper's figure. The differences are
# in the recipes, not in the data: our MLP has a residual block, dropout and a cosine
# learning-rate decay; our CNN is the paper's network plus dropout before the head
# (without it, it overfits and ends near 92-93%); our GRU has a wider state (128) and
# its head reads all 40 outputs. The last cell asserts that no model ends more than
# 3 points below the paper's figure.

# %%
for name in names:
    ours, paper = results[name]["accuracy"], PAPER[name]
    assert ours > paper - 0.03, f"{name}: {ours:.3f} vs paper {paper:.2f}"
