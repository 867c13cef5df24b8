# %% [markdown]
# # Quickstart: an MLP on MNIST-1D
#
# This notebook builds a small multilayer perceptron, looks at it with `nf.summary`,
# trains it with `fit` (logging to a CSV file it plots while training, and stopping
# early when the test loss stops improving) and evaluates it on held-out data. It
# runs on a laptop CPU in under a minute.
#
# [MNIST-1D](https://github.com/greydanus/mnist1d) is a 1-D stand-in for MNIST: each
# example is a signal of 40 numbers drawn from one of ten digit-like templates, then
# shifted, scaled, sheared and made noisy. It is small enough to train on a CPU and
# hard enough that architectures differ (the paper reports about 68% test accuracy
# for an MLP and 94% for a CNN). `nnfun.data.mnist1d` generates it locally with the
# `mnist1d` package; nothing is downloaded.

# %%
import tempfile

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from IPython.display import clear_output, display

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
# ## Train, log, plot while it runs, stop early
#
# `fit` takes the model, a loss `fn(outputs, targets)`, any optax optimizer and the
# data as a dict of arrays. By default (`steps_per_call="auto"`) it times the first
# steps and then fuses several optimizer steps into one compiled `lax.scan`, so
# Python dispatch is paid once per call, not per step.
#
# `loggers=[nf.CSVLogger(logs)]` writes every step's loss, accuracy, learning rate and
# speed to `logs/train.csv` and each evaluation to `logs/eval.csv`, flushed at each
# evaluation; `nf.TensorBoardLogger` writes the same for TensorBoard. Callbacks run
# between compiled calls: the one below re-plots the CSV log at every evaluation, and
# `nf.EarlyStopping` stops once the test loss has not improved for three evaluations
# and hands back the parameters of the best one.

# %%
logs = tempfile.mkdtemp(prefix="quickstart-")


class PlotLog(nf.Callback):
    """Re-draws the loss curves from the CSV files after each evaluation."""

    def on_eval(self, train_state, step, metrics):
        steps = np.genfromtxt(f"{logs}/train.csv", delimiter=",", names=True)
        evals = np.genfromtxt(f"{logs}/eval.csv", delimiter=",", names=True, ndmin=1)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(steps["step"], steps["loss"], lw=0.5, alpha=0.5, label="train (per step)")
        ax.plot(evals["step"], evals["loss"], "o-", label="test")
        ax.set(xlabel="step", ylabel="cross-entropy", yscale="log",
               title=f"MLP on MNIST-1D, step {step}")
        ax.legend()
        clear_output(wait=True)
        display(fig)
        plt.close(fig)


early = nf.EarlyStopping("loss", patience=3)
train_state, history = fit(
    model,
    softmax_cross_entropy,
    optax.adam(1e-3),
    train,
    steps=3000,
    batch_size=100,
    metrics={"accuracy": accuracy},
    eval_data=test,
    eval_every=250,
    loggers=[nf.CSVLogger(logs)],
    callbacks=[PlotLog(), early],
)
print(f"stopped at step {early.stopped_step}; best test loss {early.best:.3f} "
      f"at step {early.best_step}, which train_state holds (step {int(train_state.step)})")

# %% [markdown]
# The MLP memorises its 4000 training signals: the training loss falls towards zero
# while the test loss turns upward after about 1000 steps, so early stopping ends the
# run well before the 3000 steps asked for. `history` holds the same numbers as the
# CSV files (`history["train"]` every step, measured on the batch before the update;
# `history["eval"]` each evaluation).

# %% [markdown]
# ## Evaluate: a confusion matrix
#
# `nf.predict` runs the model (`train=False`) over any number of examples in batches,
# compiled once; `nf.evaluate` gives the example-weighted mean of any metrics.

# %%
logits = nf.predict(model, train_state.params, train_state.state, test["x"], batch_size=500)
predicted = logits.argmax(-1)
print(nf.evaluate(model, train_state.params, train_state.state, test,
                  {"loss": softmax_cross_entropy, "accuracy": accuracy}))
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
# below that on this seed of the data. The MLP recipe in
# `nnfun.models.mnist1d` (a residual block, dropout and a cosine learning-rate decay
# against the overfitting seen above) reaches about 73%, and a convolution, which
# shares weights across positions, about 95%: see `mnist1d_benchmark.ipynb`.
#
# The last cell checks the result, so that running this notebook in the test suite
# verifies it: early stopping ended the run and restored its best evaluation.

# %%
assert early.stopped_step is not None and early.stopped_step < 3000
assert int(train_state.step) == early.best_step
best = int(np.argmin(history["eval"]["loss"]))
assert history["eval"]["step"][best] == early.best_step
assert test_accuracy > 0.55, test_accuracy
