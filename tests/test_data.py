"""Tests of nnfun.data: datasets, text tools and the batch iterator."""

import collections
import itertools
import random
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun.data as nd
from nnfun.data import _datasets

# ---------------------------------------------------------------------------- mnist1d


def _global_rng_states():
    return np.random.get_state(), random.getstate()


def _assert_same_states(before, after):
    (np_before, py_before), (np_after, py_after) = before, after
    assert np_before[0] == np_after[0]
    np.testing.assert_array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert py_before == py_after


@pytest.fixture(scope="module")
def mnist1d_run():
    """One real generation (a few seconds) for the whole module, with the RNG states around it."""
    original = _global_rng_states()
    _datasets._mnist1d_arrays.cache_clear()  # make sure this call really generates
    np.random.seed(1234)
    random.seed(5678)
    before = _global_rng_states()
    data = nd.mnist1d(seed=0)
    yield data, before, _global_rng_states()
    np.random.set_state(original[0])
    random.setstate(original[1])


def test_mnist1d_shapes_dtypes_and_sizes(mnist1d_run):
    (train, test), _, _ = mnist1d_run
    assert train["x"].shape == (4000, 40) and test["x"].shape == (1000, 40)
    assert train["y"].shape == (4000,) and test["y"].shape == (1000,)
    assert train["x"].dtype == np.float32 and test["x"].dtype == np.float32
    assert train["y"].dtype == np.int32 and test["y"].dtype == np.int32
    # The package makes num_samples // 10 = 500 signals per digit, split afterwards.
    counts = np.bincount(train["y"], minlength=10) + np.bincount(test["y"], minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 500))
    # ... and standardises the whole dataset to mean 0, standard deviation 1.
    everything = np.concatenate([train["x"], test["x"]]).astype(np.float64)
    np.testing.assert_allclose([everything.mean(), everything.std()], [0.0, 1.0], atol=1e-5)


def test_mnist1d_leaves_global_rng_state_untouched(mnist1d_run):
    _, before, after = mnist1d_run
    _assert_same_states(before, after)


def test_mnist1d_is_cached_and_returns_copies(mnist1d_run):
    (train, _), _, _ = mnist1d_run
    again, _ = nd.mnist1d(seed=0)  # served from the cache: instant
    np.testing.assert_array_equal(again["x"], train["x"])
    again["x"][:] = 0.0
    third, _ = nd.mnist1d(seed=0)
    np.testing.assert_array_equal(third["x"], train["x"])


def _fake_make_dataset(calls):
    def make_dataset(args):
        calls.append(args.seed)
        np.random.seed(args.seed)  # what the real one does
        random.seed(args.seed)
        n = 10
        return {
            "x": np.arange(n * 40, dtype=np.float64).reshape(n, 40),
            "y": np.arange(n, dtype=np.int64),
            "x_test": np.ones((2, 40)),
            "y_test": np.zeros(2, np.int64),
        }

    return make_dataset


def test_mnist1d_passes_seed_and_converts_dtypes(monkeypatch):
    import mnist1d.data

    calls = []
    monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_make_dataset(calls))
    before = _global_rng_states()
    x, y, x_test, y_test = _datasets._mnist1d_arrays.__wrapped__(7)  # bypass the cache
    _assert_same_states(before, _global_rng_states())
    assert calls == [7]
    np.testing.assert_array_equal(x, np.arange(400, dtype=np.float32).reshape(10, 40))
    assert x.dtype == np.float32 and y.dtype == np.int32 and y_test.dtype == np.int32
    assert x_test.shape == (2, 40)


def test_mnist1d_restores_rng_state_when_generation_fails(monkeypatch):
    import mnist1d.data

    def failing(args):
        np.random.seed(0)
        random.seed(0)
        raise RuntimeError("boom")

    monkeypatch.setattr(mnist1d.data, "make_dataset", failing)
    before = _global_rng_states()
    with pytest.raises(RuntimeError, match="boom"):
        _datasets._mnist1d_arrays.__wrapped__(3)
    _assert_same_states(before, _global_rng_states())


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0", True])
def test_mnist1d_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be an int"):
        nd.mnist1d(seed=seed)


def test_mnist1d_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(
        ImportError, match=r'needs the mnist1d package.*pip install "nnfun\[data\]"'
    ):
        nd.mnist1d(seed=987654)  # an uncached seed, so the import is attempted


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    return load_digits()


def test_digits_shapes_dtypes_and_range():
    train, test = nd.digits(test_fraction=0.2, seed=0)
    assert train["x"].shape == (1438, 8, 8, 1) and test["x"].shape == (359, 8, 8, 1)
    assert train["x"].dtype == np.float32 and train["y"].dtype == np.int32
    for split in (train, test):
        assert split["x"].min() == 0.0 and split["x"].max() == 1.0


def test_digits_holds_every_source_example_once(sklearn_digits):
    train, test = nd.digits(seed=1)
    ours = collections.Counter(
        (tuple(np.rint(x.ravel() * 16).astype(int)), int(y))
        for split in (train, test)
        for x, y in zip(split["x"], split["y"])
    )
    source = collections.Counter(
        (tuple(row.astype(int)), int(y))
        for row, y in zip(sklearn_digits.data, sklearn_digits.target)
    )
    assert ours == source


@pytest.mark.parametrize("test_fraction", [0.2, 0.5])
def test_digits_split_is_stratified(sklearn_digits, test_fraction):
    _, test = nd.digits(test_fraction=test_fraction, seed=0)
    per_class = np.bincount(sklearn_digits.target)
    expected = [round(test_fraction * n) for n in per_class]
    np.testing.assert_array_equal(np.bincount(test["y"], minlength=10), expected)


def test_digits_split_depends_on_seed():
    a_train, a_test = nd.digits(seed=0)
    b_train, b_test = nd.digits(seed=0)
    _, c_test = nd.digits(seed=1)
    np.testing.assert_array_equal(a_test["x"], b_test["x"])
    np.testing.assert_array_equal(a_train["y"], b_train["y"])
    assert not np.array_equal(a_test["x"], c_test["x"])


@pytest.mark.parametrize("test_fraction", [0.0, 1.0, -0.1, 1.5])
def test_digits_rejects_bad_fraction(test_fraction):
    with pytest.raises(ValueError, match="test_fraction must be strictly between 0 and 1"):
        nd.digits(test_fraction=test_fraction)


def test_digits_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed must be an int"):
        nd.digits(seed=-3)


def test_digits_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'scikit-learn package.*pip install "nnfun\[data\]"'):
        nd.digits()


# ------------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def text():
    return nd.pydoc_text()


@pytest.fixture(scope="module")
def tok(text):
    return nd.CharTokenizer.from_text(text)


def test_pydoc_text_joins_every_topic_deterministically(text):
    from pydoc_data.topics import topics

    assert nd.pydoc_text() == text
    assert len(text) == sum(map(len, topics.values())) + 2 * (len(topics) - 1)
    assert all(body in text for body in topics.values())
    assert text.startswith(topics[min(topics)])


def test_tokenizer_vocab_and_round_trip(text, tok):
    assert tok.vocab == tuple(sorted(set(text)))
    assert tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert tok.decode(ids) == text


def test_tokenizer_encode_matches_a_lookup_table(text, tok):
    index = {c: i for i, c in enumerate(sorted(set(text)))}
    sample = text[:2000] + "".join(c for c in tok.vocab if ord(c) > 127)
    np.testing.assert_array_equal(tok.encode(sample), [index[c] for c in sample])


def test_tokenizer_keeps_a_given_vocab_order():
    tok = nd.CharTokenizer(["b", "é", "a"])
    assert tok.vocab == ("b", "é", "a")
    assert tok.encode("aébb").tolist() == [2, 1, 0, 0]
    assert tok.decode([2, 1, 0]) == "aéb"


def test_tokenizer_empty_inputs_and_jax_ids():
    tok = nd.CharTokenizer.from_text("xyz")
    assert tok.encode("").shape == (0,)
    assert tok.decode([]) == ""
    assert tok.decode(jnp.array([2, 0], jnp.int32)) == "zx"


def test_tokenizer_is_hashable_and_comparable():
    a, b = nd.CharTokenizer.from_text("cab"), nd.CharTokenizer(("a", "b", "c"))
    assert a == b and hash(a) == hash(b)
    assert a != nd.CharTokenizer.from_text("ab")


def test_tokenizer_unknown_characters_are_listed():
    tok = nd.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the vocabulary: \['!', 'z'\]"):
        tok.encode("abz!")


@pytest.mark.parametrize(
    "vocab, message",
    [
        ((), "non-empty sequence of single characters"),
        (("ab", "c"), "non-empty sequence of single characters"),
        ((1, 2), "non-empty sequence of single characters"),
        (("a", "b", "a"), r"duplicate characters \['a'\]"),
    ],
)
def test_tokenizer_rejects_bad_vocab(vocab, message):
    with pytest.raises(ValueError, match=message):
        nd.CharTokenizer(vocab)


def test_tokenizer_input_errors():
    tok = nd.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="needs a non-empty str"):
        nd.CharTokenizer.from_text("")
    with pytest.raises(TypeError, match="expects a str, got list"):
        tok.encode(["a"])
    with pytest.raises(ValueError, match="1-D integer array, got shape"):
        tok.decode(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="1-D integer array"):
        tok.decode(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 3\), got \[3, -1\]"):
        tok.decode([0, 3, -1])


def test_char_splits_are_contiguous_with_the_right_sizes(text, tok):
    train, val = nd.char_splits(text, tok, val_fraction=0.1)
    n_val = round(0.1 * len(text))
    assert val.shape == (n_val,) and train.shape == (len(text) - n_val,)
    assert tok.decode(train) == text[: len(text) - n_val]
    assert tok.decode(val) == text[len(text) - n_val :]


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.2])
def test_char_splits_rejects_bad_fraction(val_fraction):
    tok = nd.CharTokenizer.from_text("abcd")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        nd.char_splits("abcd", tok, val_fraction)


def test_char_splits_rejects_an_empty_split():
    tok = nd.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"empty split \(3 train, 0 validation\)"):
        nd.char_splits("abc", tok, 0.1)


def test_sequence_batch_targets_are_the_next_tokens():
    ids = np.random.default_rng(0).permutation(500)  # distinct values locate each window
    batch = nd.sequence_batch(ids, batch_size=16, seq_len=12, rng_or_seed=3)
    assert batch["x"].shape == batch["y"].shape == (16, 12)
    assert batch["x"].dtype == batch["y"].dtype == np.int32
    for x, y in zip(batch["x"], batch["y"]):
        start = int(np.flatnonzero(ids == x[0])[0])
        np.testing.assert_array_equal(x, ids[start : start + 12])
        np.testing.assert_array_equal(y, ids[start + 1 : start + 13])


def test_sequence_batch_reaches_every_start_position():
    ids = np.arange(8)
    batch = nd.sequence_batch(ids, batch_size=200, seq_len=5, rng_or_seed=0)
    assert sorted(set(batch["x"][:, 0].tolist())) == [0, 1, 2]  # the last start is 8 - 6


def test_sequence_batch_seeding():
    ids = np.arange(1000)
    a = nd.sequence_batch(ids, 4, 8, (0, 5))
    b = nd.sequence_batch(ids, 4, 8, (0, 5))
    np.testing.assert_array_equal(a["x"], b["x"])
    rng = np.random.default_rng(0)
    first, second = nd.sequence_batch(ids, 4, 8, rng), nd.sequence_batch(ids, 4, 8, rng)
    assert not np.array_equal(first["x"], second["x"])


@pytest.mark.parametrize(
    "ids, batch_size, seq_len, message",
    [
        (np.arange(5), 2, 5, "longer than seq_len=5"),
        (np.zeros((3, 10), np.int32), 2, 4, r"got shape \(3, 10\)"),
        (np.arange(10), 0, 4, "batch_size must be a positive int"),
        (np.arange(10), 2, 0, "seq_len must be a positive int"),
    ],
)
def test_sequence_batch_errors(ids, batch_size, seq_len, message):
    with pytest.raises(ValueError, match=message):
        nd.sequence_batch(ids, batch_size, seq_len, 0)


# ---------------------------------------------------------------------------- Batches


def _data(n=10):
    return {"x": np.arange(n), "y": -np.arange(n), "image": np.arange(n * 6).reshape(n, 2, 3)}


def _same_batches(first, second):
    first, second = list(first), list(second)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize(
    "n, batch_size, drop, expected", [(10, 4, True, 2), (10, 4, False, 3), (8, 4, False, 2)]
)
def test_batches_len(n, batch_size, drop, expected):
    batches = nd.Batches(_data(n), batch_size, drop_remainder=drop)
    assert len(batches) == expected == len(list(batches.epoch(0)))


def test_batches_every_example_once_per_epoch():
    batches = nd.Batches(_data(10), 4, seed=2, shuffle=True, drop_remainder=False)
    for epoch in range(3):
        parts = list(batches.epoch(epoch))
        assert [len(p["x"]) for p in parts] == [4, 4, 2]
        np.testing.assert_array_equal(np.sort(np.concatenate([p["x"] for p in parts])), range(10))
        for p in parts:  # the keys stay aligned example by example
            np.testing.assert_array_equal(p["y"], -p["x"])
            np.testing.assert_array_equal(p["image"], _data(10)["image"][p["x"]])


def test_batches_drop_remainder_gives_full_distinct_batches():
    parts = list(nd.Batches(_data(10), 3, seed=1).epoch(0))
    assert all(p["x"].shape == (3,) and p["image"].shape == (3, 2, 3) for p in parts)
    assert len(set(np.concatenate([p["x"] for p in parts]).tolist())) == 9


def test_batches_same_seed_same_batches_different_seed_different():
    a, b, c = (nd.Batches(_data(50), 10, seed=s) for s in (0, 0, 1))
    _same_batches(a.epoch(0), b.epoch(0))
    assert not np.array_equal(next(a.epoch(0))["x"], next(c.epoch(0))["x"])
    assert not np.array_equal(next(a.epoch(0))["x"], next(a.epoch(1))["x"])


def test_batches_order_depends_only_on_seed_and_epoch():
    a = nd.Batches(_data(50), 10, seed=4)
    list(itertools.islice(iter(a), 17))  # iterating earlier epochs changes nothing
    np.random.seed(0)  # nor does global RNG state
    b = nd.Batches(_data(50), 10, seed=4)
    np.random.seed(99)
    _same_batches(a.epoch(3), b.epoch(3))


def test_batches_without_shuffle_keep_data_order():
    parts = list(nd.Batches(_data(10), 4, shuffle=False, drop_remainder=False).epoch(5))
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), range(10))


def test_batches_iterate_start_equals_the_tail_of_a_fresh_iteration():
    batches = nd.Batches(_data(10), 3, seed=7, drop_remainder=False)  # 4 per epoch
    total = 3 * len(batches) + 2
    fresh = list(itertools.islice(iter(batches), total))
    _same_batches(fresh, itertools.islice(batches.iterate(0), total))
    for start in range(total):
        _same_batches(fresh[start:], itertools.islice(batches.iterate(start), total - start))


def test_batches_resume_across_an_epoch_boundary():
    batches = nd.Batches(_data(12), 4, seed=3)  # 3 per epoch
    resumed = list(itertools.islice(batches.iterate(len(batches) - 1), 3))
    epoch0, epoch1 = list(batches.epoch(0)), list(batches.epoch(1))
    _same_batches(resumed, [epoch0[-1], epoch1[0], epoch1[1]])


def test_batches_accept_jax_arrays_and_yield_numpy():
    batch = next(iter(nd.Batches({"x": jnp.arange(6.0)}, 2)))
    assert isinstance(batch["x"], np.ndarray) and batch["x"].shape == (2,)


def test_batches_larger_than_data_without_drop_is_one_batch():
    batches = nd.Batches(_data(5), 8, drop_remainder=False)
    assert len(batches) == 1
    np.testing.assert_array_equal(np.sort(next(iter(batches))["x"]), range(5))


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        ({"x": np.zeros(10), "y": np.zeros(9)}, {}, "same number.*y has 9 examples, x has 10"),
        ({}, {}, "non-empty dict of arrays"),
        ({"x": {}}, {}, "non-empty dict of arrays"),
        ([np.zeros(3)], {}, "non-empty dict of arrays.*got list"),
        ({"x": np.float32(1.0)}, {}, "x is a scalar; every array needs a leading example axis"),
        ({"x": {"a": np.zeros(3), "b": [1.0, 2.0]}}, {}, r"x/b/0 is a scalar.*np\.asarray"),
        ({"x": np.zeros(10)}, {"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"x": np.zeros(10)}, {"batch_size": 11}, "larger than the 10 examples"),
        ({"x": np.zeros(10)}, {"seed": -1}, "seed must be an int >= 0"),
    ],
)
def test_batches_errors(data, kwargs, message):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        nd.Batches(data, **kwargs)


def test_batches_epoch_and_start_errors():
    batches = nd.Batches(_data(10), 2)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        batches.epoch(-1)
    with pytest.raises(ValueError, match="start must be an int >= 0"):
        batches.iterate(-1)


def _nested(n=10):
    inputs = np.arange(n * 6, dtype=np.float32).reshape(n, 3, 2)
    source, target = np.arange(n) * 10, np.arange(n * 4).reshape(n, 4)
    return {"x": {"inputs": inputs, "lengths": np.arange(n)}, "pair": (source, target),
            "y": -np.arange(n)}  # fmt: skip


def test_batches_of_nested_data_keep_structure_and_rows_aligned():
    data = _nested()
    parts = list(nd.Batches(data, 4, seed=5, drop_remainder=False).epoch(0))
    assert [jax.tree.structure(p) for p in parts] == [jax.tree.structure(data)] * 3
    for part in parts:
        rows = part["x"]["lengths"]  # example i has lengths[i] == i, so it names its row
        np.testing.assert_array_equal(part["x"]["inputs"], data["x"]["inputs"][rows])
        np.testing.assert_array_equal(part["pair"][0], rows * 10)
        np.testing.assert_array_equal(part["pair"][1], data["pair"][1][rows])
        np.testing.assert_array_equal(part["y"], -rows)
    order = np.concatenate([p["x"]["lengths"] for p in parts])
    np.testing.assert_array_equal(order, np.random.default_rng((5, 0)).permutation(10))


def test_batches_name_the_leaf_whose_length_differs():
    data = {"x": {"inputs": np.zeros((8, 3)), "lengths": np.zeros(7)}, "y": np.zeros(8)}
    with pytest.raises(ValueError, match="x/lengths has 7 examples, x/inputs has 8"):
        nd.Batches(data, 2)
    data = {"x": (np.zeros(8), np.zeros(9)), "y": np.zeros(8)}
    with pytest.raises(ValueError, match="x/1 has 9 examples, x/0 has 8"):
        nd.Batches(data, 2)
