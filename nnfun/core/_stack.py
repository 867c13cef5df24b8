"""Stack: n copies of a layer with stacked parameters, applied with ``lax.scan``."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._children import check_params, checked_output, route, split_inputs
from ._combinators import as_layer
from ._eager import compiled, is_eager
from ._layer import Layer, Params, State, as_key, child_key, layer_error, scope, spec_of
from ._summary import loops_unrolled


def _policy(remat_policy: str | Callable | None) -> Callable | None:
    if remat_policy is None or callable(remat_policy):
        return remat_policy
    return getattr(jax.checkpoint_policies, remat_policy)


class Stack(Layer):
    """``n`` copies of ``layer`` applied in turn; their params share a leading axis of size n.

    ``apply`` runs one ``lax.scan`` over the copies, so the traced and compiled
    program holds the layer once whatever ``n`` is: compile time does not grow
    with depth. The layer must map its input to an output of the same shape and
    dtype (a transformer block, a residual MLP).

    Copy ``i`` gets the key a ``Sequential([layer] * n)`` would give its child
    ``"i"`` (the parent key folded with the CRC32 of ``str(i)``), for both init
    and dropout, so :meth:`unstack` turns the params of a Stack into those of that
    Sequential with identical outputs, and :meth:`stack` turns them back.

    The layer's state (a KV cache, say) is stacked the same way. Extra inputs
    (``{"inputs": x, "mask": m}``) reach every copy unchanged; only the main
    input is carried from copy to copy.

    Args:
        n: number of copies (>= 1).
        layer: the layer to repeat.
        remat: recompute each copy's activations in the backward pass
            (``jax.checkpoint``) instead of storing them: less memory, more FLOPs.
        remat_policy: what ``jax.checkpoint`` may keep: a name in
            ``jax.checkpoint_policies`` (``"dots_saveable"``, ``"nothing_saveable"``,
            ...) or such a policy function. Only used when ``remat=True``.
        unroll: passed to ``lax.scan``: how many copies each loop iteration runs
            (an int >= 1, True for all of them, or False: the same as 1, as in
            ``lax.scan``). The default 1 keeps compile time independent of
            depth; ``True`` on a shallow stack gives back the speed of a Python
            loop at the cost of compiling every copy (unrolling the default
            4-block GPT's Stack took its training step from 239.8 to 201.1 ms
            on 2 CPU cores, ``benchmarks/NOTES.md`` phase 3, which is why
            :class:`nnfun.models.gpt.GPT` unrolls up to 12 blocks by default).

    Shapes: ``x -> y`` with ``y`` shaped like ``x``; every param gets a leading ``n``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Stack(3, nf.Residual(nf.Dense(4)))
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((2, 4)))
        >>> params["layer"]["layer"]["kernel"].shape
        (3, 4, 4)
        >>> model.apply(params, state, jnp.ones((2, 4)))[0].shape
        (2, 4)
    """

    n: int
    layer: Any
    remat: bool = False
    remat_policy: str | Callable | None = None
    unroll: int | bool = 1

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"Stack n must be a positive int, got {self.n!r}")
        if not isinstance(self.unroll, int) or (
            not isinstance(self.unroll, bool) and self.unroll < 1
        ):
            raise ValueError(
                f"Stack unroll must be True, False or an int >= 1, got {self.unroll!r}"
            )
        object.__setattr__(self, "layer", as_layer(self.layer))
        if isinstance(self.remat_policy, str) and not hasattr(
            jax.checkpoint_policies, self.remat_policy
        ):
            raise ValueError(
                f"Stack remat_policy {self.remat_policy!r} is not a name in "
                "jax.checkpoint_policies (e.g. 'dots_saveable', 'nothing_saveable')"
            )

    @property
    def extras(self) -> frozenset[str]:
        return self.layer.extras

    def _salts(self) -> jax.Array:
        # The CRC32 of each copy's name, as Sequential would fold it into the key.
        salts = [zlib.crc32(str(i).encode()) for i in range(self.n)]
        return jnp.asarray(np.array(salts, dtype=np.uint32))

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, extras = split_inputs(self, x)
        layer_x = route(self.layer, x, extras)
        keys = jnp.stack([child_key(key, str(i)) for i in range(self.n)])
        with scope("layer"):
            params, state = jax.vmap(lambda k: self.layer.init(k, layer_x))(keys)
            one = jax.tree.map(lambda a: a[0], (params, state))
            out = jax.eval_shape(
                lambda p, s, xs: self._apply_one(p, s, xs, jax.random.key(0), False)[0],
                *spec_of((*one, layer_x)),
            )
        if spec_of(out) != spec_of(x):
            raise layer_error(
                self,
                f"the repeated layer maps {spec_of(x)} to {out}; a Stack feeds each copy's "
                "output to the next, so they must match. Fix: keep the width (add a "
                "projection before the Stack).",
            )
        return _wrap(params), _wrap(state)

    def _apply_one(
        self, p: Params, s: State, x: Any, key: jax.Array | None, train: bool
    ) -> tuple[Any, State]:
        return checked_output(self.layer, self.layer.apply(p, s, x, key=key, train=train))

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        key = as_key(key)
        split_inputs(self, x)  # names the extras no copy reads before compiling anything
        run = compiled(self, train) if is_eager(params, state, x, key) else None
        if run is not None:
            return run(params, state, x, key)
        x, extras = split_inputs(self, x)
        layer_params, layer_state = params.get("layer", {}), state.get("layer", {})
        with scope("layer"):
            one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), layer_params)
            check_params(self.layer, one, route(self.layer, x, extras))

        # The extras and the key ride in the carry, unchanged, rather than being closed
        # over: a closed-over concrete array becomes a constant of the loop, so every
        # eager call would compile a new program (and never free the old ones).
        def body(carry: Any, inputs: tuple[Params, State, jax.Array]) -> tuple[Any, State]:
            h, extras, key = carry
            p, s, salt = inputs
            k = None if key is None else jax.random.fold_in(key, salt)
            y, new_s = self._apply_one(p, s, route(self.layer, h, extras), k, train)
            return (y, extras, key), new_s

        if self.remat:
            body = jax.checkpoint(body, policy=_policy(self.remat_policy))
        with scope("layer"):
            unroll = True if loops_unrolled() else self.unroll
            (y, _, _), new_state = jax.lax.scan(
                body, (x, extras, key), (layer_params, layer_state, self._salts()), unroll=unroll
            )
        return y, _wrap(new_state)

    def init_cache(self, params: Params, batch_size: int, max_length: int, **kwargs: Any) -> State:
        """A decoding cache (state) for every copy: the layer's ``init_cache``, stacked.

        Args:
            params: this Stack's params.
            batch_size: number of sequences decoded together.
            max_length: the most positions the cache holds.
            **kwargs: passed on to the layer's ``init_cache`` unchanged (the same
                for every copy), e.g. a decoder block's ``memory``.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> stack = nf.Stack(2, nf.TransformerBlock(num_heads=2))
            >>> params, _ = stack.init(jax.random.key(0), jnp.zeros((1, 3, 8)))
            >>> stack.init_cache(params, 1, 16)["layer"]["attention"]["key"].shape
            (2, 1, 16, 2, 4)
        """
        make = lambda p: self.layer.init_cache(p, batch_size, max_length, **kwargs)  # noqa: E731
        return _wrap(jax.vmap(make)(params.get("layer", {})))

    def unstack(self, params: dict[str, Any]) -> dict[str, Any]:
        """Stacked params (or state) to those of ``Sequential([layer] * n)``.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> stack = nf.Stack(2, nf.Dense(3))
            >>> params, _ = stack.init(jax.random.key(0), jnp.zeros((1, 3)))
            >>> sorted(stack.unstack(params)), stack.unstack(params)["1"]["kernel"].shape
            (['0', '1'], (3, 3))
        """
        inner = params.get("layer", {})
        if not inner:
            return {}
        return {str(i): jax.tree.map(lambda a, i=i: a[i], inner) for i in range(self.n)}

    def stack(self, params: dict[str, Any]) -> dict[str, Any]:
        """The inverse of :meth:`unstack`: ``{"0": p0, "1": p1, ...}`` to stacked params.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> stack = nf.Stack(2, nf.Dense(3))
            >>> params, _ = stack.init(jax.random.key(0), jnp.zeros((1, 3)))
            >>> back = stack.stack(stack.unstack(params))
            >>> bool((back["layer"]["kernel"] == params["layer"]["kernel"]).all())
            True
        """
        if not params:
            return {}
        missing = [str(i) for i in range(self.n) if str(i) not in params]
        if missing:
            raise ValueError(f"Stack.stack: params lack the copies {missing}; expected '0'..")
        copies = [params[str(i)] for i in range(self.n)]
        return _wrap(jax.tree.map(lambda *a: jnp.stack(a), *copies))


def _wrap(tree: Any) -> dict[str, Any]:
    # Params and state sit under "layer" (the repeated child); empty trees are dropped.
    return {"layer": tree} if tree else {}
