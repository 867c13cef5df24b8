"""Losses and metrics (``nnfun.train._losses``) against NumPy references and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import nnfun as nf
from nnfun import ops, train

RNG = np.random.default_rng(0)
# The fused loss has a custom JVP: forward and reverse mode, to second order (Hessians).
GRAD = dict(order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def np_cross_entropy(logits, labels):
    """Per-example -log softmax(logits)[label], from the formula."""
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]


def sample(shape, seed=0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=shape) * 3).astype(np.float32)
    return logits, rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)


def test_one_function_per_name():
    assert nf.softmax_cross_entropy is train.softmax_cross_entropy
    assert nf.mse is train.mse and nf.accuracy is train.accuracy
    assert not hasattr(ops, "softmax_cross_entropy")


@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 5)])
@pytest.mark.parametrize("jit", [False, True])
def test_softmax_cross_entropy_is_per_example(shape, jit):
    logits, labels = sample(shape)
    fn = jax.jit(nf.softmax_cross_entropy) if jit else nf.softmax_cross_entropy
    loss = fn(logits, labels)
    assert loss.shape == shape[:-1] and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, np_cross_entropy(logits, labels), rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_gradient():
    labels = np.array([0, 4, 2], np.int32)
    with jax.enable_x64(True):
        logits = RNG.normal(size=(3, 5))
        check_grads(lambda z: nf.softmax_cross_entropy(z, labels), (logits,), **GRAD)
        # Closed form: d loss_i / d logits_i = softmax(logits_i) - one_hot(label_i).
        grad = jax.grad(lambda z: nf.softmax_cross_entropy(z, labels).sum())(logits)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        np.testing.assert_allclose(grad, probs - np.eye(5)[labels], atol=1e-12)


def test_softmax_cross_entropy_keeps_the_logits_dtype_in_the_gradient():
    logits = jnp.asarray(sample((4, 3))[0], jnp.bfloat16)
    labels = jnp.array([0, 1, 2, 0])
    assert nf.softmax_cross_entropy(logits, labels).dtype == jnp.float32
    grad = jax.grad(lambda z: nf.softmax_cross_entropy(z, labels).sum())(logits)
    assert grad.dtype == jnp.bfloat16


def test_mse_is_per_element():
    pred, target = RNG.normal(size=(7, 3)), RNG.normal(size=(7, 3))
    errors = nf.mse(pred, target)
    assert errors.shape == (7, 3)
    np.testing.assert_allclose(errors, (pred - target) ** 2, rtol=1e-5)


def test_accuracy_is_per_example():
    logits = RNG.normal(size=(50, 6)).astype(np.float32)
    labels = RNG.integers(0, 6, size=50).astype(np.int32)
    hits = nf.accuracy(logits, labels)
    assert hits.shape == (50,) and hits.dtype == jnp.float32
    np.testing.assert_array_equal(hits, (logits.argmax(-1) == labels).astype(np.float32))


@pytest.mark.parametrize("fn", [nf.softmax_cross_entropy, nf.accuracy])
@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_labels_out_of_range_are_refused_when_concrete(fn, bad):
    labels = np.array([0, bad, 2, bad], np.int32)
    match = rf"{fn.__name__}: labels hold {bad}, outside the valid range \[0, 3\).*Fix: map"
    with pytest.raises(ValueError, match=match):
        fn(np.zeros((4, 3), np.float32), labels)
    with pytest.raises(ValueError, match=match):  # JAX arrays too, when not traced
        fn(jnp.zeros((4, 3)), jnp.asarray(labels))


def test_the_example_from_the_issue():
    # It used to return 0.0134: label -1 trained silently as the last class.
    with pytest.raises(ValueError, match=r"labels hold -1, outside the valid range \[0, 3\)"):
        nf.softmax_cross_entropy(jnp.array([[0.0, 0.0, 5.0]]), jnp.array([-1]))


def test_labels_out_of_range_give_nan_under_jit():
    logits, labels = sample((4, 3))
    labels[1], labels[3] = -1, 3
    ok = np.array([True, False, True, False])
    loss = jax.jit(nf.softmax_cross_entropy)(logits, labels)
    assert np.isnan(loss[~ok]).all()
    np.testing.assert_allclose(loss[ok], np_cross_entropy(logits[ok], labels[ok]), rtol=1e-5)
    # Labels closed over are concrete (and refused); passed as an argument they are traced.
    grad = jax.jit(jax.grad(lambda z, y: nf.softmax_cross_entropy(z, y).sum()))(logits, labels)
    assert np.isnan(grad[~ok]).all()
    probs = np.exp(logits[ok]) / np.exp(logits[ok]).sum(-1, keepdims=True)
    np.testing.assert_allclose(grad[ok], probs - np.eye(3)[labels[ok]], rtol=1e-5, atol=1e-6)
    hits = jax.jit(nf.accuracy)(logits, labels)
    assert np.isnan(hits[~ok]).all()
    np.testing.assert_array_equal(hits[ok], logits[ok].argmax(-1) == labels[ok])


@pytest.mark.parametrize("fn", [nf.softmax_cross_entropy, nf.accuracy, nf.mse])
def test_a_tuple_from_apply_says_to_unpack(fn, key):
    model = nf.Dense(3)
    params, state = model.init(key, jnp.zeros((1, 2)))
    outputs = model.apply(params, state, jnp.ones((4, 2)))  # (y, state), not unpacked
    targets = jnp.zeros((4, 3)) if fn is nf.mse else jnp.zeros(4, jnp.int32)
    with pytest.raises(TypeError, match=r"tuple of 2.*y, state = model\.apply"):
        fn(outputs, targets)
    with pytest.raises(TypeError, match=r"got a dict|is a dict \['a'\]"):
        fn({"a": outputs[0]}, targets)


def test_shape_and_dtype_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"same leading shape.*\(4, 3\).*\(4, 3\)"):
        nf.softmax_cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"same leading shape.*\(2, 3\).*\(3,\)"):
        nf.accuracy(jnp.zeros((2, 3)), jnp.zeros((3,), jnp.int32))
    with pytest.raises(TypeError, match="integer class labels.*astype"):
        nf.softmax_cross_entropy(jnp.zeros((4, 3)), jnp.zeros(4))
    with pytest.raises(TypeError, match="integer class labels.*astype"):
        nf.accuracy(jnp.zeros((4, 3)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"same shape.*y\[:, None\]"):
        nf.mse(jnp.zeros((4, 1)), jnp.zeros(4))


def test_the_mean_is_optax_mean_loss():
    logits, labels = sample((8, 5), seed=3)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    np.testing.assert_allclose(nf.softmax_cross_entropy(logits, labels).mean(), expected, 1e-6)
