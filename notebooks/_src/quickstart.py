# %% [markdown]
# # Quickstart: an MLP on MNIST-1D
#
# This notebook builds a small multilayer perceptron, looks at it with `nf.summary`,
# trains it with `fit` and evaluates it on held-out data. It runs on a laptop CPU in
# under a minute.
#
# [MNIST-1D](https://github.com/greydanus/mnist1d) is a 1-D stand-in for MNIST: each
# example is a signal of 40 numbers drawn from one of ten digit-like templates, then
# shifted, scaled, sheared and made noisy. It is small enough to train on a CPU and
# hard enough that architectures differ (the paper reports about 68% test accuracy
# for an MLP and 94% for a CNN). `nnfun.data.mnist1d` generates it locally with the
# `mnist1d` package; nothing is downloaded.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import nnfun as nf
import nnfun.data as nd
from nnfun.train import accuracy, fit, softmax_cross_entropy

train, test = nd.mnist1d(seed=0)
print({name: (array.shape, array.dtype) for name, array in train.items()})

# %% [markdown]
# ## Build and inspect
#
# A model is a description only: a frozen dataclass of hyperparameters. Plain
# functions such as `jax.nn.relu` are layers too. `nf.summary` traces the model on an
# input *spec* (no data, no FLOPs spent) and lists every layer with its output shape,
# parameter count and the FLOPs XLA estimates for one example.

# %%
model = nf.Sequential([
    nf.Dense(256), jax.nn.relu,
    nf.Dense(256), jax.nn.relu,
    nf.Dense(10),
])
print(nf.summary(model, jax.ShapeDtypeStruct((1, 40), jnp.float32)))

# %% [markdown]
# `init` returns the parameters as nested dicts with readable keys; they belong to
# you, and every `jax` transformation works on them directly.

# %%
params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 40), jnp.float32))
print(jax.tree.map(jnp.shape, params))

# %% [markdown]
# ## Train
#
# `fit` takes the model, a loss `fn(outputs, targets)`, any optax optimizer and the
# data as a dict of arrays. `steps_per_call=100` fuses 100 optimizer steps into one
# compiled `lax.scan`, so Python dispatch is paid once per 100 steps. The test set is
# evaluated every 500 steps.

# %%
train_state, history = fit(
    model,
    softmax_cross_entropy,
    optax.adam(1e-3),
    train,
    steps=3000,
    batch_size=100,
    metrics={"accuracy": accuracy},
    eval_data=test,
    eval_every=500,
    steps_per_call=100,
)
print(f"test accuracy: {history['eval']['accuracy'][-1]:.3f}")

# %% [markdown]
# ## Loss curve
#
# `history["train"]` holds the training loss of every step (measured on the batch
# before the update); `history["eval"]` holds the evaluations. The MLP memorises its
# 4000 training signals: the training loss falls towards zero while the test loss
# turns upward after about 1000 steps (test accuracy holds steady meanwhile).

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(history["train"]["step"], history["train"]["loss"], lw=0.5, alpha=0.5,
        label="train (per step)")
ax.plot(history["eval"]["step"], history["eval"]["loss"], "o-", label="test")
ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="MLP on MNIST-1D")
ax.legend()
plt.show()

# %% [markdown]
# ## Evaluate: a confusion matrix
#
# `apply` is a pure function of the parameters, so predicting is one jitted call.
# `train=False` is the default.

# %%
@jax.jit
def predict(params, state, x):
    logits, _ = model.apply(params, state, x)
    return jnp.argmax(logits, axis=-1)


predicted = np.asarray(predict(train_state.params, train_state.state, test["x"]))
confusion = np.zeros((10, 10), np.int64)
np.add.at(confusion, (test["y"], predicted), 1)
test_accuracy = np.trace(confusion) / confusion.sum()

fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.imshow(confusion, cmap="Blues")
for (row, col), count in np.ndenumerate(confusion):
    ax.text(col, row, count, ha="center", va="center", fontsize=7)
ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
       title=f"test accuracy {test_accuracy:.1%}")
plt.show()

# %% [markdown]
# The MNIST-1D paper reports 68% for its MLP; this plain one lands a few points
# below that on this seed of the data after 3000 steps. The MLP recipe in
# `nnfun.models.mnist1d` (a residual block, dropout and a cosine learning-rate decay
# against the overfitting seen above) reaches about 73%, and a convolution, which
# shares weights across positions, about 95%: see `mnist1d_benchmark.ipynb`.
#
# The last cell checks the result, so that running this notebook in the test suite
# verifies it. 0.60 sits a few points below the 0.65 we measured.

# %%
assert test_accuracy > 0.60, test_accuracy
assert history["train"]["loss"][-100:].mean() < 0.1 * history["train"]["loss"][:100].mean()
