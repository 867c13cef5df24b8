# %% [markdown]
# # Your own layers, frozen subtrees and LoRA adapters
#
# A layer in nnfun is a frozen dataclass with two pure methods, `init` and `apply`.
# This notebook writes one as a subclass and one as a pair of functions, runs both
# through the conformance checks that every built-in layer passes, then uses
# parameter labels to train only part of a model: first a frozen encoder, then a
# low-rank (LoRA) adapters on top of frozen dense layers, with `nf.lora`.

# %%
import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnfun as nf
import nnfun.data as nd
from nnfun.core import layer_error
from nnfun.testing import check_layer
from nnfun.train import TrainState, accuracy, fit, softmax_cross_entropy

train, test = nd.mnist1d(seed=0)
x_spec = jax.ShapeDtypeStruct((1, 40), jnp.float32)

# %% [markdown]
# ## A layer as a subclass
#
# A gated linear unit, `(x W + b) * sigmoid(x V + c)`. Fields are the
# hyperparameters; subclasses of `nf.Layer` become frozen dataclasses on their own,
# so there is no decorator. Hyperparameters are checked in `__post_init__` and bad
# inputs raise `layer_error`, which prefixes the layer's path in the model.

# %%
class GatedLinear(nf.Layer):
    """``(x @ value + value_bias) * sigmoid(x @ gate + gate_bias)``: ``(n, d) -> (n, features)``."""

    features: int

    def __post_init__(self):
        if self.features < 1:
            raise ValueError(f"features must be positive, got {self.features}")

    def init(self, key, x):
        if len(x.shape) != 2:
            raise layer_error(self, f"expected (batch, features), got {x.shape}")
        value_key, gate_key = jax.random.split(key)
        init = jax.nn.initializers.lecun_normal()
        shape = (x.shape[-1], self.features)
        params = {
            "value": init(value_key, shape), "value_bias": jnp.zeros(self.features),
            "gate": init(gate_key, shape), "gate_bias": jnp.zeros(self.features),
        }
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        value = x @ params["value"] + params["value_bias"][None, :]
        gate = x @ params["gate"] + params["gate_bias"][None, :]
        return value * jax.nn.sigmoid(gate), state


layer = GatedLinear(8)
print(layer, "hashable:", hash(layer) == hash(GatedLinear(8)))
check_layer(layer, jax.random.normal(jax.random.key(1), (4, 5)))
print("GatedLinear passes check_layer")

# %% [markdown]
# `check_layer` runs what the test suite runs on every built-in layer: declared
# output shapes equal actual ones, `jit` equals eager, `vmap` equals a loop,
# gradients (parameters and input) agree with finite differences in float64, the
# same key gives the same result, and bfloat16 stays close to float32.
#
# Errors name the layer's place in the model:

# %%
try:
    nf.Sequential({"block": GatedLinear(8)}).init(jax.random.key(0), jnp.zeros((2, 3, 5)))
except nf.LayerError as error:
    print(error)

# %% [markdown]
# ## A layer as a pair of pure functions
#
# When a layer has no hyperparameters worth a class, `nf.FunctionLayer` wraps
# `init_fn(key, x_spec) -> params` and `apply_fn(params, x) -> y`. Here: Swish with a
# learnable slope per feature, `x * sigmoid(beta * x)`.

# %%
def swish_init(key, x):
    return {"beta": jnp.ones(x.shape[-1:])}


def swish_apply(params, x):
    return x * jax.nn.sigmoid(params["beta"][None, :] * x)


LearnedSwish = nf.FunctionLayer(swish_init, swish_apply)
check_layer(LearnedSwish, jax.random.normal(jax.random.key(2), (4, 5)))
print("LearnedSwish passes check_layer")

# %% [markdown]
# Both compose with everything else. A short run shows they train:

# %%
model = nf.Sequential([GatedLinear(128), LearnedSwish, nf.Dense(10)])
_, history = fit(model, softmax_cross_entropy, optax.adam(1e-3), train, steps=600,
                 batch_size=100, metrics={"accuracy": accuracy}, eval_data=test,
                 eval_every=600, steps_per_call=100, progress=False)
print(f"test accuracy after 600 steps: {history['eval']['accuracy'][-1]:.3f}")

# %% [markdown]
# ## Freezing a subtree with labels
#
# Children named with a dict give readable parameter paths (`encoder/0/kernel`).
# `nf.labels(params, rules)` maps each path to the value of the first matching glob,
# which is exactly what `optax.multi_transform` wants. We pre-train a whole MLP,
# then put a fresh head on it and train only the head, with the encoder frozen
# (`optax.set_to_zero()` gives it zero updates).

# %%
mlp = nf.Sequential({
    "encoder": nf.Sequential([nf.Dense(128), jax.nn.relu, nf.Dense(128), jax.nn.relu]),
    "head": nf.Dense(10),
})
pretrained, _ = fit(mlp, softmax_cross_entropy, optax.adam(1e-3), train, steps=1500,
                    batch_size=100, steps_per_call=100, progress=False)
print(list(nf.flatten_params(pretrained.params)))

# %%
def freeze_encoder(params):
    return nf.labels(params, {"encoder/**": "frozen"}, default="trainable")


optimizer = optax.multi_transform(
    {"trainable": optax.adam(1e-3), "frozen": optax.set_to_zero()}, freeze_encoder
)
fresh_head, _ = mlp.init(jax.random.key(7), x_spec)
params = {"encoder": pretrained.params["encoder"], "head": fresh_head["head"]}
start = TrainState.create(mlp, optimizer, jax.random.key(0), x_spec)
start = start.replace(params=params, opt_state=optimizer.init(params))
encoder_before = jax.device_get(params["encoder"])

probe, history = fit(mlp, softmax_cross_entropy, optimizer, train, steps=600, batch_size=100,
                     train_state=start, metrics={"accuracy": accuracy}, eval_data=test,
                     eval_every=600, steps_per_call=100, progress=False)
print(f"head-only training, test accuracy: {history['eval']['accuracy'][-1]:.3f}")

# %%
unchanged = jax.tree.map(np.array_equal, encoder_before, jax.device_get(probe.params["encoder"]))
print("encoder unchanged, leaf by leaf:", unchanged)
assert all(jax.tree.leaves(unchanged))

# %% [markdown]
# The same helper gives `optax.masked` its booleans, for example no weight decay on
# biases: `optax.adamw(1e-3, mask=lambda p: nf.labels(p, {"**/bias": False}, default=True))`.
#
# ## LoRA adapters on the dense layers
#
# [LoRA](https://arxiv.org/abs/2106.09685) fine-tunes a frozen weight matrix `W` by
# learning a low-rank correction: the layer uses `W + (alpha / r) A B` with `A` of
# shape `(in, r)` and `B` of shape `(r, out)`. `B` starts at zero, so before
# training the adapted model computes exactly what the base model did.
# `nf.lora(model, params, rules)` adds `lora_a` and `lora_b` beside the kernels of
# the dense layers whose parameter path matches the glob rules, and returns a
# `nf.LoRA` model that applies them. A rule that matches nothing lists the paths:

# %%
try:
    nf.lora(mlp, pretrained.params, "encoder/*/dense")
except ValueError as error:
    print(error)

# %%
lora_mlp, lora_params = nf.lora(mlp, pretrained.params, ["encoder/*", "head"], rank=4,
                                alpha=8.0, key=11)
print(lora_mlp.targets)
print({path: leaf.shape for path, leaf in nf.flatten_params(lora_params).items()
       if path.startswith("head")})
print({path: label for path, label in nf.flatten_params(lora_mlp.labels(lora_params)).items()
       if path.startswith("head")})

# %% [markdown]
# A new task for the pre-trained MLP: the same signals played backwards. The
# pre-trained model does poorly on them; the adapters should recover much of that
# while the base weights stay exactly as they were. `lora_mlp.labels` marks the
# adapters `"adapter"` and everything else `"frozen"`, for `optax.multi_transform`.

# %%
def reverse(split):
    return {"x": np.ascontiguousarray(split["x"][:, ::-1]), "y": split["y"]}


train_rev, test_rev = reverse(train), reverse(test)


def test_accuracy(model, params, split):
    logits, _ = jax.jit(model.apply)(params, {}, split["x"])
    return float(accuracy(logits, split["y"]).mean())


same = test_accuracy(lora_mlp, lora_params, test) == test_accuracy(mlp, pretrained.params, test)
print("adapter at init changes nothing:", same)
before = test_accuracy(lora_mlp, lora_params, test_rev)
print(f"pre-trained model on reversed signals: {before:.3f}")

# %%
optimizer = optax.multi_transform(
    {"adapter": optax.adam(3e-3), "frozen": optax.set_to_zero()}, lora_mlp.labels
)
start = TrainState.create(lora_mlp, optimizer, jax.random.key(0), x_spec)
start = start.replace(params=lora_params, opt_state=optimizer.init(lora_params))
tuned, history = fit(lora_mlp, softmax_cross_entropy, optimizer, train_rev, steps=1500,
                     batch_size=100, train_state=start, steps_per_call=100, progress=False)
after = test_accuracy(lora_mlp, tuned.params, test_rev)
print(f"after LoRA fine-tuning: {after:.3f}")

# %% [markdown]
# Only the adapter matrices were trained, a small fraction of the model. `merge`
# folds them into the kernels and gives back the plain MLP with plain parameters,
# which compute the same outputs:

# %%
trainable = sum(
    leaf.size for path, leaf in nf.flatten_params(tuned.params).items() if "lora_" in path
)
print(f"trainable {trainable:,} of {nf.count_params(tuned.params):,} parameters")

base_before = {p: v for p, v in nf.flatten_params(lora_params).items() if "lora_" not in p}
base_after = {p: v for p, v in nf.flatten_params(tuned.params).items() if "lora_" not in p}
base_unchanged = all(np.array_equal(base_before[p], base_after[p]) for p in base_before)
first, last = history["train"]["loss"][:100].mean(), history["train"]["loss"][-100:].mean()
print(f"base unchanged: {base_unchanged}; training loss {first:.3f} -> {last:.3f}")

plain_model, plain_params = lora_mlp.merge(tuned.params)
print(plain_model == mlp, sorted(plain_params["head"]))
merged_accuracy = test_accuracy(plain_model, plain_params, test_rev)
print(f"merged model on reversed signals: {merged_accuracy:.3f}")

# %%
assert base_unchanged
assert same
assert last < 0.7 * first
assert after > before + 0.1, (before, after)
assert plain_model == mlp and abs(merged_accuracy - after) < 0.01, (merged_accuracy, after)
