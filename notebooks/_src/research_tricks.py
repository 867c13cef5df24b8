# %% [markdown]
# # Research tricks with plain JAX transformations
#
# nnfun's parameters are plain pytrees and `apply` is a pure function, so JAX's own
# transformations do the heavy lifting with nothing of ours in between:
#
# 1. an ensemble of 8 models with BatchNorm, trained together with `jax.vmap` inside
#    one `jax.jit`;
# 2. per-example gradients with `jax.vmap(jax.grad(...))`, checked against a loop;
# 3. forward-mode derivatives (`jax.jvp`) and Hessian-vector products, checked
#    against finite differences and the explicit Hessian.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import nnfun as nf
import nnfun.data as nd
from nnfun.train import TrainState, accuracy, scan_steps, softmax_cross_entropy, train_step

train, test = nd.mnist1d(seed=0)
x_spec = jax.ShapeDtypeStruct((1, 40), jnp.float32)

# %% [markdown]
# ## 1. An ensemble of 8 models in one compiled step
#
# `TrainState.create` is a pure function of a key, so `jax.vmap` over 8 keys builds 8
# independently initialised models whose parameters, BatchNorm statistics and
# optimizer states are stacked on a leading axis. `train_step` gives the update for
# one model; `jax.vmap` turns it into an update of all 8, and `scan_steps` runs 100 of
# those per compiled call. Each member draws its own minibatches (bagging), so the
# batches carry a member axis too: `(steps, members, batch, 40)`.
#
# BatchNorm needs no special handling: under `vmap` each member normalises over its
# own batch and keeps its own running statistics. The dense layers before it have no
# bias, since BatchNorm subtracts the mean and would cancel it: its gradient is zero
# up to round-off, which Adam would rescale into random steps.

# %%
MEMBERS, STEPS, CHUNK, BATCH = 8, 1500, 100, 100
model = nf.Sequential([
    nf.Dense(128, use_bias=False), nf.BatchNorm(), jax.nn.relu,
    nf.Dense(128, use_bias=False), nf.BatchNorm(), jax.nn.relu,
    nf.Dense(10),
])
optimizer = optax.adam(1e-3)

keys = jax.random.split(jax.random.key(0), MEMBERS)
ensemble = jax.jit(jax.vmap(lambda key: TrainState.create(model, optimizer, key, x_spec)))(keys)
initial = ensemble  # arrays are immutable, so this keeps the starting point
print(jax.tree.map(jnp.shape, ensemble.params["0"]), jax.tree.map(jnp.shape, ensemble.state))

step = train_step(model, softmax_cross_entropy, optimizer)
ensemble_steps = jax.jit(scan_steps(jax.vmap(step)))

# %%
rng = np.random.default_rng(0)
losses = []
start = time.perf_counter()
for _ in range(STEPS // CHUNK):
    index = rng.integers(0, len(train["y"]), size=(CHUNK, MEMBERS, BATCH))
    ensemble, metrics = ensemble_steps(ensemble, {"x": train["x"][index], "y": train["y"][index]})
    losses.append(np.asarray(metrics["loss"]))
losses = np.concatenate(losses)  # (steps, members)
print(f"{STEPS} steps of {MEMBERS} models in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# Evaluation is `vmap` of `apply` over the members with `train=False` (running
# statistics). The ensemble predicts with the mean of the members' probabilities.

# %%
@jax.jit
def member_logits(params, state, x):
    run = lambda p, s: model.apply(p, s, x)[0]  # noqa: E731
    return jax.vmap(run)(params, state)  # (members, examples, 10)


logits = member_logits(ensemble.params, ensemble.state, test["x"])
member_accuracy = np.array([accuracy(member, test["y"]).mean() for member in logits])
ensemble_probs = jax.nn.softmax(logits, axis=-1).mean(axis=0)
ensemble_accuracy = float(accuracy(ensemble_probs, test["y"]).mean())
print("members:", np.round(member_accuracy, 3))
print(f"ensemble: {ensemble_accuracy:.3f} (best member {member_accuracy.max():.3f})")

fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(np.arange(1, STEPS + 1), losses, lw=0.4, alpha=0.6)
ax.set(xlabel="step", ylabel="train loss", yscale="log", title="8 members, one compiled step")
plt.show()

# %% [markdown]
# Is the vmapped run really 8 independent trainings? Take the first 100 steps
# again, once for the whole ensemble and once for member 3 alone (its own initial
# state, its own batches), and compare member 3's parameters and BatchNorm
# statistics.

# %%
index = np.random.default_rng(0).integers(0, len(train["y"]), size=(CHUNK, MEMBERS, BATCH))
batches = {"x": train["x"][index], "y": train["y"][index]}
together, _ = ensemble_steps(initial, batches)
alone, _ = jax.jit(scan_steps(step))(
    TrainState.create(model, optimizer, keys[3], x_spec),
    jax.tree.map(lambda leaf: leaf[:, 3], batches),
)
member3 = jax.tree.map(lambda leaf: leaf[3], (together.params, together.state))
difference = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                              member3, (alone.params, alone.state))))
print(f"largest difference between member 3 and a lone run after 100 steps: {difference:.1e}")

# %% [markdown]
# (Not bitwise: a batched matrix product may round differently from a single one.)
#
# ## 2. Per-example gradients
#
# The gradient of each example's loss separately, for example to clip per example
# as in differentially private SGD, or to find the examples that pull hardest. With
# a pure loss function it is `jax.vmap(jax.grad(loss))` over the examples, with the
# parameters shared (`in_axes=None`). We use member 0 in evaluation mode, so each
# example's output does not depend on the rest of the batch.

# %%
params0 = jax.tree.map(lambda leaf: leaf[0], ensemble.params)
state0 = jax.tree.map(lambda leaf: leaf[0], ensemble.state)


def example_loss(params, x, y):
    logits, _ = model.apply(params, state0, x[None, :])
    return softmax_cross_entropy(logits, y[None])[0]  # the one example's loss


per_example = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))
grads = per_example(params0, test["x"][:256], test["y"][:256])
print(jax.tree.map(jnp.shape, grads["0"]))

one_grad = jax.jit(jax.grad(example_loss))
loop = [one_grad(params0, test["x"][i], test["y"][i]) for i in range(16)]
looped = jax.tree.map(lambda *leaves: jnp.stack(leaves), *loop)
batched16 = jax.tree.map(lambda leaf: leaf[:16], grads)
gap = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                       batched16, looped)))
print(f"vmap vs loop, largest difference: {gap:.2e}")

# %% [markdown]
# The average of the per-example gradients is the ordinary batch gradient (the loss
# is a mean), and the per-example norms show how unevenly examples pull:

# %%
batch_grad = jax.grad(
    lambda p: softmax_cross_entropy(model.apply(p, state0, test["x"][:256])[0],
                                    test["y"][:256]).mean()
)(params0)
mean_gap = max(jax.tree.leaves(jax.tree.map(
    lambda g, b: float(jnp.max(jnp.abs(g.mean(axis=0) - b))), grads, batch_grad)))
print(f"mean of per-example gradients vs batch gradient: {mean_gap:.2e}")

norms = np.sqrt(sum(np.sum(np.reshape(leaf, (256, -1)) ** 2, axis=1)
                    for leaf in jax.tree.leaves(grads)))
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(norms, bins=np.geomspace(norms.min(), norms.max(), 40))
ax.set(xlabel="per-example gradient norm", ylabel="examples", xscale="log")
plt.show()

# %% [markdown]
# ## 3. Forward mode and Hessian-vector products
#
# On a small model in float64 we check two derivatives against references that do
# not use the code under test:
#
# - `jax.jvp` gives the directional derivative of the loss along `v` in one forward
#   pass; compare with a central finite difference.
# - The Hessian-vector product `H v` is forward mode over reverse mode,
#   `jax.jvp(jax.grad(loss), (p,), (v,))`, at the cost of a few gradients and without
#   forming `H`; compare with the explicit Hessian from `jax.hessian`.
#
# `ravel_pytree` turns the parameter dict into one flat vector and back, so the
# Hessian is an ordinary matrix.

# %%
with jax.enable_x64(True):
    small = nf.Sequential([nf.Dense(8), jnp.tanh, nf.Dense(10)])
    x64 = jnp.asarray(train["x"][:64], jnp.float64)
    y64 = jnp.asarray(train["y"][:64])
    small_params, _ = small.init(jax.random.key(0), x64)
    flat, unravel = ravel_pytree(jax.tree.map(lambda a: a.astype(jnp.float64), small_params))

    @jax.jit
    def loss(flat_params):
        logits, _ = small.apply(unravel(flat_params), {}, x64)
        return softmax_cross_entropy(logits, y64).mean()

    v = jax.random.normal(jax.random.key(1), flat.shape, jnp.float64)
    _, directional = jax.jit(lambda p, t: jax.jvp(loss, (p,), (t,)))(flat, v)
    eps = 1e-5
    finite = (loss(flat + eps * v) - loss(flat - eps * v)) / (2 * eps)
    print(f"{flat.size} parameters; jvp {float(directional):.10f}, "
          f"finite difference {float(finite):.10f}")

    hvp_fn = jax.jit(lambda u: jax.jvp(jax.grad(loss), (flat,), (u,))[1])
    hvp = hvp_fn(v)
    hessian = jax.jit(jax.hessian(loss))(flat)
    hvp_error = float(jnp.max(jnp.abs(hvp - hessian @ v)) / jnp.max(jnp.abs(hessian @ v)))
    print(f"Hessian {hessian.shape}; relative error of H v: {hvp_error:.1e}")

# %% [markdown]
# A use of the HVP: the Hessian eigenvalue of largest magnitude (a measure of the
# loss's curvature; negative here, as this untrained model sits near a saddle) by
# power iteration, which needs only products `H v`, never `H` itself. The explicit
# Hessian's eigenvalues check the answer.

# %%
with jax.enable_x64(True):
    u = v / jnp.linalg.norm(v)
    for _ in range(200):
        w = hvp_fn(u)
        u = w / jnp.linalg.norm(w)
    power = float(u @ hvp_fn(u))
    eigenvalues = np.linalg.eigvalsh(np.asarray(hessian))
    largest = float(eigenvalues[np.argmax(np.abs(eigenvalues))])
    print(f"power iteration {power:.6f}, eigvalsh {largest:.6f}")

# %%
assert ensemble_accuracy >= member_accuracy.mean(), (ensemble_accuracy, member_accuracy)
assert member_accuracy.min() > 0.5
assert difference < 1e-4, difference
assert gap < 1e-5 and mean_gap < 1e-5, (gap, mean_gap)
assert abs(float(directional) - float(finite)) < 1e-7 * max(1.0, abs(float(finite)))
assert hvp_error < 1e-10
assert abs(power - largest) < 1e-4 * abs(largest), (power, largest)
