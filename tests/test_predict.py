"""``nf.evaluate`` and ``nf.predict``: NumPy references, one compile for uneven data,
every data form, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun as nf
from nnfun.train._predict import _evaluator, _predictor

RNG = np.random.default_rng(0)
DATA = {
    "x": RNG.normal(size=(10, 4)).astype(np.float32),
    "y": RNG.integers(0, 3, size=10).astype(np.int32),
}
MODEL = nf.Sequential([nf.Dense(6), jax.nn.tanh, nf.Dense(3)])
PARAMS, STATE = MODEL.init(jax.random.key(0), jnp.zeros((1, 4)))
METRICS = {"loss": nf.softmax_cross_entropy, "accuracy": nf.accuracy}


def numpy_logits(x):
    p = jax.device_get(PARAMS)
    hidden = np.tanh(x @ p["0"]["kernel"] + p["0"]["bias"])
    return hidden @ p["2"]["kernel"] + p["2"]["bias"]


def numpy_metrics():
    logits = numpy_logits(DATA["x"].astype(np.float64))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return {
        "loss": -log_probs[np.arange(10), DATA["y"]].mean(),
        "accuracy": (logits.argmax(-1) == DATA["y"]).mean(),
    }


class Source:
    """Random access to single examples."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"x": DATA["x"][i], "y": DATA["y"][i]}


def batches(size):
    for i in range(0, 10, size):
        yield {"x": DATA["x"][i : i + size], "y": DATA["y"][i : i + size]}


@pytest.mark.parametrize("form", ["arrays", "source", "generator"])
def test_evaluate_equals_numpy_on_every_data_form(form):
    data = {"arrays": DATA, "source": Source(), "generator": batches(4)}[form]
    result = nf.evaluate(MODEL, PARAMS, STATE, data, METRICS, batch_size=4)
    expected = numpy_metrics()
    assert set(result) == {"loss", "accuracy"}
    np.testing.assert_allclose(result["loss"], expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], expected["accuracy"], rtol=1e-6)


def test_evaluate_and_predict_compile_once_for_a_padded_last_batch():
    _evaluator.cache_clear()
    _predictor.cache_clear()
    nf.evaluate(MODEL, PARAMS, STATE, DATA, METRICS, batch_size=4)  # batches 4, 4, 2 (padded)
    nf.predict(MODEL, PARAMS, STATE, DATA["x"], batch_size=4)
    assert _evaluator(MODEL, tuple(sorted(METRICS.items())))._cache_size() == 1
    assert _predictor(MODEL)._cache_size() == 1


def test_predict_equals_numpy_for_arrays_lists_and_generators():
    expected = numpy_logits(DATA["x"])
    out = nf.predict(MODEL, PARAMS, STATE, DATA["x"], batch_size=4)
    assert isinstance(out, np.ndarray) and out.shape == (10, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    from_list = nf.predict(MODEL, PARAMS, STATE, [b["x"] for b in batches(3)])  # a list of batches
    np.testing.assert_allclose(from_list, expected, rtol=1e-5, atol=1e-6)
    from_batches = nf.predict(MODEL, PARAMS, STATE, batches(4))  # fit's {"x", "y"} batches
    np.testing.assert_allclose(from_batches, expected, rtol=1e-5, atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="evaluate: batch_size must be a positive int, got 0"):
        nf.evaluate(MODEL, PARAMS, STATE, DATA, METRICS, batch_size=0)
    with pytest.raises(TypeError, match="metrics must be a non-empty dict"):
        nf.evaluate(MODEL, PARAMS, STATE, DATA, {})
    with pytest.raises(
        TypeError, match=r"batches must be dicts \{'x': ..., 'y': ...\}, got \['a'\]"
    ):
        nf.evaluate(MODEL, PARAMS, STATE, [{"a": DATA["x"]}], METRICS)
    with pytest.raises(ValueError, match="predict: inputs hold no examples"):
        nf.predict(MODEL, PARAMS, STATE, [])


def test_a_scalar_metric_is_weighted_by_the_real_examples_of_the_last_batch():
    def mean_accuracy(logits, labels):  # a scalar per batch, not per-example values
        return jnp.mean(jnp.argmax(logits, -1) == labels)

    result = nf.evaluate(MODEL, PARAMS, STATE, DATA, {"acc": mean_accuracy}, batch_size=4)
    np.testing.assert_allclose(result["acc"], numpy_metrics()["accuracy"], rtol=1e-6)
