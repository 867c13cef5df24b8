"""The layer contract: hashable layers, init/apply, paths, keys, errors, combinators."""

import json
import pickle
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.core._layer import child_key


def mlp():
    return nf.Sequential(
        {"encoder": nf.Sequential([nf.Dense(8), jax.nn.relu, nf.Dropout(0.5)]), "head": nf.Dense(3)}
    )


def test_layers_are_hashable_frozen_and_static_for_jit(key):
    model = mlp()
    assert hash(model) == hash(mlp()) and model == mlp()
    with pytest.raises(AttributeError):
        model.layers = ()
    params, state = model.init(key, jnp.zeros((1, 4)))
    apply = jax.jit(lambda m, p, x: m.apply(p, {}, x)[0], static_argnums=0)
    assert apply(model, params, jnp.ones((2, 4))).shape == (2, 3)


def test_params_are_readable_nested_dicts(key):
    params, state = mlp().init(key, jax.ShapeDtypeStruct((1, 4), jnp.float32))
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {
        "encoder": {"0": {"kernel": (4, 8), "bias": (8,)}},
        "head": {"kernel": (8, 3), "bias": (3,)},
    }
    assert state == {}


def test_init_accepts_array_or_spec_and_gives_the_same_params(key):
    a, _ = mlp().init(key, jnp.zeros((5, 4)))
    b, _ = mlp().init(key, jax.ShapeDtypeStruct((1, 4), jnp.float32))
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_init_shapes_is_abstract(key):
    params, _ = nf.init_shapes(mlp(), jax.ShapeDtypeStruct((1, 4), jnp.float32))
    leaves = jax.tree.leaves(params)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    assert nf.count_params(params) == 4 * 8 + 8 + 8 * 3 + 3


def test_child_key_is_fold_in_of_crc32_of_name(key):
    expected = jax.random.fold_in(key, zlib.crc32(b"encoder"))
    np.testing.assert_array_equal(
        jax.random.key_data(child_key(key, "encoder")), jax.random.key_data(expected)
    )
    assert child_key(None, "x") is None


def test_adding_a_layer_does_not_change_the_others(key):
    small = nf.Sequential({"a": nf.Dense(4), "b": nf.Dense(2)})
    big = nf.Sequential({"a": nf.Dense(4), "extra": nf.Dense(4), "b": nf.Dense(2)})
    p_small, _ = small.init(key, jnp.zeros((1, 3)))
    p_big, _ = big.init(key, jnp.zeros((1, 3)))
    np.testing.assert_array_equal(p_small["a"]["kernel"], p_big["a"]["kernel"])
    np.testing.assert_array_equal(p_small["b"]["kernel"], p_big["b"]["kernel"])


def test_dropout_masks_depend_on_path_not_position(key):
    x = jnp.ones((4, 16))
    one = nf.Sequential({"drop": nf.Dropout(0.5)})
    two = nf.Sequential({"first": nf.Dropout(0.0), "drop": nf.Dropout(0.5)})
    y1, _ = one.apply({}, {}, x, key=key, train=True)
    y2, _ = two.apply({}, {}, x, key=key, train=True)
    np.testing.assert_array_equal(y1, y2)


def test_sequential_forward_matches_numpy(key):
    model = nf.Sequential([nf.Dense(5), jax.nn.tanh, nf.Dense(2)])
    params, state = model.init(key, jnp.zeros((1, 3)))
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    p = jax.tree.map(np.asarray, params)
    h = np.tanh(x @ p["0"]["kernel"] + p["0"]["bias"])
    expected = h @ p["2"]["kernel"] + p["2"]["bias"]
    y, _ = model.apply(params, state, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_plain_functions_become_layers():
    model = nf.Sequential([jax.nn.relu, jnp.square])
    assert model.layers[0][1] == nf.Activation("relu")
    assert model.layers[1][1] == nf.Lambda(jnp.square)
    y, _ = model.apply({}, {}, jnp.array([-2.0, 3.0]))
    np.testing.assert_array_equal(y, [0.0, 9.0])


@pytest.mark.parametrize("name", nf.ACTIVATIONS)
def test_every_activation_matches_jax_nn(name):
    x = jnp.linspace(-3.0, 3.0, 12).reshape(3, 4)
    y, _ = nf.Activation(name).apply({}, {}, x)
    np.testing.assert_allclose(y, getattr(jax.nn, name)(x), rtol=1e-6)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'rleu'.*relu"):
        nf.Activation("rleu")


def test_parallel_applies_each_child_to_its_input(key):
    model = nf.Parallel({"a": nf.Dense(2), "b": jax.nn.relu})
    xs = (jnp.ones((3, 4)), -jnp.ones((3, 5)))
    params, state = model.init(key, xs)
    (ya, yb), _ = model.apply(params, state, xs)
    p = jax.tree.map(np.asarray, params["a"])
    np.testing.assert_allclose(ya, np.ones((3, 4)) @ p["kernel"] + p["bias"], rtol=1e-6)
    np.testing.assert_array_equal(yb, np.zeros((3, 5)))
    with pytest.raises(nf.LayerError, match="expected a tuple of 2 inputs"):
        model.init(key, jnp.ones((3, 4)))


@pytest.mark.parametrize("merge", ["sum", "concat", "tuple"])
def test_branch_merges(key, merge):
    model = nf.Branch([nf.Dense(3), nf.Dense(3)], merge=merge)
    x = jnp.ones((2, 4))
    params, state = model.init(key, x)
    y, _ = model.apply(params, state, x)
    p = jax.tree.map(np.asarray, params)
    outs = [np.ones((2, 4)) @ p[i]["kernel"] + p[i]["bias"] for i in ("0", "1")]
    expected = {"sum": outs[0] + outs[1], "concat": np.concatenate(outs, -1), "tuple": tuple(outs)}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), y, expected[merge])


def test_branch_rejects_bad_merge(key):
    with pytest.raises(ValueError, match="merge must be one of"):
        nf.Branch([nf.Dense(3)], merge="mean")
    model = nf.Branch([nf.Dense(3), nf.Dense(4)], merge="sum")
    with pytest.raises(nf.LayerError, match=r"Branch at '<root>'.*equal output shapes"):
        model.init(key, jnp.ones((2, 4)))


def test_residual_adds_input(key):
    model = nf.Residual(nf.Dense(4))
    x = jnp.arange(8.0).reshape(2, 4)
    params, state = model.init(key, x)
    y, _ = model.apply(params, state, x)
    p, x = jax.tree.map(np.asarray, params["layer"]), np.asarray(x)
    np.testing.assert_allclose(y, x + (x @ p["kernel"] + p["bias"]), rtol=1e-5)


def test_residual_shape_error_names_path_and_fix(key):
    model = nf.Sequential({"block": nf.Residual(nf.Dense(5))})
    with pytest.raises(nf.LayerError, match=r"Residual at 'block'.*\(2, 4\).*\(2, 5\).*width 4"):
        model.init(key, jnp.ones((2, 4)))


def test_shape_error_at_apply_names_nested_path(key):
    model = mlp()
    params, state = model.init(key, jnp.ones((1, 4)))
    with pytest.raises(nf.LayerError, match=r"Dense at 'encoder/0'.*\(3, 7\)"):
        model.apply(params, state, jnp.ones((3, 7)))


def test_foreign_errors_keep_their_type_and_gain_the_path(key):
    model = nf.Sequential({"outer": nf.Sequential({"bad": nf.Lambda(lambda x: x @ x)})})
    with pytest.raises(TypeError) as info:
        model.init(key, jnp.ones((2, 3)))
    assert not isinstance(info.value, nf.LayerError)
    # One note, from the innermost layer, naming the full path (JAX may add its own).
    ours = [n for n in info.value.__notes__ if "nnfun layer" in n]
    assert ours == ["(raised in the nnfun layer at 'outer/bad')"]

    def concretize(x):
        return x if float(x.sum()) > 0 else -x  # Python control flow on a traced value

    model = nf.Sequential({"block": nf.Lambda(concretize)})
    with pytest.raises(jax.errors.ConcretizationTypeError) as info:
        model.init(key, jnp.ones((2, 3)))  # init finds the output shape abstractly
    assert "(raised in the nnfun layer at 'block')" in info.value.__notes__


def test_train_without_key_says_how_to_pass_one(key):
    model = mlp()
    params, state = model.init(key, jnp.ones((1, 4)))
    with pytest.raises(nf.LayerError, match=r"Dropout at 'encoder/2'.*key=jax.random.key"):
        model.apply(params, state, jnp.ones((2, 4)), train=True)
    y, _ = model.apply(params, state, jnp.ones((2, 4)))  # evaluation needs no key
    assert y.shape == (2, 3)


def test_child_names_are_validated():
    with pytest.raises(ValueError, match="unique"):
        nf.Sequential([("a", nf.Dense(2)), ("a", nf.Dense(2))])
    with pytest.raises(ValueError, match="free of '/'"):
        nf.Sequential({"a/b": nf.Dense(2)})
    with pytest.raises(TypeError, match="expected a Layer or a callable"):
        nf.Sequential([3])


def test_user_subclass_layer_composes(key):
    class Scale(nf.Layer):
        init_value: float = 2.0

        def init(self, key, x):
            return {"scale": jnp.full(x.shape[-1:], self.init_value)}, {}

        def apply(self, params, state, x, *, key=None, train=False):
            return x * params["scale"][None, :], state

    assert hash(Scale()) == hash(Scale(2.0))
    model = nf.Sequential({"scale": Scale(), "dense": nf.Dense(2)})
    params, state = model.init(key, jnp.ones((1, 3)))
    np.testing.assert_array_equal(params["scale"]["scale"], [2.0, 2.0, 2.0])
    grads = jax.grad(lambda p: model.apply(p, state, jnp.ones((4, 3)))[0].sum())(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_function_layer_passes_key_and_train_when_asked(key):
    def init_fn(key, x):
        return {"w": jnp.ones((x.shape[-1], 2))}

    def apply_fn(params, x, *, key=None, train=False):
        y = x @ params["w"]
        return y + 1.0 if train else y

    layer = nf.FunctionLayer(init_fn, apply_fn)
    params, state = layer.init(key, jnp.ones((1, 3)))
    np.testing.assert_array_equal(layer.apply(params, state, jnp.ones((1, 3)))[0], [[3.0, 3.0]])
    y, _ = layer.apply(params, state, jnp.ones((1, 3)), key=key, train=True)
    np.testing.assert_array_equal(y, [[4.0, 4.0]])


def test_layer_config_round_trips_through_json():
    model = nf.Sequential(
        {
            "body": nf.Branch([nf.Dense(4, kernel_init="he_normal"), nf.Residual(nf.Dense(3))]),
            "act": jax.nn.gelu,
            "fn": nf.Lambda(jnp.square),
            "out": nf.Reshape((2, -1)),
        }
    )
    text = json.dumps(nf.to_config(model))
    assert "pickle" not in text
    assert nf.from_config(json.loads(text)) == model


def test_config_errors_are_clear():
    with pytest.raises(TypeError, match=r"<root>.fn.*cannot write"):
        nf.to_config(nf.Lambda(lambda x: x))
    with pytest.raises(ValueError, match="cannot find layer class 'no_such_module.Thing'"):
        nf.from_config({"__layer__": "no_such_module.Thing", "fields": {}})


def test_layers_pickle_free_but_picklable_configs():
    # Layers are plain dataclasses of settings: pickling them is possible, never required.
    assert pickle.loads(pickle.dumps(nf.Dense(3))) == nf.Dense(3)
