"""The layer contract.

A layer is a frozen, hashable dataclass of hyperparameters. It holds no arrays.

    params, state = layer.init(key, x_spec)        # x_spec: ShapeDtypeStruct or array
    y, state = layer.apply(params, state, x, *, key=None, train=False)

``params`` and ``state`` are nested dicts of arrays (``{}`` when there are none).
Both methods are pure, so ``jax.jit``, ``jax.grad``, ``jax.vmap`` and
``jax.lax.scan`` apply to them directly. A child's key is its parent's key folded
with a CRC32 of the child's name, so adding a layer never changes the others.

Several inputs. ``x`` is the main input, or a dict ``{"inputs": main, name:
extra, ...}`` holding the main input and named extras. An extra has one name
and one meaning in every layer (:data:`EXTRAS`); a layer lists the extras it
reads in :attr:`Layer.extras`, and combinators pass each child the extras it
reads (a layer that reads none gets the bare main input), so a ``mask`` given
once reaches every block of a ``Sequential`` or ``Stack``. No extra is named
``key``: that word is the random key.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform, overload

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]
State = dict[str, Any]

#: The extra inputs of the layer contract: each name means the same in every layer.
EXTRAS: dict[str, str] = {
    "mask": "(batch, time) bool, True at the real (unpadded) steps of the main input",
    "lengths": "(batch,) int: steps t < lengths[b] are real; the same as a mask",
    "attention_mask": "bool, broadcastable to (batch, heads, query_time, key_time)",
    "memory": "(batch, memory_time, features): what cross-attention attends to",
    "memory_mask": "(batch, memory_time) bool, True at the real steps of the memory",
    "memory_lengths": "(batch,) int: memory steps t < memory_lengths[b] are real",
    "offset": "int: the position of the main input's first step (decoding)",
    "carry": "a recurrent layer's initial carry",
    "decoder_inputs": "(batch, target_time) ids an encoder-decoder's decoder reads",
    "decoder_mask": "(batch, target_time) bool, True at the real steps of decoder_inputs",
    "decoder_lengths": "(batch,) int: steps t < decoder_lengths[b] of decoder_inputs are real",
    "segments": "(n,) int: the bag (output row) of each id of a flat main input",
    "weights": "float, shaped like the main input's ids: one weight per id (embedding bags)",
    "token_types": "int, shaped like the ids of the main input: each token's segment (BERT)",
}

_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("nnfun_path", default=())


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
def scope(name: str) -> Iterator[None]:
    """Enters the child ``name`` of the current path (used by combinators).

    An exception raised inside keeps its type; the innermost scope adds a note
    naming the layer path (``LayerError`` names it in its message already).
    """
    token = _PATH.set(_PATH.get() + (name,))
    try:
        yield
    except Exception as e:
        if not isinstance(e, LayerError) and not getattr(e, "_nnfun_path_noted", False):
            e.add_note(f"(raised in the nnfun layer at '{current_path()}')")
            e._nnfun_path_noted = True  # type: ignore[attr-defined]
        raise
    finally:
        _PATH.reset(token)


@overload
def as_key(key: None) -> None: ...
@overload
def as_key(key: jax.Array | int | np.integer[Any]) -> jax.Array: ...
def as_key(key: Any) -> jax.Array | None:
    """A PRNG key from ``key``: a key passes through, an int seed becomes ``jax.random.key``.

    Example:
        >>> import jax
        >>> from nnfun.core._layer import as_key
        >>> bool((jax.random.key_data(as_key(3)) == jax.random.key_data(jax.random.key(3))).all())
        True
    """
    if key is None or (isinstance(key, jax.Array) and _is_key(key)):
        return key
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(key)
    raise TypeError(
        f"expected a PRNG key (jax.random.key(seed)) or an int seed, got "
        f"{type(key).__name__} {getattr(key, 'dtype', '')} {getattr(key, 'shape', '')}. "
        "Fix: key=jax.random.key(0)."
    )


def _is_key(a: jax.Array) -> bool:
    # New-style typed keys, or the legacy uint32[2] raw keys.
    return jnp.issubdtype(a.dtype, jax.dtypes.prng_key) or (
        a.dtype == jnp.uint32 and a.shape[-1:] == (2,)
    )


@overload
def child_key(key: None, name: str) -> None: ...
@overload
def child_key(key: jax.Array | int, name: str) -> jax.Array: ...
def child_key(key: jax.Array | int | None, name: str) -> jax.Array | None:
    """Derives a child's key from its parent's key and its name (stable across runs)."""
    key = as_key(key)
    if key is None:
        return None
    return jax.random.fold_in(key, zlib.crc32(name.encode()))


def spec_of(x: Any) -> Any:
    """Maps every array (or spec) leaf of ``x`` to a ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), x)


# dataclass_transform tells type checkers what __init_subclass__ does at run time:
# every subclass is a frozen dataclass whose fields are its annotated attributes.
@dataclass_transform(frozen_default=True)
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

    A layer that reads extra inputs (:data:`EXTRAS`) names them in ``extras``
    and receives ``{"inputs": x, name: value, ...}`` holding those it reads.
    Errors raised inside a child keep their type and gain a note naming its path.
    """

    if TYPE_CHECKING:  # set by dataclasses at run time; makes dataclasses.fields(layer) check
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(frozen=True, repr=True, eq=True)(cls)

    @property
    def extras(self) -> frozenset[str]:
        """Names of the extra inputs (:data:`EXTRAS`) this layer or its children read."""
        return frozenset()

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


dataclasses.dataclass(frozen=True)(Layer)


def init_shapes(layer: Layer, x: Any, key: jax.Array | None = None) -> tuple[Params, State]:
    """Abstract ``init``: the params and state as ``ShapeDtypeStruct`` trees, no memory used.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> params, _ = nf.init_shapes(nf.Dense(3), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> params["kernel"].shape
        (4, 3)
    """
    key = jax.random.key(0) if key is None else as_key(key)
    spec = spec_of(x)
    return jax.eval_shape(lambda k: layer.init(k, spec), key)


def require_key(layer: Layer, key: jax.Array | int | None) -> jax.Array:
    """Returns ``key`` (an int seed becomes a key) or raises the error a user needs."""
    if key is None:
        raise layer_error(
            layer,
            "train=True needs a random key for this layer, but key=None was given. "
            "Pass one: model.apply(params, state, x, key=jax.random.key(0), train=True).",
        )
    try:
        return as_key(key)
    except TypeError as e:
        raise TypeError(f"{type(layer).__name__} at '{current_path() or '<root>'}': {e}") from None
