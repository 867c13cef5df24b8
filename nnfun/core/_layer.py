"""The layer contract.

A layer is a frozen, hashable dataclass of hyperparameters. It holds no arrays.

    params, state = layer.init(key, x_spec)        # x_spec: ShapeDtypeStruct or array
    y, state = layer.apply(params, state, x, *, key=None, train=False)

``params`` and ``state`` are nested dicts of arrays (``{}`` when there are none).
Both methods are pure, so ``jax.jit``, ``jax.grad``, ``jax.vmap`` and
``jax.lax.scan`` apply to them directly. A child's key is its parent's key folded
with a CRC32 of the child's name, so adding a layer never changes the others.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import zlib
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, Any]
State = dict[str, Any]

_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("nnfun_path", default=())
_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "nnfun_recorder", default=None
)


class LayerError(ValueError):
    """A layer received something it cannot use. The message names the layer path."""


def current_path() -> str:
    """The ``/``-joined path of the layer being initialised or applied."""
    return "/".join(_PATH.get())


def layer_error(layer: Layer, message: str) -> LayerError:
    """Builds a :class:`LayerError` that names ``layer`` and its path in the model."""
    path = current_path() or "<root>"
    return LayerError(f"{type(layer).__name__} at '{path}': {message}")


@contextlib.contextmanager
def scope(name: str):
    """Enters the child ``name`` of the current path (used by combinators)."""
    token = _PATH.set(_PATH.get() + (name,))
    try:
        yield
    except LayerError:
        raise
    except Exception as e:
        path = current_path()
        raise LayerError(f"at '{path}': {type(e).__name__}: {e}") from e
    finally:
        _PATH.reset(token)


def child_key(key: jax.Array | None, name: str) -> jax.Array | None:
    """Derives a child's key from its parent's key and its name (stable across runs)."""
    if key is None:
        return None
    return jax.random.fold_in(key, zlib.crc32(name.encode()))


def spec_of(x: Any) -> Any:
    """Maps every array (or spec) leaf of ``x`` to a ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), x)


class Layer:
    """Base class of every layer. Subclasses become frozen dataclasses automatically.

    A subclass declares its hyperparameters as annotated fields and implements
    ``init`` and ``apply``:

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> class Scale(nf.Layer):
        ...     init_value: float = 1.0
        ...     def init(self, key, x):
        ...         return {"scale": jnp.full(x.shape[-1:], self.init_value)}, {}
        ...     def apply(self, params, state, x, *, key=None, train=False):
        ...         return x * params["scale"][None, :], state
        >>> params, state = Scale(2.0).init(jax.random.key(0), jnp.ones((3, 4)))
        >>> Scale(2.0).apply(params, state, jnp.ones((3, 4)))[0].shape
        (3, 4)

    Errors raised inside a child (by ``layer_error`` or by JAX) name the child's path.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(frozen=True, repr=True, eq=True)(cls)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        """Creates ``(params, state)`` for an input like ``x`` (a spec or an array)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement init")

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        """Computes ``(y, new_state)``; pure."""
        raise NotImplementedError(f"{type(self).__name__} does not implement apply")

    def children(self) -> tuple[tuple[str, Layer], ...]:
        """Named sub-layers (empty for a leaf layer)."""
        return ()


dataclasses.dataclass(frozen=True)(Layer)


def output_spec(layer: Layer, params: Params, state: State, x: Any) -> Any:
    """The output spec of ``layer`` on ``x``, found by ``jax.eval_shape`` (no FLOPs)."""

    def run(p, s, xs):
        return layer.apply(p, s, xs, key=jax.random.key(0), train=False)[0]

    return jax.eval_shape(run, spec_of(params), spec_of(state), spec_of(x))


def init_child(name: str, layer: Layer, key: jax.Array, x: Any) -> tuple[Params, State, Any]:
    """Initialises a named child and returns ``(params, state, output_spec)``."""
    with scope(name):
        params, state = layer.init(child_key(key, name), x)
        out = output_spec(layer, params, state, x)
    return params, state, out


def apply_child(name: str, layer: Layer, params: Params, state: State, x: Any, key, train):
    """Applies a named child inside its path scope; records it when a summary asks."""
    recorder = _RECORDER.get()
    with scope(name):
        if recorder is not None:  # reserve the row now so parents precede their children
            row = len(recorder)
            recorder.append(None)
        y, new_state = layer.apply(params, state, x, key=child_key(key, name), train=train)
        if recorder is not None:
            recorder[row] = (
                current_path(),
                layer,
                spec_of(x),
                spec_of(y),
                spec_of(params),
                spec_of(state),
            )
    return y, new_state


_UNROLL_LOOPS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "nnfun_unroll_loops", default=False
)


def loops_unrolled() -> bool:
    """Whether layers should trace their loops unrolled (see :func:`unrolling_loops`)."""
    return _UNROLL_LOOPS.get()


@contextlib.contextmanager
def unrolling_loops():
    """Within, ``Stack`` and ``RNN`` trace their ``lax.scan`` fully unrolled.

    XLA's cost analysis counts a loop body once, whatever its trip count;
    :func:`nnfun.summary` lowers each layer inside this context so that the
    FLOPs of a Stack count every copy and those of an RNN every time step.
    """
    token = _UNROLL_LOOPS.set(True)
    try:
        yield
    finally:
        _UNROLL_LOOPS.reset(token)


@contextlib.contextmanager
def recording():
    """Collects ``(path, layer, in_spec, out_spec, params, state)`` of every child applied."""
    rows: list = []
    token = _RECORDER.set(rows)
    try:
        yield rows
    finally:
        _RECORDER.reset(token)


def init_shapes(layer: Layer, x: Any, key: jax.Array | None = None) -> tuple[Params, State]:
    """Abstract ``init``: the params and state as ``ShapeDtypeStruct`` trees, no memory used.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> params, _ = nf.init_shapes(nf.Dense(3), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> params["kernel"].shape
        (4, 3)
    """
    key = jax.random.key(0) if key is None else key
    spec = spec_of(x)
    return jax.eval_shape(lambda k: layer.init(k, spec), key)


def require_key(layer: Layer, key: jax.Array | None) -> jax.Array:
    """Returns ``key`` or raises the error a user needs when it is missing in training."""
    if key is None:
        raise layer_error(
            layer,
            "train=True needs a random key for this layer, but key=None was given. "
            "Pass one: model.apply(params, state, x, key=jax.random.key(0), train=True).",
        )
    return key
