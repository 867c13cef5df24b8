"""A step's matrix products and the time the backend needs for them alone (its GEMM bound).

:func:`products` walks the jaxpr of a JAX function (into ``jit``, ``scan`` times its
length, ``remat`` and custom-VJP bodies) and counts its ``dot_general`` equations
by shape, dimension numbers and dtypes. :func:`xla_gemm_seconds` runs each
distinct product as its own compiled program on random operands and returns the
sum over products of count x time: the step's time if it did nothing but its
products, at the speed the backend reaches on exactly those shapes and layouts.
:func:`torch_gemm_seconds` does the same with ``torch.einsum`` (what PyTorch's
own linear layers and attention reduce to). Each product is timed as ``calls``
back-to-back calls of one program, so small products include a few
microseconds of dispatch each: the bound is, if anything, generous.
"""

from __future__ import annotations

import string
import time
from collections import Counter
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore


class Product(NamedTuple):
    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    dims: tuple  # ((lhs contracting, rhs contracting), (lhs batch, rhs batch))
    dtype: str
    out_dtype: str | None

    @property
    def flops(self) -> int:
        rhs_free = [s for i, s in enumerate(self.rhs) if i not in self.dims[0][1] + self.dims[1][1]]
        return 2 * int(np.prod(self.lhs)) * int(np.prod(rhs_free))


def _walk(jaxpr, counts: Counter, times: int) -> None:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            lhs, rhs = (v.aval for v in eqn.invars)
            dims = tuple(tuple(tuple(d) for d in pair) for pair in eqn.params["dimension_numbers"])
            out = eqn.params.get("preferred_element_type")
            key = Product(lhs.shape, rhs.shape, dims, lhs.dtype.name, out and jnp.dtype(out).name)
            counts[key] += times
        inner = times * (eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1)
        for value in eqn.params.values():
            for sub in value if isinstance(value, list | tuple) else [value]:
                if isinstance(sub, jcore.ClosedJaxpr):
                    _walk(sub.jaxpr, counts, inner)
                elif isinstance(sub, jcore.Jaxpr):
                    _walk(sub, counts, inner)


def products(fn, *args) -> Counter:
    """``Counter`` of :class:`Product` -> how many times one call of ``fn(*args)`` runs it."""
    counts: Counter = Counter()
    _walk(jax.make_jaxpr(fn)(*args).jaxpr, counts, 1)
    return counts


def total_flops(counts: Counter) -> int:
    return sum(p.flops * n for p, n in counts.items())


def _operands(p: Product, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s, dtype=np.float32) for s in (p.lhs, p.rhs)]


def _time(run, calls: int) -> np.ndarray:
    """(wall, CPU) seconds per call; the CPU time of all threads barely moves with other load."""
    run()  # compile / warm up
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        out = run()
    if isinstance(out, jax.Array):
        out.block_until_ready()
    return np.array([time.perf_counter() - start, time.process_time() - cpu]) / calls


def square(n: int, dtype: str) -> Counter:
    """One ``(n, n) @ (n, n)`` product, as a :func:`products` count."""
    return Counter({Product((n, n), (n, n), (((1,), (0,)), ((), ())), dtype, None): 1})


class XlaGemms:
    """The products of a step, each compiled once, timed by :meth:`seconds`."""

    def __init__(self, counts: Counter):
        self.runs = []
        for p, n in counts.items():
            lhs, rhs = (jnp.asarray(a, p.dtype) for a in _operands(p))
            out = p.out_dtype and jnp.dtype(p.out_dtype)
            f = jax.jit(
                lambda a, b, p=p, out=out: jax.lax.dot_general(
                    a, b, p.dims, preferred_element_type=out
                )
            )
            self.runs.append((n, lambda f=f, lhs=lhs, rhs=rhs: f(lhs, rhs)))

    def seconds(self, calls: int = 5) -> np.ndarray:
        """(wall, CPU) seconds of all the products, each run ``calls`` times."""
        return sum(n * _time(run, calls) for n, run in self.runs)


def _einsum_spec(p: Product) -> str:
    """The einsum string of a dot_general: batch dims, then lhs free, then rhs free."""
    letters = iter(string.ascii_letters)
    (lc, rc), (lb, rb) = p.dims
    lhs = [""] * len(p.lhs)
    rhs = [""] * len(p.rhs)
    for i, j in zip(lb, rb):
        lhs[i] = rhs[j] = next(letters)
    for i, j in zip(lc, rc):
        lhs[i] = rhs[j] = next(letters)
    for spec in (lhs, rhs):
        for i, s in enumerate(spec):
            spec[i] = s or next(letters)
    out = [lhs[i] for i in lb]
    out += [s for i, s in enumerate(lhs) if i not in lb + lc]
    out += [s for i, s in enumerate(rhs) if i not in rb + rc]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


class TorchGemms:
    """The same products through ``torch.einsum`` (``dtype``: the operands' torch dtype)."""

    def __init__(self, torch, counts: Counter, dtype=None):
        self.runs = []
        for p, n in counts.items():
            lhs, rhs = (torch.from_numpy(a).to(dtype or torch.float32) for a in _operands(p))
            spec = _einsum_spec(p)
            self.runs.append((n, lambda s=spec, a=lhs, b=rhs: torch.einsum(s, a, b)))

    def seconds(self, calls: int = 5) -> np.ndarray:
        """(wall, CPU) seconds of all the products, each run ``calls`` times."""
        return sum(n * _time(run, calls) for n, run in self.runs)
