"""``fit``'s data forms: generators, random-access sources, grain datasets (exact resume
through the checkpoint), a memmap larger than memory, and their errors."""

import itertools
import resource

import chex
import jax
import numpy as np
import optax
import pytest

import nnfun as nf
from nnfun.data import Batches

RNG = np.random.default_rng(0)
TRAIN = {
    "x": RNG.normal(size=(32, 5)).astype(np.float32),
    "y": RNG.integers(0, 3, size=32).astype(np.int32),
}
MODEL = nf.Sequential([nf.Dense(8), jax.nn.relu, nf.Dropout(0.2), nf.Dense(3)])
ADAM = optax.adam(1e-2)


def run(data, steps, **kwargs):
    options = dict(seed=3, progress=False, steps_per_call=2)
    options.update(kwargs)
    return nf.fit(MODEL, nf.softmax_cross_entropy, ADAM, data, steps=steps, **options)


class Examples:
    """TRAIN as a random-access source: one example per index."""

    def __len__(self):
        return 32

    def __getitem__(self, i):
        return {"x": TRAIN["x"][i], "y": TRAIN["y"][i]}


def test_a_generator_of_batches_trains_like_the_arrays():
    expected, history = run(TRAIN, 8, batch_size=8)
    order = Batches(TRAIN, 8, seed=3).iterate(0)
    ts, got = run((batch for batch in order), 8, eval_data=TRAIN, eval_every=4)
    chex.assert_trees_all_equal(ts.params, expected.params)
    np.testing.assert_array_equal(got["train"]["loss"], history["train"]["loss"])


def test_a_generator_that_ends_early_says_how_many_steps_ran():
    short = itertools.islice(Batches(TRAIN, 8, seed=3).iterate(0), 5)
    with pytest.raises(ValueError, match=r"ended after 5 batches .*so 4 of steps=8 steps ran"):
        run(short, 8)  # calls of 2: steps 1-4 ran, the call 5-6 lacks a batch


def test_an_iterable_needs_eval_every_and_no_batch_size():
    with pytest.raises(ValueError, match="no length .* Fix: pass eval_every"):
        run(iter([]), 8, eval_data=TRAIN)
    with pytest.raises(TypeError, match="train_data must be a dict.*got generator with batch_size"):
        run((b for b in []), 8, batch_size=8)


def test_an_error_in_the_source_reaches_fit_through_the_prefetch_thread():
    def failing():
        yield from itertools.islice(Batches(TRAIN, 8, seed=3).iterate(0), 3)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        run(failing(), 8, prefetch=2)
    with pytest.raises(ValueError, match="prefetch must be an int >= 0"):
        run(TRAIN, 8, batch_size=8, prefetch=-1)


def test_a_shape_change_with_fused_steps_names_the_leaf():
    def ragged():
        for i, batch in enumerate(Batches(TRAIN, 8, seed=3).iterate(0)):
            yield {"x": batch["x"][:, : 4 if i == 3 else 5], "y": batch["y"]}

    with pytest.raises(ValueError, match=r"x has shape \(8, 4\) in batch 1 of a call and \(8, 5\)"):
        run(ragged(), 8)


def test_a_random_access_source_trains_like_the_arrays_and_resumes_exactly(tmp_path):
    expected, _ = run(TRAIN, 12, batch_size=8)
    straight, _ = run(Examples(), 12, batch_size=8)
    chex.assert_trees_all_equal(straight.params, expected.params)
    run(Examples(), 4, batch_size=8, checkpoint_dir=str(tmp_path))
    resumed, history = run(Examples(), 12, batch_size=8, checkpoint_dir=str(tmp_path))
    np.testing.assert_array_equal(history["train"]["step"], np.arange(5, 13))
    chex.assert_trees_all_equal(resumed.params, expected.params)


grain = pytest.importorskip("grain")


def grain_dataset():
    examples = [{"x": TRAIN["x"][i], "y": TRAIN["y"][i]} for i in range(32)]
    return grain.MapDataset.source(examples).shuffle(seed=5).repeat(None).batch(8)


def test_a_grain_dataset_resumes_bitwise_from_its_saved_iterator_state(tmp_path):
    straight, history = run(grain_dataset(), 14, checkpoint_dir=str(tmp_path / "a"))
    run(grain_dataset(), 6, checkpoint_dir=str(tmp_path / "b"))  # "interrupted" at step 6
    resumed, tail = run(grain_dataset(), 14, checkpoint_dir=str(tmp_path / "b"))
    chex.assert_trees_all_equal(resumed, straight)
    np.testing.assert_array_equal(tail["train"]["loss"], history["train"]["loss"][6:])
    # The same batches as iterating the dataset directly: a fresh run is grain's order.
    direct = list(itertools.islice(iter(grain_dataset().to_iter_dataset()), 14))
    replayed, _ = run(iter(direct), 14)
    chex.assert_trees_all_equal(replayed, straight)


def test_a_grain_dataset_cannot_resume_without_its_state(tmp_path):
    run(TRAIN, 4, batch_size=8, checkpoint_dir=str(tmp_path))  # no iterator state saved
    with pytest.raises(ValueError, match="resuming at step 4 from a checkpoint that holds no"):
        run(grain_dataset(), 8, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"grain dataset is batched by grain.*\.batch\(batch_size"):
        run(grain_dataset(), 8, batch_size=8)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


@pytest.mark.slow
def test_training_on_a_2gb_memmap_keeps_memory_far_below_its_size(tmp_path):
    rows, features = 2**19, 1024  # 2**19 x 1024 float32 = 2 GiB, sparse on disk
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (rows, features))
    x[:: 2**12] = 1.0  # a few pages written; the rest reads as zeros
    x.flush()
    y = np.zeros(rows, np.int32)
    data = {"x": np.load(tmp_path / "x.npy", mmap_mode="r"), "y": y}
    before = peak_rss_bytes()
    model = nf.Dense(2)
    ts, history = nf.fit(model, nf.softmax_cross_entropy, optax.sgd(0.1), data, steps=20,
                         batch_size=64, steps_per_call=1, progress=False)  # fmt: skip
    grown = peak_rss_bytes() - before
    assert history["train"]["loss"].shape == (20,) and np.all(np.isfinite(history["train"]["loss"]))
    assert grown < 256 * 2**20, f"peak RSS grew {grown / 2**20:.0f} MiB on a 2048 MiB memmap"
