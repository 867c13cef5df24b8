"""Offline datasets: MNIST-1D (generated, never downloaded) and scikit-learn's digits.

Both loaders import their third-party package lazily, so ``import nnfun`` needs
only the core dependencies; a missing package raises an ``ImportError`` that
says ``pip install "nnfun[data]"``.
"""

from __future__ import annotations

import functools
import importlib
import random
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

Split = dict[str, np.ndarray]


T = TypeVar("T")


def _import(module: str, package: str, caller: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"nnfun.data.{caller}() needs the {package} package, which is not installed "
            f'({error}). Fix: pip install "nnfun[data]"'
        ) from error


def _check_seed(seed: int, caller: str) -> None:
    # NumPy's legacy global seeder (used by mnist1d) takes 0 <= seed < 2**32.
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"nnfun.data.{caller}: seed must be an int in [0, 2**32), got {seed!r}")


def _with_global_rng_restored(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)``, then put NumPy's and Python's global RNG states back.

    ``mnist1d.make_dataset`` reseeds both global generators; without this, loading
    the data would silently change every later ``np.random`` / ``random`` draw of
    the caller.
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        return fn(*args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@functools.lru_cache(maxsize=8)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, ...]:
    data_module = _import("mnist1d.data", "mnist1d", "mnist1d")
    args = data_module.get_dataset_args()
    args.seed = int(seed)
    raw = _with_global_rng_restored(data_module.make_dataset, args)
    arrays = (
        np.asarray(raw["x"], np.float32),
        np.asarray(raw["y"], np.int32),
        np.asarray(raw["x_test"], np.float32),
        np.asarray(raw["y_test"], np.int32),
    )
    for array in arrays:  # the cache hands out copies; guard the originals anyway
        array.setflags(write=False)
    return arrays


def mnist1d(seed: int = 0) -> tuple[Split, Split]:
    """The MNIST-1D dataset, generated offline with the ``mnist1d`` package.

    Calls ``mnist1d.data.make_dataset`` with the package's default arguments
    (5000 signals of length 40, an 80/20 split) and our ``seed``; it never calls
    ``get_dataset``, which downloads and unpickles a remote file. Generation takes
    a few seconds, so the arrays are cached in-process per seed (each call returns
    fresh copies). The caller's global NumPy and ``random`` RNG states are left
    unchanged, although ``make_dataset`` reseeds both.

    Args:
        seed: generation seed, an int in ``[0, 2**32)``. The package's own default
            is 42; seed 0 gives a different, equally valid draw.

    Returns:
        ``(train, test)``, each ``{"x": float32 (N, 40), "y": int32 (N,)}`` with
        N = 4000 for train and 1000 for test; labels are digits 0 to 9. The signals
        are standardised over the whole dataset (mean 0, standard deviation 1), as
        the package does.

    Raises:
        ImportError: ``mnist1d`` is not installed (``pip install "nnfun[data]"``).
        ValueError: a bad seed.

    Example:
        >>> import nnfun.data as nd
        >>> train, test = nd.mnist1d(seed=0)  # doctest: +SKIP
        >>> train["x"].shape, train["y"].dtype, test["x"].shape  # doctest: +SKIP
        ((4000, 40), dtype('int32'), (1000, 40))
    """
    _check_seed(seed, "mnist1d")
    x, y, x_test, y_test = _mnist1d_arrays(int(seed))
    return {"x": x.copy(), "y": y.copy()}, {"x": x_test.copy(), "y": y_test.copy()}


def _stratified_test_mask(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing ``round(test_fraction * n_c)`` random examples of each class."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = round(test_fraction * len(members))
        is_test[rng.choice(members, size=count, replace=False)] = True
    return is_test


def digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 8x8 handwritten digits (1797 images, shipped with the package).

    The split is stratified: each class puts ``round(test_fraction * n_class)`` of
    its examples, chosen by ``seed``, into the test set, so both sets keep the class
    balance. Each set is then shuffled (also by ``seed``).

    Args:
        test_fraction: share of each class held out, strictly between 0 and 1.
        seed: seed of the split and the shuffles.

    Returns:
        ``(train, test)``, each ``{"x": float32 (N, 8, 8, 1), "y": int32 (N,)}``;
        pixel intensities (0 to 16 in the source) divided by 16 into ``[0, 1]``,
        channels-last. With the default ``test_fraction=0.2``: 1438 train and 359
        test images.

    Raises:
        ImportError: scikit-learn is not installed (``pip install "nnfun[data]"``).
        ValueError: ``test_fraction`` outside ``(0, 1)`` or a bad seed.

    Example:
        >>> import nnfun.data as nd
        >>> train, test = nd.digits(test_fraction=0.2, seed=0)
        >>> train["x"].shape, test["x"].shape, float(train["x"].max())
        ((1438, 8, 8, 1), (359, 8, 8, 1), 1.0)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"nnfun.data.digits: test_fraction must be strictly between 0 and 1, "
            f"got {test_fraction!r}"
        )
    _check_seed(seed, "digits")
    datasets = _import("sklearn.datasets", "scikit-learn", "digits")
    bunch = datasets.load_digits()
    images = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
    labels = np.asarray(bunch.target, np.int32)
    is_test = _stratified_test_mask(labels, test_fraction, seed)
    # The source is ordered by writer; shuffle so batches taken in order are mixed.
    rng = np.random.default_rng((seed, 1))
    train_index = rng.permutation(np.flatnonzero(~is_test))
    test_index = rng.permutation(np.flatnonzero(is_test))
    return (
        {"x": images[train_index], "y": labels[train_index]},
        {"x": images[test_index], "y": labels[test_index]},
    )
