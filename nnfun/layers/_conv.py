"""Convolution: Conv (1-D, 2-D, 3-D, ... by the length of ``kernel_size``) and ConvTranspose.

Channels-last throughout: inputs ``(batch, *spatial, channels)``, kernels
``(*kernel_size, in_channels // groups, features)``, XLA's native layouts.
The helpers here (window tuples, padding) are shared with pooling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp

from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error

Padding = str | tuple[tuple[int, int], ...]


def window_tuple(value: Any, owner: str, field: str) -> tuple[int, ...]:
    """Checks a window (``kernel_size``, pool ``window``): a non-empty tuple of positive ints.

    A bare int is refused rather than guessed: ``3`` could mean ``(3,)`` or
    ``(3, 3)``, and the rank of the window decides the rank of the layer.
    """
    if isinstance(value, int):
        raise ValueError(
            f"{owner} {field} must be a tuple with one entry per spatial axis, got the int "
            f"{value!r}. Fix: pass ({value},) for 1-D or ({value}, {value}) for 2-D."
        )
    window = tuple(value)
    if not window or any(not isinstance(k, int) or k < 1 for k in window):
        raise ValueError(f"{owner} {field} must be a tuple of positive ints, got {value!r}")
    return window


def per_axis(value: Any, rank: int, owner: str, field: str) -> tuple[int, ...]:
    """An int (same on every spatial axis) or a tuple of ``rank`` positive ints."""
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(
            f"{owner} {field} must be a positive int or a tuple of {rank} positive ints "
            f"(one per spatial axis), got {value!r}"
        )
    return values


def normalise_padding(padding: Any, rank: int, owner: str, causal_ok: bool) -> Padding:
    """``"SAME"``, ``"VALID"``, ``"CAUSAL"`` (when allowed) or ``rank`` ``(low, high)`` pairs."""
    if isinstance(padding, str):
        padding = padding.upper()
        allowed = ("SAME", "VALID", "CAUSAL") if causal_ok else ("SAME", "VALID")
        if padding not in allowed:
            raise ValueError(f"{owner} padding must be one of {allowed} or pairs, got {padding!r}")
        return padding
    pairs = tuple(tuple(p) for p in padding)
    if len(pairs) != rank or any(
        len(p) != 2 or not all(isinstance(v, int) for v in p) for p in pairs
    ):
        raise ValueError(
            f"{owner} padding pairs must be {rank} (low, high) int pairs, got {padding!r}"
        )
    return pairs


def explicit_padding(
    padding: Padding, sizes: Sequence[int], windows: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Resolves a padding to ``(low, high)`` pairs for inputs of spatial ``sizes``.

    ``windows`` are the effective (dilated) window sizes. SAME puts the odd
    element of padding at the end, as XLA and TensorFlow do.
    """
    if padding == "VALID":
        return tuple((0, 0) for _ in sizes)
    if padding == "CAUSAL":
        return tuple((w - 1, 0) for w in windows)
    if padding == "SAME":
        pairs = []
        for n, w, s in zip(sizes, windows, strides, strict=True):
            total = max((-(-n // s) - 1) * s + w - n, 0)
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    assert not isinstance(padding, str), f"unnormalised padding {padding!r}"
    return padding


def check_rank(layer: Layer, x: Any, rank: int, what: str) -> None:
    """Raises a layer error unless ``x`` is ``(batch, *spatial[rank], channels)``."""
    if len(x.shape) != rank + 2:
        raise layer_error(
            layer,
            f"expected input (batch, {rank} spatial axes, channels), i.e. {rank + 2} axes, "
            f"got shape {tuple(x.shape)}. Fix: a {rank}-D {what} needs inputs of rank "
            f"{rank + 2}; add the batch/channel axis or use a window of length {len(x.shape) - 2}.",
        )


def check_window_fits(
    layer: Layer,
    x: Any,
    windows: Sequence[int],
    pads: Sequence[tuple[int, int]],
    what: str,
) -> None:
    """Raises a layer error when a window is larger than the padded input along some axis."""
    sizes = x.shape[1:-1]
    for axis, (n, w, (lo, hi)) in enumerate(zip(sizes, windows, pads, strict=True)):
        if n + lo + hi < w:
            raise layer_error(
                layer,
                f"the {what} window ({w} along spatial axis {axis}, after dilation) is larger "
                f"than the padded input ({n} + {lo} + {hi}) of shape {tuple(x.shape)}. "
                'Fix: use padding="SAME", a smaller window, or a larger input.',
            )


def dimension_numbers(rank: int) -> jax.lax.ConvDimensionNumbers:
    """Channels-last numbers: input/output ``(N, *spatial, C)``, kernel ``(*spatial, I, O)``."""
    spatial = tuple(range(1, rank + 1))
    return jax.lax.ConvDimensionNumbers(
        lhs_spec=(0, rank + 1, *spatial),
        rhs_spec=(rank + 1, rank, *range(rank)),
        out_spec=(0, rank + 1, *spatial),
    )


class _ConvBase(Layer):
    """Fields and parameters shared by Conv and ConvTranspose (documented on each)."""

    features: int
    kernel_size: tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str | tuple[tuple[int, int], ...] = "SAME"
    kernel_dilation: int | tuple[int, ...] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: str | Callable[..., Any] = "lecun_normal"
    bias_init: str | Callable[..., Any] = "zeros"

    def _check_common(self, owner: str) -> None:
        object.__setattr__(
            self, "kernel_size", window_tuple(self.kernel_size, owner, "kernel_size")
        )
        rank = len(self.kernel_size)
        object.__setattr__(self, "strides", per_axis(self.strides, rank, owner, "strides"))
        dilation = per_axis(self.kernel_dilation, rank, owner, "kernel_dilation")
        object.__setattr__(self, "kernel_dilation", dilation)
        if not isinstance(self.features, int) or self.features < 1:
            raise ValueError(f"{owner} features must be a positive int, got {self.features!r}")
        get_initializer(self.kernel_init, f"{owner} kernel_init")
        get_initializer(self.bias_init, f"{owner} bias_init")
        groups = self.feature_group_count
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"{owner} feature_group_count must be a positive int, got {groups!r}")

    @property
    def _groups(self) -> int:
        return self.feature_group_count

    # __post_init__ stores strides and kernel_dilation as tuples, one entry per spatial axis.
    @property
    def _strides(self) -> tuple[int, ...]:
        return cast(tuple[int, ...], self.strides)

    @property
    def _dilation(self) -> tuple[int, ...]:
        return cast(tuple[int, ...], self.kernel_dilation)

    def _windows(self) -> tuple[int, ...]:
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self._dilation))

    def _check_channels(self, channels: int, kernel_in: int | None = None) -> None:
        groups = self._groups
        if channels % groups or self.features % groups:
            raise layer_error(
                self,
                f"feature_group_count={groups} must divide both the input channels "
                f"({channels}) and features ({self.features}). Fix: choose a common divisor.",
            )
        if kernel_in is not None and channels != kernel_in * groups:
            raise layer_error(
                self,
                f"expected {kernel_in * groups} input channels (kernel input axis {kernel_in} "
                f"x {groups} groups), got {channels}. Fix: re-run init with this input shape.",
            )

    def _make_params(self, key: jax.Array, channels: int) -> Params:
        kernel_key, bias_key = jax.random.split(key)
        shape = (*self.kernel_size, channels // self._groups, self.features)
        params = {"kernel": get_initializer(self.kernel_init)(kernel_key, shape, jnp.float32)}
        if self.use_bias:
            params["bias"] = get_initializer(self.bias_init)(
                bias_key, (self.features,), jnp.float32
            )
        return params

    def _add_bias(self, params: Params, y: jax.Array) -> jax.Array:
        if not self.use_bias:
            return y
        return y + params["bias"].reshape((1,) * (y.ndim - 1) + (-1,)).astype(y.dtype)


class Conv(_ConvBase):
    """An N-D convolution (cross-correlation, as in every DL library) over channels-last input.

    The number of spatial axes is ``len(kernel_size)``: ``(3,)`` is 1-D,
    ``(3, 3)`` 2-D, ``(3, 3, 3)`` 3-D. A bare int ``kernel_size`` is an error
    (it would hide the rank). Output size per axis: ``ceil(n / stride)`` for
    SAME, ``ceil((n - window + 1) / stride)`` for VALID, where ``window =
    (k - 1) * dilation + 1``.

    Args:
        features: output channels.
        kernel_size: tuple of window sizes, one per spatial axis.
        strides: int or tuple, step of the window.
        padding: ``"SAME"``, ``"VALID"``, ``"CAUSAL"`` (1-D only: pad
            ``window - 1`` on the left, so output ``t`` sees inputs ``<= t``), or
            ``(low, high)`` pairs, one per spatial axis.
        kernel_dilation: int or tuple, spacing of kernel taps (atrous convolution).
        feature_group_count: split channels into this many groups, each
            convolved separately (``= in channels`` is depthwise).
        use_bias: add a per-feature bias.
        kernel_init: initializer for the kernel (fans account for the window).
        bias_init: initializer for the bias.

    Shapes: ``(batch, *spatial, in) -> (batch, *spatial_out, features)``;
    kernel ``(*kernel_size, in // feature_group_count, features)``, bias ``(features,)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> conv = nf.Conv(8, kernel_size=(3, 3), strides=2)
        >>> params, state = conv.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))
        >>> params["kernel"].shape, conv.apply(params, state, jnp.zeros((1, 28, 28, 3)))[0].shape
        ((3, 3, 3, 8), (1, 14, 14, 8))
    """

    def __post_init__(self) -> None:
        self._check_common("Conv")
        rank = len(self.kernel_size)
        object.__setattr__(
            self, "padding", normalise_padding(self.padding, rank, "Conv", causal_ok=True)
        )
        if self.padding == "CAUSAL" and rank != 1:
            raise ValueError(
                f"Conv padding='CAUSAL' is for 1-D convolution, got kernel_size {self.kernel_size}"
            )

    def _pads(self, x: Any) -> tuple[tuple[int, int], ...]:
        check_rank(self, x, len(self.kernel_size), "convolution")
        return explicit_padding(self.padding, x.shape[1:-1], self._windows(), self._strides)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        check_window_fits(self, x, self._windows(), self._pads(x), "kernel")
        self._check_channels(x.shape[-1])
        return self._make_params(key, x.shape[-1]), {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        kernel = params["kernel"]
        pads = self._pads(x)
        check_window_fits(self, x, self._windows(), pads, "kernel")
        self._check_channels(x.shape[-1], kernel.shape[-2])
        dtype = jnp.result_type(x.dtype, kernel.dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=self._strides,
            padding=pads,
            rhs_dilation=self._dilation,
            dimension_numbers=dimension_numbers(len(self.kernel_size)),
            feature_group_count=self.feature_group_count,
        )
        return self._add_bias(params, y), state


class ConvTranspose(_ConvBase):
    """A transposed ("fractionally strided") N-D convolution, channels-last.

    Defined as a scatter-add: every input position ``i`` adds
    ``x[i] @ kernel[j]`` to output position ``stride * i + dilation * j``
    (the full output has ``(n - 1) * stride + window`` positions), then
    ``padding`` crops it:

    - ``"VALID"``: no cropping, size ``(n - 1) * stride + window``.
    - ``"SAME"``: size ``n * stride``; this is exactly the transpose (the
      input gradient) of a SAME ``Conv`` with the same kernel and stride.
    - ``(low, high)`` pairs: crop that many positions from each end of the
      full output (negative values add zeros), like PyTorch's ``padding``.

    Args:
        features: output channels.
        kernel_size: tuple of window sizes, one per spatial axis (a bare int is an error).
        strides: int or tuple: the upsampling factor.
        padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` crop pairs.
        kernel_dilation: int or tuple, spacing of kernel taps.
        feature_group_count: split channels into this many groups: input
            channel group ``g`` feeds only output channel group ``g``
            (PyTorch's ``groups``).
        use_bias: add a per-feature bias.
        kernel_init: initializer for the kernel.
        bias_init: initializer for the bias.

    Shapes: ``(batch, *spatial, in) -> (batch, *spatial_out, features)``;
    kernel ``(*kernel_size, in // feature_group_count, features)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> up = nf.ConvTranspose(4, kernel_size=(3, 3), strides=2)
        >>> params, state = up.init(jax.random.key(0), jnp.zeros((1, 7, 7, 8)))
        >>> up.apply(params, state, jnp.zeros((1, 7, 7, 8)))[0].shape
        (1, 14, 14, 4)
    """

    def __post_init__(self) -> None:
        self._check_common("ConvTranspose")
        object.__setattr__(
            self,
            "padding",
            normalise_padding(self.padding, len(self.kernel_size), "ConvTranspose", False),
        )

    def _crops(self) -> tuple[tuple[int, int], ...]:
        if self.padding == "VALID":
            return tuple((0, 0) for _ in self.kernel_size)
        if self.padding == "SAME":
            # Full size (n-1)*s + w, target n*s: crop w - s, the odd one at the end,
            # mirroring where SAME Conv puts its padding.
            crops = [w - s for w, s in zip(self._windows(), self._strides)]
            return tuple((max(c, 0) // 2, c - max(c, 0) // 2) for c in crops)
        assert not isinstance(self.padding, str), f"unnormalised padding {self.padding!r}"
        return self.padding

    def _check_input(self, x: Any) -> None:
        check_rank(self, x, len(self.kernel_size), "transposed convolution")
        for axis, (n, w, s, (lo, hi)) in enumerate(
            zip(x.shape[1:-1], self._windows(), self._strides, self._crops())
        ):
            if (n - 1) * s + w - lo - hi < 1:
                raise layer_error(
                    self,
                    f"cropping ({lo}, {hi}) along spatial axis {axis} leaves no output for "
                    f"input shape {tuple(x.shape)}. Fix: crop less.",
                )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check_input(x)
        self._check_channels(x.shape[-1])
        return self._make_params(key, x.shape[-1]), {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        kernel = params["kernel"]
        self._check_input(x)
        self._check_channels(x.shape[-1], kernel.shape[-2])
        dtype = jnp.result_type(x.dtype, kernel.dtype)
        rank = len(self.kernel_size)
        # Scatter-add == correlation of the stride-dilated input with the flipped
        # kernel, padded by window - 1 minus the crop on each side.
        flipped = jnp.flip(kernel, axis=tuple(range(rank))).astype(dtype)
        pads = tuple(
            (w - 1 - lo, w - 1 - hi) for w, (lo, hi) in zip(self._windows(), self._crops())
        )
        y = jax.lax.conv_general_dilated(
            x.astype(dtype),
            flipped,
            window_strides=(1,) * rank,
            padding=pads,
            lhs_dilation=self._strides,
            rhs_dilation=self._dilation,
            dimension_numbers=dimension_numbers(rank),
            # Groups carry over: the flipped kernel of group g still maps input
            # channel group g to output channel group g.
            feature_group_count=self.feature_group_count,
        )
        return self._add_bias(params, y), state
