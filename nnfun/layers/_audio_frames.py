"""Frame-level audio layers: UtteranceNorm and SpecAugment on ``(batch, frames, features)``.

Both read the ``lengths`` extra in frames (see ``frame_lengths`` of the spectral
layers in ``_audio.py``), so padded frames never enter a statistic or a mask.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import split_inputs
from ..core._layer import Layer, Params, State, layer_error, require_key
from ..core._masks import sequence_mask


def _frames_and_mask(layer: Layer, x: Any) -> tuple[jax.Array, jax.Array | None]:
    inputs, extras = split_inputs(layer, x)
    if len(jnp.shape(inputs)) != 3:
        raise layer_error(
            layer,
            f"expected (batch, frames, features), got shape {tuple(jnp.shape(inputs))}. Fix: "
            "put a spectral layer (nf.MelSpectrogram) before this one.",
        )
    batch, time = inputs.shape[:2]
    return inputs, sequence_mask(layer, extras, batch, time)


class UtteranceNorm(Layer):
    """Normalises each utterance's features to mean 0, variance 1 over its real frames.

    The statistics of each ``(utterance, feature)`` come from the frames the
    ``lengths`` (or ``mask``) extra marks real; padded frames come out as 0.

    Args:
        epsilon: added to the variance.

    Shapes: ``(batch, frames, features)``, or ``{"inputs": ..., "lengths": (batch,)}``;
    unchanged.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> x = jnp.arange(12.0).reshape(2, 3, 2)
        >>> y, _ = nf.UtteranceNorm().apply({}, {}, {"inputs": x, "lengths": jnp.array([3, 2])})
        >>> y[1, :, 0].round(3).tolist()
        [-1.0, 1.0, 0.0]
    """

    epsilon: float = 1e-5

    @property
    def extras(self) -> frozenset[str]:
        return frozenset({"lengths", "mask"})

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        _frames_and_mask(self, x)
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
        inputs, mask = _frames_and_mask(self, x)
        if mask is None:
            mask = jnp.ones(inputs.shape[:2], bool)
        weight = mask[:, :, None].astype(jnp.float32)
        count = jnp.maximum(weight.sum(1, keepdims=True), 1.0)
        values = inputs.astype(jnp.float32)
        mean = (values * weight).sum(1, keepdims=True) / count
        var = (((values - mean) * weight) ** 2).sum(1, keepdims=True) / count
        y = (values - mean) * jax.lax.rsqrt(var + self.epsilon) * weight
        return y.astype(inputs.dtype), state


class SpecAugment(Layer):
    """Time and frequency masking (Park et al., 2019), in training only.

    Each utterance gets ``freq_masks`` bands of ``[0, freq_width]`` features and
    ``time_masks`` spans of ``[0, time_width]`` frames (never more than its real
    frames, placed inside them when ``lengths`` is given) set to ``value``. The
    widths and places are drawn from the layer's key, so a run is reproducible;
    ``train=True`` needs a key. Identity when ``train=False``.

    Args:
        freq_masks, freq_width: number and largest width of the frequency masks.
        time_masks, time_width: number and largest width of the time masks.
        value: what masked entries become (0.0 suits normalised features).

    Shapes: ``(batch, frames, features)``, optionally with ``lengths``; unchanged.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> aug = nf.SpecAugment(freq_masks=1, freq_width=2, time_masks=1, time_width=3)
        >>> y, _ = aug.apply({}, {}, jnp.ones((2, 10, 8)), key=jax.random.key(0), train=True)
        >>> y.shape, bool((y == 1).mean() >= 0.5)
        ((2, 10, 8), True)
    """

    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_width: int = 10
    value: float = 0.0

    def __post_init__(self) -> None:
        counts = (self.freq_masks, self.freq_width, self.time_masks, self.time_width)
        if any(not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"SpecAugment: mask counts and widths must be ints >= 0, got {counts}")

    @property
    def extras(self) -> frozenset[str]:
        return frozenset({"lengths"})

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        _frames_and_mask(self, x)
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
        inputs, mask = _frames_and_mask(self, x)
        if not train:
            return inputs, state
        key = require_key(self, key)
        batch, time, features = inputs.shape
        real = jnp.full((batch,), time) if mask is None else mask.sum(1)
        freq_key, time_key = jax.random.split(key)
        full = jnp.full((batch,), features)
        drop_f = _spans(freq_key, self.freq_masks, self.freq_width, full, features)
        drop_t = _spans(time_key, self.time_masks, self.time_width, real, time)
        drop = drop_t[:, :, None] | drop_f[:, None, :]
        return jnp.where(drop, jnp.asarray(self.value, inputs.dtype), inputs), state


def _spans(key: jax.Array, count: int, width: int, size: jax.Array, axis: int) -> jax.Array:
    """``(batch, axis)`` bools: ``count`` random spans per row, each inside ``[0, size)``."""
    batch = size.shape[0]
    drop = jnp.zeros((batch, axis), bool)
    positions = jnp.arange(axis)[None, :]
    for k in jax.random.split(key, count):
        wk, sk = jax.random.split(k)
        w = jnp.minimum(jax.random.randint(wk, (batch,), 0, width + 1), size)
        start = jnp.floor(jax.random.uniform(sk, (batch,)) * (size - w + 1)).astype(jnp.int32)
        inside = (positions >= start[:, None]) & (positions < (start + w)[:, None])
        drop = drop | inside
    return drop
