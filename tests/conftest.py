"""Strict JAX for every test: no silent rank promotion, and a ``key`` fixture."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

# Helper scripts run in subprocesses (``tests/_*.py``) are not test modules, and
# importing them for doctest collection would run their set-up; the scripts that
# wrote ``tests/fixtures`` need PyTorch, which ``make test`` does not install.
collect_ignore_glob = ["_*.py", "fixtures/*.py"]  # fixture scripts run torch, once, by hand


@pytest.fixture
def key():
    return jax.random.key(0)
