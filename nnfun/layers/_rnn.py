"""RNN: a recurrent cell scanned over time; Bidirectional: two of them, merged.

Optional inputs are extras of the layer contract (``nnfun.core.EXTRAS``): ``x``
is either the ``(batch, time, in)`` array or a dict ``{"inputs": array,
"carry": ..., "lengths": (batch,) ints, "mask": (batch, time) bools}`` whose
extras are all optional. Padded steps (``mask`` False, or ``t >= lengths``)
leave the carry unchanged and output zeros, so padding never changes a result.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ..core._children import split_inputs
from ..core._eager import compiled, is_eager
from ..core._layer import Layer, Params, State, child_key, layer_error, scope
from ..core._masks import sequence_mask
from ..core._summary import loops_unrolled
from ._recurrent import RecurrentCell

_EXTRAS = frozenset({"carry", "lengths", "mask"})


def _select(mask_t: jax.Array, new: Any, old: Any) -> Any:
    # Keep ``old`` where the step is padding; mask_t is (batch,).
    def pick(n: jax.Array, o: jax.Array) -> jax.Array:
        return jnp.where(mask_t.reshape(-1, *([1] * (n.ndim - 1))), n, o)

    return jax.tree.map(pick, new, old)


class RNN(Layer):
    """Runs ``cell`` over the time axis of ``(batch, time, in)`` with ``lax.scan``.

    Args:
        cell: a :class:`RecurrentCell` (``nf.GRU(128)``, ``nf.LSTM(64)``, ...).
        return_sequences: output every step ``(batch, time, F)``; else only the
            output of the last step processed (the last unpadded one).
        return_carry: also return the final carry: the output becomes ``(y, carry)``.
        reverse: run from the last step to the first (outputs stay in input order).

    The input is an array, or a dict with ``"inputs"`` and optionally ``"carry"``
    (the initial carry, default zeros), ``"lengths"`` (``(batch,)`` ints in
    ``[1, time]``: steps ``t >= lengths[b]`` are padding) or ``"mask"``
    (``(batch, time)`` bools, True where a step is real). Padded steps leave the
    carry unchanged and output zeros.

    Shapes: ``(batch, time, in) -> (batch, time, F)`` (or ``(batch, F)``).

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> rnn = nf.RNN(nf.GRU(8), return_carry=True)
        >>> x = jnp.ones((2, 5, 3))
        >>> params, state = rnn.init(jax.random.key(0), x)
        >>> (y, h), _ = rnn.apply(params, state, {"inputs": x, "lengths": jnp.array([5, 2])})
        >>> y.shape, h.shape, bool((y[1, 2:] == 0).all())
        ((2, 5, 8), (2, 8), True)
    """

    cell: Any
    return_sequences: bool = True
    return_carry: bool = False
    reverse: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.cell, RecurrentCell):
            raise TypeError(
                f"RNN cell must be a RecurrentCell (nf.GRU, nf.LSTM, nf.SimpleRNN or a "
                f"subclass), got {type(self.cell).__name__}"
            )

    @property
    def extras(self) -> frozenset[str]:
        return _EXTRAS

    def _unpack(self, x: Any) -> tuple[Any, Any, Any]:
        """Returns ``(inputs, carry or None, mask or None)``, checking shapes."""
        inputs, extras = split_inputs(self, x)
        if len(inputs.shape) != 3:
            raise layer_error(
                self,
                f"expected inputs (batch, time, in), got shape {tuple(inputs.shape)}. "
                "Fix: add a feature axis, e.g. x[..., None].",
            )
        batch, time = inputs.shape[:2]
        return inputs, extras.get("carry"), sequence_mask(self, extras, batch, time)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        inputs, carry, _ = self._unpack(x)
        step = jax.ShapeDtypeStruct((inputs.shape[0], inputs.shape[2]), inputs.dtype)
        with scope("cell"):
            params, state = self.cell.init(child_key(key, "cell"), step)
            if state:
                raise layer_error(self.cell, "a recurrent cell must not have state")
            if carry is not None:
                self.cell.check_carry(carry, inputs.shape[0])
        return ({"cell": params} if params else {}), {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        inputs, carry, mask = self._unpack(x)  # checks lengths while they are concrete
        run = compiled(self, train) if is_eager(params, state, x) else None
        if run is not None:  # an eager call: one compiled program, not one per call
            return run(params, state, x, None)
        cell, cell_params = self.cell, params.get("cell", {})
        batch = inputs.shape[0]
        with scope("cell"):
            if carry is None:
                carry = cell.initial_carry(batch, inputs.dtype)
            cell.check_carry(carry, batch)
            steps = jnp.swapaxes(inputs, 0, 1)  # (time, batch, in)

            def cell_step(c: Any, x_t: jax.Array) -> tuple[Any, jax.Array]:
                # The input product runs per step, inside the scan: on XLA:CPU that
                # measured 0.55-0.67x the time of one product over all steps before
                # the scan, whose (time, batch, gates * F) result the loop then
                # copies and transposes (benchmarks/NOTES.md, phase 5).
                return cell.step(cell_params, c, cell.project_inputs(cell_params, x_t))

            y_spec = jax.eval_shape(cell_step, carry, steps[0])[1]
            last = jnp.zeros(y_spec.shape, y_spec.dtype)
            masks = None if mask is None else jnp.swapaxes(mask, 0, 1)

            def body(
                loop: tuple[Any, jax.Array], inp: tuple[jax.Array, jax.Array | None]
            ) -> tuple[tuple[Any, jax.Array], jax.Array]:
                c, last = loop
                x_t, m_t = inp
                new_c, y = cell_step(c, x_t)
                if m_t is not None:
                    new_c = _select(m_t, new_c, c)
                    y = _select(m_t, y, jnp.zeros_like(y))
                    last = _select(m_t, y, last)
                else:
                    last = y
                return (new_c, last), y

            (carry, last), ys = jax.lax.scan(
                body,
                (carry, last),
                (steps, masks),
                reverse=self.reverse,
                unroll=loops_unrolled(),  # within nf.summary: count every step's FLOPs
            )
        y = jnp.swapaxes(ys, 0, 1) if self.return_sequences else last
        return ((y, carry) if self.return_carry else y), state


BIDIRECTIONAL_MERGES = ("concat", "sum")


class Bidirectional(Layer):
    """Runs one RNN forward and one backward in time and merges their outputs.

    Args:
        forward: an :class:`RNN`.
        backward: an :class:`RNN` running the other way; default: a copy of
            ``forward`` with ``reverse`` flipped (its own params).
        merge: ``"concat"`` (feature axis) or ``"sum"``.

    Takes the same inputs as :class:`RNN`; a ``"carry"`` is a pair
    ``(forward_carry, backward_carry)``. With ``return_carry`` the output is
    ``(y, (forward_carry, backward_carry))``.

    Shapes: ``(batch, time, in) -> (batch, time, 2F)`` (concat) or ``(batch, time, F)``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> bi = nf.Bidirectional(nf.RNN(nf.LSTM(4)))
        >>> params, state = bi.init(jax.random.key(0), jnp.ones((2, 5, 3)))
        >>> bi.apply(params, state, jnp.ones((2, 5, 3)))[0].shape
        (2, 5, 8)
    """

    forward: Any
    backward: Any = None
    merge: str = "concat"

    def __post_init__(self) -> None:
        if not isinstance(self.forward, RNN):
            raise TypeError(f"Bidirectional forward must be an RNN, got {self.forward!r}")
        if self.backward is None:
            backward = dataclasses.replace(self.forward, reverse=not self.forward.reverse)
            object.__setattr__(self, "backward", backward)
        if not isinstance(self.backward, RNN) or self.backward.reverse == self.forward.reverse:
            raise ValueError(
                "Bidirectional backward must be an RNN running the other way "
                f"(reverse={not self.forward.reverse}), got {self.backward!r}"
            )
        fields = ("return_sequences", "return_carry")
        if any(getattr(self.forward, f) != getattr(self.backward, f) for f in fields):
            raise ValueError(f"Bidirectional forward and backward must agree on {fields}")
        if self.merge not in BIDIRECTIONAL_MERGES:
            raise ValueError(f"Bidirectional merge must be one of {BIDIRECTIONAL_MERGES}")

    @property
    def extras(self) -> frozenset[str]:
        return _EXTRAS

    def _directions(self) -> tuple[tuple[str, RNN], tuple[str, RNN]]:
        return (("forward", self.forward), ("backward", self.backward))

    def _split(self, x: Any) -> tuple[Any, Any]:
        split_inputs(self, x)  # checks the extras' names
        if not (isinstance(x, dict) and "carry" in x):
            return x, x
        carry = x["carry"]
        if not (isinstance(carry, tuple) and len(carry) == 2):
            raise layer_error(self, "expected 'carry' to be a pair (forward, backward)")
        rest = {k: v for k, v in x.items() if k != "carry"}
        return {**rest, "carry": carry[0]}, {**rest, "carry": carry[1]}

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        params = {}
        for (name, rnn), xs in zip(self._directions(), self._split(x)):
            with scope(name):
                p, _ = rnn.init(child_key(key, name), xs)
            if p:
                params[name] = p
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
        outs = []
        for (name, rnn), xs in zip(self._directions(), self._split(x)):
            with scope(name):
                y, _ = rnn.apply(params.get(name, {}), {}, xs, key=child_key(key, name))
            outs.append(y)
        if self.forward.return_carry:
            (yf, cf), (yb, cb) = outs
            return (self._merge(yf, yb), (cf, cb)), state
        return self._merge(*outs), state

    def _merge(self, a: jax.Array, b: jax.Array) -> jax.Array:
        if self.merge == "sum":
            return a + b
        return jnp.concatenate([a, b], axis=-1)
