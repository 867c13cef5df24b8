"""Recurrent cells: one time step of SimpleRNN, LSTM and GRU.

A cell is a layer whose input is ``(carry, x_t)`` and whose output is
``(new_carry, y_t)``; :class:`nnfun.RNN` scans it over a sequence. Each cell
splits its step in two: ``project_inputs`` (the input kernel's product, which
takes any leading shape) and ``step`` (the recurrent part). ``RNN`` runs both
at every time step inside its scan: on XLA:CPU that measured faster than one
product over all time steps before the scan (``benchmarks/NOTES.md``, phase 5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from ..core._initializers import get_initializer
from ..core._layer import Layer, Params, State, layer_error


def _orthogonal_blocks(key: jax.Array, features: int, blocks: int, dtype: Any) -> jax.Array:
    # One orthogonal (F, F) matrix per gate: a gate's recurrence is then norm-preserving.
    keys = jax.random.split(key, blocks)
    init = jax.nn.initializers.orthogonal()
    return jnp.concatenate([init(k, (features, features), dtype) for k in keys], axis=1)


class RecurrentCell(Layer):
    """Base class of recurrent cells; a user's cell subclasses it.

    A subclass implements ``init(key, x_t)``, ``initial_carry(batch_size)`` and
    ``apply(params, state, (carry, x_t)) -> ((new_carry, y_t), state)``. It may
    also override ``project_inputs``/``step`` (the built-in cells do):
    :class:`nnfun.RNN` calls ``step(params, carry, project_inputs(params, x_t))``
    at each time step.
    """

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        """The carry at the start of a sequence (zeros)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement initial_carry")

    def project_inputs(self, params: Params, x: jax.Array) -> jax.Array:
        """The part of the step that depends on the input only; any leading shape."""
        return x

    def step(self, params: Params, carry: Any, projected: jax.Array) -> tuple[Any, jax.Array]:
        """One step from a carry and a projected input: ``(new_carry, y_t)``."""
        (carry, y), _ = self.apply(params, {}, (carry, projected))
        return carry, y

    def check_carry(self, carry: Any, batch_size: int) -> None:
        """Raises a clear error if ``carry`` is not shaped like ``initial_carry(batch_size)``."""
        want = jax.eval_shape(lambda: self.initial_carry(batch_size))
        want_shapes = jax.tree.map(lambda a: a.shape, want)
        got_shapes = jax.tree.map(lambda a: jnp.shape(a), carry)
        # jaxlib ships no stub for PyTreeDef, so mypy does not know it compares.
        same_structure = jax.tree.structure(want) == jax.tree.structure(carry)  # type: ignore[operator]
        if not same_structure or want_shapes != got_shapes:
            raise layer_error(
                self,
                f"expected a carry shaped {want_shapes} (batch {batch_size}, "
                f"features {getattr(self, 'features', '?')}), got {got_shapes}. Fix: start "
                f"from cell.initial_carry({batch_size}).",
            )


class _GatedCell(RecurrentCell):
    """Shared init/apply of cells with ``gates`` blocks of ``features`` columns."""

    gates = 1

    if TYPE_CHECKING:  # fields of each subclass, declared there to keep their order

        @property
        def features(self) -> int: ...

        @property
        def kernel_init(self) -> str | Callable[..., Any]: ...

    def __post_init__(self) -> None:
        if not isinstance(self.features, int) or self.features < 1:
            raise ValueError(
                f"{type(self).__name__} features must be a positive int, got {self.features!r}"
            )
        get_initializer(self.kernel_init, f"{type(self).__name__} kernel_init")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x_t = x[1] if isinstance(x, tuple) else x
        if len(x_t.shape) != 2:
            raise layer_error(
                self,
                f"expected one time step (batch, in), got shape {tuple(x_t.shape)}. "
                "Fix: wrap the cell in nf.RNN(cell) to run it over (batch, time, in).",
            )
        width = self.gates * self.features
        k_in, k_rec = jax.random.split(key)
        params = {
            "input_kernel": get_initializer(self.kernel_init)(
                k_in, (x_t.shape[1], width), jnp.float32
            ),
            "recurrent_kernel": _orthogonal_blocks(k_rec, self.features, self.gates, jnp.float32),
            "bias": self._initial_bias(),
        }
        return params, {}

    def _initial_bias(self) -> jax.Array:
        return jnp.zeros((self.gates * self.features,), jnp.float32)

    def project_inputs(self, params: Params, x: jax.Array) -> jax.Array:
        kernel = params["input_kernel"]
        if x.shape[-1] != kernel.shape[0]:
            raise layer_error(
                self,
                f"expected inputs (..., {kernel.shape[0]}) to match the input kernel "
                f"{tuple(kernel.shape)}, got {tuple(x.shape)}. Re-run init with this input.",
            )
        y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel) + params["bias"][None, :]
        return y.reshape(*x.shape[:-1], kernel.shape[1])

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        if not (isinstance(x, tuple) and len(x) == 2):
            raise layer_error(
                self,
                f"expected a tuple (carry, x_t), got {type(x).__name__}. Fix: "
                "cell.apply(params, state, (cell.initial_carry(batch), x_t)), or nf.RNN(cell).",
            )
        carry, x_t = x
        self.check_carry(carry, x_t.shape[0])
        new_carry, y = self.step(params, carry, self.project_inputs(params, x_t))
        return (new_carry, y), state

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        return jnp.zeros((batch_size, self.features), dtype)

    def _recurrent(self, params: Params, h: jax.Array) -> jax.Array:
        return jnp.dot(h, params["recurrent_kernel"])


class SimpleRNN(_GatedCell):
    """The Elman cell: ``h' = tanh(x_t @ W + h @ U + b)``; output ``y_t = h'``.

    Args:
        features: width of the hidden state ``h``.
        kernel_init: initializer of the input kernel ``W`` (the recurrent kernel
            ``U`` is orthogonal, the bias zero).

    Shapes: step ``(carry (batch, F), x_t (batch, in)) -> (carry, y_t (batch, F))``.
    Params: ``input_kernel (in, F)``, ``recurrent_kernel (F, F)``, ``bias (F,)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> cell = nf.SimpleRNN(4)
        >>> params, state = cell.init(jax.random.key(0), jnp.zeros((2, 3)))
        >>> (h, y), _ = cell.apply(params, state, (cell.initial_carry(2), jnp.ones((2, 3))))
        >>> h.shape, y.shape
        ((2, 4), (2, 4))
    """

    features: int
    kernel_init: str | Callable[..., Any] = "glorot_uniform"

    def step(self, params: Params, carry: Any, projected: jax.Array) -> tuple[Any, jax.Array]:
        h = jnp.tanh(projected + self._recurrent(params, carry))
        return h, h


class LSTM(_GatedCell):
    """Long short-term memory cell; the carry is ``(h, c)``.

    With ``[i, f, g, o]`` the four column blocks of ``x_t @ W + h @ U + b``::

        i = sigmoid(i), f = sigmoid(f), g = tanh(g), o = sigmoid(o)
        c' = f * c + i * g
        h' = o * tanh(c')          # output y_t = h'

    Args:
        features: width of ``h`` and ``c``.
        forget_bias: initial value of the forget-gate bias (1.0 lets gradients
            flow through ``c`` early in training); the other biases start at 0.
        kernel_init: initializer of the input kernel ``W`` (``U`` is orthogonal).

    Shapes: step ``((h, c), x_t (batch, in)) -> ((h', c'), y_t (batch, F))``.
    Params: ``input_kernel (in, 4F)``, ``recurrent_kernel (F, 4F)``, ``bias (4F,)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> cell = nf.LSTM(4)
        >>> params, state = cell.init(jax.random.key(0), jnp.zeros((2, 3)))
        >>> ((h, c), y), _ = cell.apply(params, state, (cell.initial_carry(2), jnp.ones((2, 3))))
        >>> h.shape, c.shape, params["bias"][4:8].tolist()
        ((2, 4), (2, 4), [1.0, 1.0, 1.0, 1.0])
    """

    features: int
    forget_bias: float = 1.0
    kernel_init: str | Callable[..., Any] = "glorot_uniform"
    gates = 4

    def _initial_bias(self) -> jax.Array:
        bias = jnp.zeros((4, self.features), jnp.float32).at[1].set(self.forget_bias)
        return bias.reshape(-1)

    def initial_carry(self, batch_size: int, dtype: Any = jnp.float32) -> Any:
        zeros = jnp.zeros((batch_size, self.features), dtype)
        return (zeros, zeros)

    def step(self, params: Params, carry: Any, projected: jax.Array) -> tuple[Any, jax.Array]:
        h, c = carry
        i, f, g, o = jnp.split(projected + self._recurrent(params, h), 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h


class GRU(_GatedCell):
    """Gated recurrent unit (the variant of cuDNN and PyTorch: reset applied after ``U``).

    With ``[xr, xz, xn]`` the blocks of ``x_t @ W + b`` and ``[hr, hz, hn]`` those of
    ``h @ U + b_h``::

        r = sigmoid(xr + hr), z = sigmoid(xz + hz)
        n = tanh(xn + r * hn)
        h' = (1 - z) * n + z * h   # output y_t = h'

    Args:
        features: width of ``h``.
        kernel_init: initializer of the input kernel ``W`` (``U`` is orthogonal).

    Shapes: step ``(h (batch, F), x_t (batch, in)) -> (h', y_t (batch, F))``.
    Params: ``input_kernel (in, 3F)``, ``recurrent_kernel (F, 3F)``, ``bias (3F,)``,
    ``recurrent_bias (3F,)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> cell = nf.GRU(4)
        >>> params, state = cell.init(jax.random.key(0), jnp.zeros((2, 3)))
        >>> (h, y), _ = cell.apply(params, state, (cell.initial_carry(2), jnp.ones((2, 3))))
        >>> h.shape
        (2, 4)
    """

    features: int
    kernel_init: str | Callable[..., Any] = "glorot_uniform"
    gates = 3

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        params, state = super().init(key, x)
        params["recurrent_bias"] = jnp.zeros_like(params["bias"])
        return params, state

    def step(self, params: Params, carry: Any, projected: jax.Array) -> tuple[Any, jax.Array]:
        hidden = self._recurrent(params, carry) + params["recurrent_bias"][None, :]
        xr, xz, xn = jnp.split(projected, 3, axis=-1)
        hr, hz, hn = jnp.split(hidden, 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1.0 - z) * n + z * carry
        return h, h
