"""Padding masks from the ``mask`` / ``lengths`` extras, checked once for every layer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._layer import Layer, layer_error


def concrete(value: Any) -> np.ndarray | None:
    """``value`` as a NumPy array, or None while it is traced (or only a spec).

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.core._masks import concrete
        >>> concrete(jnp.array([1, 2])).tolist()
        [1, 2]
    """
    if isinstance(value, jax.ShapeDtypeStruct):
        return None
    try:
        return np.asarray(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def sequence_mask(
    layer: Layer, extras: dict[str, Any], batch: int, time: int, prefix: str = ""
) -> jax.Array | None:
    """The ``(batch, time)`` padding mask that ``extras`` give, True at real steps.

    Reads ``extras[prefix + "mask"]`` (bools) or ``extras[prefix + "lengths"]``
    (ints: steps ``t < lengths[b]`` are real), at most one of them; returns None
    when neither is given, or when the lengths are only a spec (at ``init``).
    Lengths known eagerly must lie in ``[1, time]``; under ``jit`` they are not
    checked.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> from nnfun.core._masks import sequence_mask
        >>> sequence_mask(nf.Dense(1), {"lengths": jnp.array([1, 3])}, 2, 3).tolist()
        [[True, False, False], [True, True, True]]
    """
    mask_name, lengths_name = f"{prefix}mask", f"{prefix}lengths"
    if mask_name in extras and lengths_name in extras:
        raise layer_error(layer, f"give either '{mask_name}' or '{lengths_name}', not both")
    if lengths_name in extras:
        return _from_lengths(layer, extras[lengths_name], lengths_name, batch, time)
    if mask_name not in extras:
        return None
    mask = extras[mask_name]
    if tuple(jnp.shape(mask)) not in ((batch, time), (1, time)) or mask.dtype != jnp.bool_:
        raise layer_error(
            layer,
            f"expected '{mask_name}' of bools shaped ({batch}, {time}), True at real steps; "
            f"got {mask.dtype} {tuple(jnp.shape(mask))}. Fix: {mask_name} = jnp.arange("
            f"{time}) < {lengths_name}[:, None], or pass '{lengths_name}'.",
        )
    return None if isinstance(mask, jax.ShapeDtypeStruct) else mask


def _from_lengths(layer: Layer, lengths: Any, name: str, batch: int, time: int) -> jax.Array | None:
    if tuple(jnp.shape(lengths)) != (batch,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise layer_error(
            layer,
            f"expected '{name}' of ints shaped ({batch},), got {lengths.dtype} "
            f"{tuple(jnp.shape(lengths))}",
        )
    values = concrete(lengths)
    if values is not None and values.size and (values.min() < 1 or values.max() > time):
        bad = sorted({int(v) for v in values if not 1 <= v <= time})
        raise layer_error(
            layer,
            f"'{name}' must lie in [1, {time}] (the number of steps), got {bad}. Fix: "
            "count the real steps of each sequence, at least 1 and at most the padded length.",
        )
    if isinstance(lengths, jax.ShapeDtypeStruct):
        return None
    return jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]
