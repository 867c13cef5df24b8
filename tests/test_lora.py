"""LoRA adapters (nnfun/core/_lora.py) against the formula W + (alpha/r) A B written in NumPy."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnfun as nf
from nnfun.models.gpt import GPT
from nnfun.testing import check_layer


def mlp():
    return nf.Sequential({"hidden": nf.Dense(8), "act": jax.nn.tanh, "out": nf.Dense(3)})


def randomised(params, key):
    """``params`` with every lora_b drawn at random (a trained adapter is not zero)."""
    flat = nf.flatten_params(params)
    for i, path in enumerate(sorted(p for p in flat if p.endswith("lora_b"))):
        flat[path] = jax.random.normal(jax.random.fold_in(key, i), flat[path].shape)
    return nf.unflatten_params(flat)


def numpy_merged(params, scale):
    """The reference merge: kernel + scale * lora_a @ lora_b per adapted layer, in NumPy."""
    flat = {p: np.asarray(v, np.float64) for p, v in nf.flatten_params(params).items()}
    for path in [p[: -len("/lora_a")] for p in flat if p.endswith("/lora_a")]:
        a, b = flat.pop(f"{path}/lora_a"), flat.pop(f"{path}/lora_b")
        flat[f"{path}/kernel"] = flat[f"{path}/kernel"] + scale * np.matmul(a, b)
    return nf.unflatten_params({p: jnp.asarray(v, jnp.float32) for p, v in flat.items()})


def gpt():
    return GPT(vocab_size=13, d_model=16, num_heads=2, num_layers=2, max_length=8)


def test_adds_adapters_beside_the_matched_kernels_only(key):
    model = mlp()
    params, _ = model.init(key, jnp.zeros((1, 5)))
    adapted, new = nf.lora(model, params, "hidden", rank=2, alpha=4.0)
    assert adapted.targets == ("hidden",) and adapted.scale == 2.0
    assert new["hidden"]["lora_a"].shape == (5, 2) and new["hidden"]["lora_b"].shape == (2, 8)
    assert not np.any(np.asarray(new["hidden"]["lora_b"]))
    a = np.asarray(new["hidden"]["lora_a"])
    assert 0.2 < a.std() * np.sqrt(5) < 2.0  # std about 1/sqrt(in)
    assert sorted(new["out"]) == ["bias", "kernel"]
    assert "lora_a" not in params["hidden"]  # the input params are left alone


def test_gpt_equals_the_base_model_at_init_and_on_numpy_merged_kernels(key):
    # Through the GPT's Stack; Sequential is covered by the tests on mlp().
    model = gpt()
    ids = jax.random.randint(key, (2, 8), 0, 13)
    params, state = model.init(key, ids)
    adapted, new = nf.lora(
        model, params, ["blocks/*/attention/*", "**/mlp/hidden"], rank=3, alpha=6.0
    )
    assert len(adapted.targets) == 5
    run, run_base = jax.jit(adapted.apply), jax.jit(model.apply)
    chex.assert_trees_all_equal(run(new, state, ids)[0], run_base(params, state, ids)[0])
    new = randomised(new, jax.random.key(1))
    reference = numpy_merged(new, scale=2.0)
    y = run(new, state, ids)[0]
    chex.assert_trees_all_close(y, run_base(reference, state, ids)[0], rtol=1e-5, atol=1e-5)
    merged_model, merged = adapted.merge(new)
    assert merged_model == model
    chex.assert_trees_all_close(merged, reference, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_equal_shapes(adapted.init_cache(new, 2), model.init_cache(params, 2))


def test_stack_gives_each_copy_its_own_adapter_and_exact_gradients(key):
    model = nf.Stack(3, nf.Residual(nf.Sequential([nf.Dense(4), jax.nn.tanh])))
    with jax.enable_x64(True):
        x = jax.random.normal(key, (2, 4), jnp.float64)
        params, state = model.init(key, x)
        adapted, new = nf.lora(model, params, "layer/layer/0", rank=2, alpha=2.0)
        assert new["layer"]["layer"]["0"]["lora_a"].shape == (3, 4, 2)
        new = jax.tree.map(lambda a: a.astype(jnp.float64), randomised(new, jax.random.key(2)))
        p = {k: np.asarray(v) for k, v in new["layer"]["layer"]["0"].items()}
        h = np.asarray(x)
        for i in range(3):  # the three residual copies, each with its own W + A B
            w = p["kernel"][i] + p["lora_a"][i] @ p["lora_b"][i]
            h = h + np.tanh(h @ w + p["bias"][i])

        @jax.jit
        def run(a, b):
            inner = {**new["layer"]["layer"]["0"], "lora_a": a, "lora_b": b}
            return adapted.apply({"layer": {"layer": {"0": inner}}}, state, x)[0]

        np.testing.assert_allclose(run(p["lora_a"], p["lora_b"]), h, rtol=1e-10)
        jax.test_util.check_grads(
            lambda a, b: jnp.sum(jnp.sin(run(a, b))),
            (p["lora_a"], p["lora_b"]),
            order=1,
            modes=["rev"],
        )


def test_adapter_gradients_follow_the_formula(key):
    # y = x (W + s A B) + b, L = sum(g * y): dL/dA = s x^T g B^T, dL/dB = s A^T x^T g.
    model = nf.Sequential({"out": nf.Dense(6)})
    x = jax.random.normal(key, (7, 5))
    g = jax.random.normal(jax.random.key(3), (7, 6))
    params, state = model.init(key, x)
    adapted, new = nf.lora(model, params, "out", rank=2, alpha=3.0)
    new = randomised(new, jax.random.key(4))
    grads = jax.grad(lambda p: jnp.sum(g * adapted.apply(p, state, x)[0]))(new)["out"]
    a, b = (np.asarray(new["out"][k], np.float64) for k in ("lora_a", "lora_b"))
    xg = np.asarray(x, np.float64).T @ np.asarray(g, np.float64)
    np.testing.assert_allclose(grads["lora_a"], 1.5 * xg @ b.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads["lora_b"], 1.5 * a.T @ xg, rtol=1e-5, atol=1e-5)


def test_training_with_the_labels_changes_only_the_adapters(key):
    block = nf.Residual(nf.Sequential({"up": nf.Dense(8), "act": jax.nn.gelu, "down": nf.Dense(4)}))
    model = nf.Sequential({"blocks": nf.Stack(2, block), "head": nf.Dense(3)})
    x = jax.random.normal(key, (16, 4))
    y = jax.random.randint(jax.random.key(1), (16,), 0, 3)
    params, state = model.init(key, x)
    adapted, new = nf.lora(model, params, ["blocks/**/up", "head"], rank=2)
    optimizer = optax.multi_transform(
        {"adapter": optax.adam(1e-2), "frozen": optax.set_to_zero()}, adapted.labels
    )
    start = nf.TrainState.create(adapted, optimizer, key, x).replace(
        params=new, opt_state=optimizer.init(new)
    )
    step = jax.jit(nf.train_step(adapted, nf.softmax_cross_entropy, optimizer))
    ts, losses = start, []
    for _ in range(5):
        ts, metrics = step(ts, {"x": x, "y": y})
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    flat_before, flat_after = nf.flatten_params(new), nf.flatten_params(ts.params)
    assert sum("/lora_" in p for p in flat_before) == 4
    for path, before in flat_before.items():
        if "/lora_" in path:
            assert not np.array_equal(flat_after[path], before), path
        else:
            np.testing.assert_array_equal(flat_after[path], before, err_msg=path)


def test_bfloat16_kernels_keep_their_dtype_and_float32_adapters(key):
    model = mlp()
    params, state = model.init(key, jnp.zeros((1, 5)))
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    adapted, new = nf.lora(model, params, "out", rank=2)
    assert new["out"]["lora_a"].dtype == jnp.float32
    new = randomised(new, jax.random.key(6))
    _, merged = adapted.merge(new)
    assert merged["out"]["kernel"].dtype == jnp.bfloat16
    reference = numpy_merged(new, scale=adapted.scale)["out"]["kernel"]  # float32
    np.testing.assert_allclose(np.float32(merged["out"]["kernel"]), reference, rtol=1e-2, atol=1e-2)


def test_lora_passes_check_layer(key):
    # jit vs eager, vmap, float64 gradients against finite differences, bfloat16, round trip
    model = nf.LoRA(nf.Sequential([nf.Dense(4), jax.nn.tanh, nf.Dense(3)]), ("0", "2"), rank=2)
    check_layer(model, jax.random.normal(key, (3, 5)))


def test_labels_mark_only_the_adapters(key):
    model = mlp()
    params, _ = model.init(key, jnp.zeros((1, 5)))
    adapted, new = nf.lora(model, params, ["hidden", "out"], rank=1)
    labels = nf.flatten_params(adapted.labels(new))
    assert {p for p, v in labels.items() if v == "adapter"} == {
        f"{layer}/lora_{ab}" for layer in ("hidden", "out") for ab in "ab"
    }
    assert set(labels.values()) == {"adapter", "frozen"}


def test_init_from_scratch_and_config_round_trip(key):
    model = nf.LoRA(mlp(), ("hidden", "out"), rank=2, alpha=1.0)
    params, _ = model.init(key, jnp.zeros((1, 5)))
    assert params["out"]["lora_b"].shape == (2, 3)
    assert nf.from_config(json.loads(json.dumps(nf.to_config(model)))) == model


# Bad input: each error names the function or layer, what was expected and what came.


def test_a_rule_matching_nothing_lists_the_dense_layers(key):
    params, _ = gpt().init(key, jnp.zeros((1, 8), jnp.int32))
    with pytest.raises(
        ValueError,
        match=r"'blocks/\*/attn/\*' matches no dense layer.*"
        r"blocks/layer/attention/query.*blocks/layer/mlp/out",
    ):
        nf.lora(gpt(), params, "blocks/*/attn/*")
    with pytest.raises(ValueError, match="drop '/kernel'"):
        nf.lora(gpt(), params, "**/query/kernel")


def test_bad_arguments_raise(key):
    model = mlp()
    params, _ = model.init(key, jnp.zeros((1, 5)))
    with pytest.raises(TypeError, match="expected an nnfun Layer"):
        nf.lora(lambda x: x, params, "hidden")
    with pytest.raises(TypeError, match="expected the model's params"):
        nf.lora(model, [1, 2], "hidden")
    with pytest.raises(TypeError, match="glob string or a list"):
        nf.lora(model, params, [])
    with pytest.raises(ValueError, match="rank must be a positive int"):
        nf.lora(model, params, "hidden", rank=0)
    with pytest.raises(ValueError, match="alpha must be a positive"):
        nf.lora(model, params, "hidden", alpha=-1.0)
    adapted, new = nf.lora(model, params, "hidden")
    with pytest.raises(ValueError, match=r"already hold adapters at \['hidden'\].*merge"):
        nf.lora(model, new, "out")


def test_params_that_do_not_fit_the_adapters_raise(key):
    model = mlp()
    x = jnp.zeros((1, 5))
    params, state = model.init(key, x)
    adapted, new = nf.lora(model, params, "hidden", rank=2)
    with pytest.raises(
        nf.LayerError,
        match=r"needs lora_a \(5, 4\) and lora_b \(4, 8\), got "
        r"\(5, 2\) and \(2, 8\)",
    ):
        nf.LoRA(model, ("hidden",), rank=4).apply(new, state, x)
    with pytest.raises(nf.LayerError, match="expected params at 'hidden' with kernel, lora_a"):
        adapted.apply(params, state, x)
    with pytest.raises(nf.LayerError, match=r"adapters at \['hidden'\], which are not among"):
        nf.LoRA(model, ("out",), rank=2).apply(new, state, x)
    with pytest.raises(nf.LayerError, match=r"targets \['act'\] are not dense layers"):
        nf.LoRA(model, ("act",)).init(key, x)
    with pytest.raises(nf.LayerError, match="Sequential has no init_cache"):
        adapted.init_cache(new, 1)
