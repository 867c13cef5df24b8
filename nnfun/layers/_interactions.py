"""Feature interactions for ranking models: DCN-v2 cross layers and a factorization machine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error


def _check_2d(layer: Layer, x: Any, what: str) -> None:
    if jnp.ndim(x) != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise layer_error(
            layer,
            f"expected float features shaped (batch, {what}), got {getattr(x, 'dtype', '?')} "
            f"{tuple(jnp.shape(x))}. Fix: concatenate the feature embeddings along the last "
            "axis first.",
        )


class CrossNetwork(Layer):
    """DCN-v2 cross layers: ``x_{l+1} = x_0 * (x_l @ W_l + b_l) + x_l``.

    Each layer multiplies the input ``x_0`` elementwise with a linear map of the
    previous layer's output, so layer ``l`` builds feature crosses of degree
    ``l + 1`` (Wang et al. 2021, "DCN V2", equation 1). With ``rank`` set, each
    ``W_l`` is the low-rank product ``down_l @ up_l`` (the paper's
    "mixture-free" low-rank variant), which costs ``2 * features * rank``
    weights instead of ``features ** 2``.

    Args:
        num_layers: number of cross layers (the highest crossing degree minus 1).
        rank: ``None`` for full ``(features, features)`` kernels, else the rank.
        kernel_init: initializer for the kernels (default ``"glorot_uniform"``).

    Shapes: ``(batch, features) -> (batch, features)``; params ``{"0": {"kernel":
    (features, features), "bias": (features,)}, "1": ...}`` (low rank: ``"down"``
    ``(features, rank)`` and ``"up"`` ``(rank, features)`` instead of ``"kernel"``).

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> cross = nf.CrossNetwork(num_layers=2, rank=4)
        >>> params, state = cross.init(jax.random.key(0), jnp.ones((3, 8)))
        >>> cross.apply(params, state, jnp.ones((3, 8)))[0].shape, sorted(params["0"])
        ((3, 8), ['bias', 'down', 'up'])
    """

    num_layers: int = 1
    rank: int | None = None
    kernel_init: str | Callable[..., Any] = "glorot_uniform"

    def __post_init__(self) -> None:
        if not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise ValueError(
                f"CrossNetwork num_layers must be a positive int, got {self.num_layers!r}"
            )
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"CrossNetwork rank must be None or a positive int, got {self.rank!r}")
        get_initializer(self.kernel_init, "CrossNetwork kernel_init")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        _check_2d(self, x, "features")
        width = x.shape[-1]
        init = get_initializer(self.kernel_init)
        params = {}
        for layer in range(self.num_layers):
            k1, k2 = jax.random.split(jax.random.fold_in(key, layer))
            if self.rank is None:
                weights = {"kernel": init(k1, (width, width), jnp.float32)}
            else:
                weights = {
                    "down": init(k1, (width, self.rank), jnp.float32),
                    "up": init(k2, (self.rank, width), jnp.float32),
                }
            params[str(layer)] = {**weights, "bias": jnp.zeros((width,), jnp.float32)}
        return params, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        _check_2d(self, x, "features")
        x0, out = x, x
        for layer in range(self.num_layers):
            p = params[str(layer)]
            mixed = out @ p["kernel"] if self.rank is None else (out @ p["down"]) @ p["up"]
            out = x0 * (mixed + p["bias"][None, :]) + out
        return out, state


class FactorizationMachine(Layer):
    """The pairwise interactions of a factorization machine (Rendle 2010).

    For field embeddings ``v_1 ... v_m`` of one example, the second-order term
    ``sum_{i<j} <v_i, v_j>`` equals ``0.5 * sum_k ((sum_i v_ik)^2 - sum_i v_ik^2)``,
    computed in ``O(m * k)`` instead of ``O(m^2 * k)``. With ``reduce=False``
    the sum over ``k`` is left out: the ``(batch, k)`` bi-interaction pooling of
    neural FMs (He & Chua 2017), which a dense head can take.

    The layer has no params: the first-order terms and the bias of a full FM are
    an ``EmbeddingBag`` of width 1 (or a ``Dense``) beside it.

    Args:
        reduce: sum over the embedding width (``(batch, 1)`` output), or not
            (``(batch, k)``).

    Shapes: ``(batch, fields, k) -> (batch, 1)``, or ``(batch, k)`` with
    ``reduce=False``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> v = jnp.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
        >>> fm = nf.FactorizationMachine()
        >>> fm.apply({}, {}, v)[0].tolist()  # <v1,v2> + <v1,v3> + <v2,v3> = 11 + 17 + 39
        [[67.0]]
    """

    reduce: bool = True

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check(x)
        return {}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, State]:
        self._check(x)
        square_of_sum = jnp.square(jnp.sum(x, axis=1))
        sum_of_squares = jnp.sum(jnp.square(x), axis=1)
        pairs = 0.5 * (square_of_sum - sum_of_squares)
        return (jnp.sum(pairs, axis=-1, keepdims=True) if self.reduce else pairs), state

    def _check(self, x: Any) -> None:
        if jnp.ndim(x) != 3 or not jnp.issubdtype(x.dtype, jnp.floating):
            raise layer_error(
                self,
                f"expected float field embeddings shaped (batch, fields, k), got "
                f"{getattr(x, 'dtype', '?')} {tuple(jnp.shape(x))}. Fix: stack one "
                "embedding per field, e.g. jnp.stack([user_vec, item_vec, ...], axis=1).",
            )
