"""A per-layer table of output shapes, parameter counts and FLOPs, computed abstractly."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax

from ._layer import Layer, current_path, init_shapes, spec_of
from ._params import count_params

_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "nnfun_recorder", default=None
)
_UNROLL_LOOPS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "nnfun_unroll_loops", default=False
)


@contextlib.contextmanager
def recording() -> Iterator[list]:
    """Collects ``(path, layer, in_spec, out_spec, params, state)`` of every child applied."""
    rows: list = []
    token = _RECORDER.set(rows)
    try:
        yield rows
    finally:
        _RECORDER.reset(token)


@contextlib.contextmanager
def record_child(layer: Layer, x: Any, params: Any, state: Any) -> Iterator[Callable]:
    """Within a child's scope: yields ``record(y)``, which adds its row when recording.

    The row is reserved on entry, so that a parent precedes its children.
    """
    rows = _RECORDER.get()
    if rows is None:
        yield lambda y: None
        return
    row = len(rows)
    rows.append(None)

    def record(y: Any) -> None:
        rows[row] = (current_path(), layer, spec_of(x), spec_of(y), spec_of(params), spec_of(state))

    yield record


@contextlib.contextmanager
def not_recording() -> Iterator[None]:
    """Within, children applied are not recorded (for abstract evaluations on the side)."""
    token = _RECORDER.set(None)
    try:
        yield
    finally:
        _RECORDER.reset(token)


def loops_unrolled() -> bool:
    """Whether layers should trace their loops unrolled (see :func:`unrolling_loops`)."""
    return _UNROLL_LOOPS.get()


@contextlib.contextmanager
def unrolling_loops() -> Iterator[None]:
    """Within, ``Stack`` and ``RNN`` trace their ``lax.scan`` fully unrolled.

    XLA's cost analysis counts a loop body once, whatever its trip count;
    :func:`summary` lowers each layer inside this context so that the FLOPs of
    a Stack count every copy and those of an RNN every time step.
    """
    token = _UNROLL_LOOPS.set(True)
    try:
        yield
    finally:
        _UNROLL_LOOPS.reset(token)


def _shape_text(spec: Any) -> str:
    shapes = [f"{tuple(s.shape)} {s.dtype}" for s in jax.tree.leaves(spec)]
    return shapes[0] if len(shapes) == 1 else "(" + ", ".join(shapes) + ")"


def _flops(layer: Layer, params: Any, state: Any, x: Any) -> float | None:
    apply = functools.partial(layer.apply, train=False)
    try:
        # Unrolled, so that a Stack's FLOPs count every copy and an RNN's every time
        # step, not the loop body once.
        with unrolling_loops():
            lowered = jax.jit(apply).lower(params, state, x)
        cost = lowered.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return None if cost is None else float(cost.get("flops", 0.0))


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    path: str
    layer: str
    output: str
    params: int
    flops: float | None


@dataclasses.dataclass(frozen=True)
class Summary:
    """The rows of :func:`summary`; ``str()`` gives the table."""

    rows: tuple[SummaryRow, ...]

    @property
    def total_params(self) -> int:
        return self.rows[0].params

    @property
    def total_flops(self) -> float | None:
        return self.rows[0].flops

    def __str__(self) -> str:
        header = ("path", "layer", "output", "params", "flops")
        body = [
            (
                r.path,
                r.layer,
                r.output,
                f"{r.params:,}",
                "" if r.flops is None else f"{r.flops:,.0f}",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
        return "\n".join(lines)

    __repr__ = __str__


def summary(model: Layer, x: Any) -> Summary:
    """Tabulates every layer's path, type, output shape, parameter count and FLOPs.

    Nothing runs on data: shapes come from ``jax.eval_shape`` and FLOPs from
    XLA's cost analysis of each layer's lowered computation (blank where the
    backend reports none). The loops of a ``Stack`` (over its copies) and of an
    ``RNN`` (over time) are costed unrolled, so their FLOPs are the sum over
    every copy and every time step; lowering a sequence of thousands of steps
    unrolled takes seconds (a GRU over 1000 steps: about 1.4 s).

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> table = nf.summary(nf.Sequential([nf.Dense(8), jax.nn.relu, nf.Dense(2)]),
        ...                    jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> [row.path for row in table.rows], table.total_params
        (['<root>', '0', '1', '2'], 58)
    """
    x = spec_of(x)
    params, state = init_shapes(model, x)
    with recording() as recorded:
        out = jax.eval_shape(
            lambda p, s, xs: model.apply(p, s, xs, key=jax.random.key(0), train=False)[0],
            params,
            state,
            x,
        )
    rows = [("<root>", model, x, out, params, state)] + list(recorded)
    return Summary(
        tuple(
            SummaryRow(
                path, type(layer).__name__, _shape_text(y), count_params(p), _flops(layer, p, s, xs)
            )
            for path, layer, xs, y, p, s in rows
        )
    )
