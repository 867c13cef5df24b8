"""Dense (fully connected) layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error


class Dense(Layer):
    """``y = x @ kernel + bias`` over the last axis.

    Inputs of any rank are flattened to 2-D for the product (one matrix
    multiply, which XLA:CPU differentiates much faster than a batched one).

    Args:
        features: output width.
        use_bias: add a bias.
        kernel_init: initializer name or ``jax.nn.initializers`` function for the
            ``(in, features)`` kernel.
        bias_init: the same for the ``(features,)`` bias.

    Shapes: ``(..., in) -> (..., features)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> params, state = nf.Dense(3).init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> params["kernel"].shape, params["bias"].shape
        ((4, 3), (3,))
    """

    features: int
    use_bias: bool = True
    kernel_init: str | Callable[..., Any] = "lecun_normal"
    bias_init: str | Callable[..., Any] = "zeros"

    def __post_init__(self) -> None:
        if not isinstance(self.features, int) or self.features < 1:
            raise ValueError(f"Dense features must be a positive int, got {self.features!r}")
        get_initializer(self.kernel_init, "Dense kernel_init")
        get_initializer(self.bias_init, "Dense bias_init")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        if len(x.shape) < 1:
            raise layer_error(self, f"expected an input with a feature axis, got shape {x.shape}")
        dtype = jnp.float32
        kernel_key, bias_key = jax.random.split(key)
        params = {
            "kernel": get_initializer(self.kernel_init)(
                kernel_key, (x.shape[-1], self.features), dtype
            )
        }
        if self.use_bias:
            params["bias"] = get_initializer(self.bias_init)(bias_key, (self.features,), dtype)
        return params, {}

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
        bias_shape = params["bias"].shape if self.use_bias else (self.features,)
        if kernel.ndim != 2 or kernel.shape[1] != self.features or bias_shape != (self.features,):
            raise layer_error(
                self,
                f"expected a kernel (in, {self.features}) and a bias ({self.features},) for "
                f"features={self.features}, got kernel {tuple(kernel.shape)} and bias "
                f"{tuple(bias_shape)}. The params come from a layer of another width: "
                "re-run init, or match the layer's configuration to the checkpoint.",
            )
        if x.ndim < 1 or x.shape[-1] != kernel.shape[0]:
            raise layer_error(
                self,
                f"expected input (..., {kernel.shape[0]}) to match the kernel "
                f"{kernel.shape}, got {x.shape}. Re-run init with this input shape.",
            )
        y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel)
        if self.use_bias:
            y = y + params["bias"][None, :]
        return y.reshape(*x.shape[:-1], self.features), state
