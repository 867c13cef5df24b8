"""Position information: sinusoidal and learned absolute encodings, rotary embeddings.

The absolute encodings add a ``(time, features)`` table to ``(batch, time,
features)`` inputs. For step-by-step decoding the input may carry the
``offset`` extra, ``{"inputs": x, "offset": n}``: position ``t`` of ``x`` is
then ``n + t`` (``n`` may be a traced int, e.g. a KV cache's index).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core._children import split_inputs
from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error
from ..core._masks import concrete

_OFFSET = frozenset({"offset"})
#: The frequency scalings of :class:`RotaryPositions` (None: unscaled).
ROPE_SCALINGS = (None, "linear", "llama3")


def _unpack(layer: Layer, x: Any) -> tuple[jax.Array, Any]:
    x, extras = split_inputs(layer, x)
    if len(x.shape) != 3:
        raise layer_error(
            layer, f"expected inputs (batch, time, features), got shape {tuple(x.shape)}"
        )
    return x, extras.get("offset", 0)


def _check_length(layer: Layer, length: int, offset: Any, max_length: int | None) -> None:
    start = concrete(offset)
    end = length + (0 if start is None else int(start))
    if max_length is not None and end > max_length:
        raise layer_error(
            layer,
            f"positions up to {end} requested but the table holds max_length={max_length}. "
            f"Fix: build the layer with max_length >= {end}, or feed shorter sequences.",
        )


def sinusoidal_table(positions: jax.Array, features: int, base: float = 10000.0) -> jax.Array:
    """Encodings of ``positions`` (shape ``(time,)``): ``(time, features)``.

    Column ``2i`` is ``sin(p / base**(2i / features))``, column ``2i + 1`` its cosine.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.layers._position import sinusoidal_table
        >>> sinusoidal_table(jnp.arange(2), 4)[0].tolist()
        [0.0, 1.0, 0.0, 1.0]
    """
    half = (features + 1) // 2
    inv_freq = base ** (-2.0 * jnp.arange(half, dtype=jnp.float32) / features)
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
    table = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(len(positions), -1)
    return table[:, :features]


class SinusoidalPositions(Layer):
    """Adds the fixed sine/cosine encodings of "Attention Is All You Need".

    Args:
        max_length: the longest sequence accepted (positions ``0..max_length-1``).
        base: the wavelength scale.

    Shapes: ``(batch, time, features) -> (batch, time, features)``; no params.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> pos = nf.SinusoidalPositions(max_length=16)
        >>> y, _ = pos.apply({}, {}, jnp.zeros((1, 3, 4)))
        >>> y[0, 0].tolist()
        [0.0, 1.0, 0.0, 1.0]
    """

    max_length: int = 2048
    base: float = 10000.0

    extras = _OFFSET

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, offset = _unpack(self, x)
        _check_length(self, x.shape[1], offset, self.max_length)
        return {}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, offset = _unpack(self, x)
        _check_length(self, x.shape[1], offset, self.max_length)
        positions = offset + jnp.arange(x.shape[1])
        table = sinusoidal_table(positions, x.shape[2], self.base).astype(x.dtype)
        return x + table[None, :, :], state


class LearnedPositions(Layer):
    """Adds a learned vector per absolute position (GPT-2 style).

    Args:
        max_length: rows of the table: the longest sequence accepted.
        embedding_init: initializer of the ``(max_length, features)`` table
            (default ``"normal"``: standard deviation 0.01).

    Shapes: ``(batch, time, features) -> (batch, time, features)``; param
    ``embedding (max_length, features)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> pos = nf.LearnedPositions(max_length=16)
        >>> params, state = pos.init(jax.random.key(0), jnp.zeros((1, 3, 4)))
        >>> params["embedding"].shape, pos.apply(params, state, jnp.zeros((2, 3, 4)))[0].shape
        ((16, 4), (2, 3, 4))
    """

    max_length: int
    embedding_init: str | Callable[..., Any] = "normal"

    extras = _OFFSET

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"LearnedPositions max_length must be >= 1, got {self.max_length!r}")
        get_initializer(self.embedding_init, "LearnedPositions embedding_init")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, offset = _unpack(self, x)
        _check_length(self, x.shape[1], offset, self.max_length)
        table = get_initializer(self.embedding_init)(
            key, (self.max_length, x.shape[2]), jnp.float32
        )
        return {"embedding": table}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, offset = _unpack(self, x)
        table = params["embedding"]
        _check_length(self, x.shape[1], offset, table.shape[0])
        if table.shape[1] != x.shape[2]:
            raise layer_error(
                self, f"expected features {table.shape[1]} (the table), got {x.shape[2]}"
            )
        rows = jax.lax.dynamic_slice_in_dim(table, offset, x.shape[1], axis=0)
        return x + rows[None, :, :].astype(x.dtype), state


class RotaryPositions(Layer):
    """Rotary position embedding (RoPE) of queries or keys, ``(batch, time, heads, head_dim)``.

    Feature ``i`` and feature ``i + head_dim/2`` form a pair that is rotated by the
    angle ``p * base**(-2i / head_dim)`` at position ``p``, so the dot product of a
    rotated query and key depends only on their relative position.
    :class:`nnfun.MultiHeadAttention` applies it when given ``rotary=``.

    Frequency scaling stretches the context a model was trained on (the
    ``rope_scaling`` of Hugging Face configs): ``"linear"`` divides every
    frequency by ``factor``; ``"llama3"`` (Llama 3.1) divides the low
    frequencies (wavelengths above ``original_max_length / low_freq_factor``)
    by ``factor``, keeps the high ones (wavelengths below
    ``original_max_length / high_freq_factor``) and blends in between.

    Args:
        base: the wavelength scale.
        max_length: if set, the longest sequence accepted.
        scaling: None, ``"linear"`` or ``"llama3"``.
        factor: the scaling factor (``scaling`` set).
        low_freq_factor: ``"llama3"`` only.
        high_freq_factor: ``"llama3"`` only.
        original_max_length: ``"llama3"`` only: the context length before scaling.

    Shapes: ``(batch, time, heads, head_dim) -> same``; ``head_dim`` even; no params.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> x = jnp.ones((1, 3, 2, 4))
        >>> y, _ = nf.RotaryPositions().apply({}, {}, x)
        >>> y.shape, y[0, 0].tolist() == x[0, 0].tolist()  # position 0 is not rotated
        ((1, 3, 2, 4), True)
    """

    base: float = 10000.0
    max_length: int | None = None
    scaling: str | None = None
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_length: int = 8192

    extras = _OFFSET

    def __post_init__(self) -> None:
        if self.scaling not in ROPE_SCALINGS:
            raise ValueError(
                f"RotaryPositions scaling must be one of {ROPE_SCALINGS}, got {self.scaling!r}"
            )
        if self.scaling is not None and not self.factor > 0:
            raise ValueError(f"RotaryPositions factor must be > 0, got {self.factor!r}")
        if self.scaling == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError(
                f"RotaryPositions high_freq_factor ({self.high_freq_factor}) must exceed "
                f"low_freq_factor ({self.low_freq_factor})"
            )

    def inverse_frequencies(self, half: int) -> jax.Array:
        """The ``half`` rotation frequencies (radians per position), scaled, in float32."""
        inv_freq = self.base ** (-jnp.arange(half, dtype=jnp.float32) / half)
        if self.scaling == "linear":
            return inv_freq / self.factor
        if self.scaling == "llama3":
            wavelength = 2 * np.pi / inv_freq
            low_wavelength = self.original_max_length / self.low_freq_factor
            high_wavelength = self.original_max_length / self.high_freq_factor
            scaled = jnp.where(wavelength > low_wavelength, inv_freq / self.factor, inv_freq)
            smooth = (self.original_max_length / wavelength - self.low_freq_factor) / (
                self.high_freq_factor - self.low_freq_factor
            )
            blended = (1 - smooth) * scaled / self.factor + smooth * scaled
            medium = (wavelength >= high_wavelength) & (wavelength <= low_wavelength)
            return jnp.where(medium, blended, scaled)
        return inv_freq

    def _check(self, x: Any, offset: Any = 0) -> None:
        if len(x.shape) != 4 or x.shape[-1] % 2:
            raise layer_error(
                self,
                f"expected (batch, time, heads, head_dim) with an even head_dim, got shape "
                f"{tuple(x.shape)}",
            )
        _check_length(self, x.shape[1], offset, self.max_length)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check(x)
        return {}, {}

    def rotate(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        """Rotates ``x`` ``(batch, time, heads, head_dim)`` for ``positions`` ``(time,)``."""
        half = x.shape[-1] // 2
        inv_freq = self.inverse_frequencies(half)
        angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
        cos = jnp.cos(angles)[None, :, None, :].astype(x.dtype)
        sin = jnp.sin(angles)[None, :, None, :].astype(x.dtype)
        first, second = x[..., :half], x[..., half:]
        return jnp.concatenate([first * cos - second * sin, first * sin + second * cos], -1)

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, extras = split_inputs(self, x)
        offset = extras.get("offset", 0)
        self._check(x, offset)
        return self.rotate(x, offset + jnp.arange(x.shape[1])), state
