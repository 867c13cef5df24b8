"""The position-wise feed-forward network of transformer blocks."""

from __future__ import annotations

from typing import Any

import jax

from ..core._children import apply_child, init_child
from ..core._layer import Layer, Params, State, layer_error
from ._dense import Dense
from ._dropout import Dropout

#: Activations of :class:`FeedForward`: name -> function (``swiglu`` is gated).
FEEDFORWARD_ACTIVATIONS = {
    "gelu": lambda h: jax.nn.gelu(h, approximate=False),
    "gelu_tanh": lambda h: jax.nn.gelu(h, approximate=True),
    "relu": jax.nn.relu,
    "swiglu": jax.nn.silu,
}


class FeedForward(Layer):
    """``Dense(hidden) -> activation -> dropout -> Dense(d)``, applied at every position.

    With ``activation="swiglu"`` the hidden layer is gated (Shazeer 2020):
    ``silu(x @ gate) * (x @ hidden)``, with a third projection ``gate``.

    Args:
        hidden_features: width of the hidden layer, any positive int.
        activation: ``"gelu"`` (exact, PyTorch's ``"gelu"``), ``"gelu_tanh"`` (the
            tanh approximation, GPT-2's), ``"relu"`` or ``"swiglu"``.
        dropout: dropout rate after the activation (in training).
        use_bias: biases in the projections.

    Shapes: ``(..., d) -> (..., d)``. Params: ``hidden``, ``out`` (and ``gate``),
    each ``{"kernel", "bias"}``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> ff = nf.FeedForward(hidden_features=10, activation="swiglu")
        >>> params, state = ff.init(jax.random.key(0), jnp.zeros((2, 3, 8)))
        >>> sorted(params), params["hidden"]["kernel"].shape
        (['gate', 'hidden', 'out'], (8, 10))
        >>> ff.apply(params, state, jnp.ones((2, 3, 8)))[0].shape
        (2, 3, 8)
    """

    hidden_features: int
    activation: str = "gelu"
    dropout: float = 0.0
    use_bias: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.hidden_features, int) or self.hidden_features < 1:
            raise ValueError(
                f"FeedForward hidden_features must be a positive int, got {self.hidden_features!r}"
            )
        if self.activation not in FEEDFORWARD_ACTIVATIONS:
            raise ValueError(
                f"FeedForward activation must be one of {sorted(FEEDFORWARD_ACTIVATIONS)}, got "
                f"{self.activation!r}"
            )
        Dropout(self.dropout)

    def _layers(self, width: int) -> dict[str, Layer]:
        hidden = Dense(self.hidden_features, self.use_bias)
        layers: dict[str, Layer] = {"hidden": hidden, "out": Dense(width, self.use_bias)}
        if self.activation == "swiglu":
            layers["gate"] = hidden
        return layers

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        if len(x.shape) < 2:
            raise layer_error(self, f"expected (..., features), got shape {tuple(x.shape)}")
        params: Params = {}
        layers = self._layers(x.shape[-1])
        for name in ("hidden", "gate"):
            if name in layers:
                params[name], _, h = init_child(name, layers[name], key, x)
        params["out"], _, _ = init_child("out", layers["out"], key, h)
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
        layers = self._layers(x.shape[-1])

        def run(name: str, h: jax.Array) -> jax.Array:
            return apply_child(name, layers[name], params[name], {}, h, key, train)[0]

        h = FEEDFORWARD_ACTIVATIONS[self.activation](run(self._first, x))
        if self.activation == "swiglu":
            h = h * run("hidden", x)
        h, _ = apply_child("dropout", Dropout(self.dropout), {}, {}, h, key, train)
        return run("out", h), state

    @property
    def _first(self) -> str:
        return "gate" if self.activation == "swiglu" else "hidden"
