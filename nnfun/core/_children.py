"""Running a child layer: its path, its key, the extras it reads, and checks on its params.

Combinators and a user's own composite layers call :func:`init_child` and
:func:`apply_child`; the input convention (a main input plus named extras) is
described in ``nnfun/core/_layer.py``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from ._layer import (
    EXTRAS,
    Layer,
    Params,
    State,
    as_key,
    child_key,
    current_path,
    layer_error,
    scope,
    spec_of,
)
from ._summary import not_recording, record_child


def split_inputs(layer: Layer, x: Any) -> tuple[Any, dict[str, Any]]:
    """``(main, extras)`` of an input; raises if ``layer`` reads none of an extra given.

    ``x`` is the main input, or ``{"inputs": main, name: extra, ...}``.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> from nnfun.core import split_inputs
        >>> rnn = nf.RNN(nf.GRU(2))
        >>> main, extras = split_inputs(rnn, {"inputs": jnp.ones((1, 3, 2)), "lengths": 3})
        >>> main.shape, sorted(extras)
        ((1, 3, 2), ['lengths'])
    """
    if not (isinstance(x, dict) and "inputs" in x):
        return x, {}
    extras = {k: v for k, v in x.items() if k != "inputs"}
    unread = sorted(set(extras) - layer.extras)
    if unread:
        known = sorted(layer.extras) or "none"
        unknown = [n for n in unread if n not in EXTRAS]
        hint = (
            f" {unknown} are not extras of the contract ({', '.join(EXTRAS)})." if unknown else ""
        )
        raise layer_error(
            layer,
            f"no layer here reads the extra inputs {unread}; the extras read here are "
            f"{known}.{hint} Fix: drop them from the input dict or check their spelling.",
        )
    return x["inputs"], extras


def join_inputs(main: Any, extras: dict[str, Any]) -> Any:
    """The input form of ``main`` with ``extras``: the bare main input when there are none."""
    return {"inputs": main, **extras} if extras else main


def route(layer: Layer, main: Any, extras: dict[str, Any]) -> Any:
    """The input ``layer`` gets: ``main`` plus the extras it reads (bare ``main`` if none)."""
    wanted = layer.extras
    return join_inputs(main, {k: v for k, v in extras.items() if k in wanted})


def extras_of(*layers: Layer) -> frozenset[str]:
    """The union of the extras that ``layers`` read (a combinator's ``extras``)."""
    return frozenset().union(*(layer.extras for layer in layers))


def output_spec(layer: Layer, params: Params, state: State, x: Any) -> Any:
    """The output spec of ``layer`` on ``x``, found by ``jax.eval_shape`` (no FLOPs)."""

    def run(p: Params, s: State, xs: Any) -> Any:
        return checked_output(layer, layer.apply(p, s, xs, key=jax.random.key(0), train=False))[0]

    return jax.eval_shape(run, spec_of(params), spec_of(state), spec_of(x))


def init_child(
    name: str,
    layer: Layer,
    key: jax.Array,
    x: Any,
    extras: dict[str, Any] | None = None,
) -> tuple[Params, State, Any]:
    """Initialises a named child and returns ``(params, state, output_spec)``.

    ``x`` is the main input; the child also gets those of ``extras`` it reads.
    """
    x = route(layer, x, extras or {})
    with scope(name):
        params, state = layer.init(child_key(key, name), x)
        out = output_spec(layer, params, state, x)
    return params, state, out


def apply_child(
    name: str,
    layer: Layer,
    params: Params,
    state: State,
    x: Any,
    key: jax.Array | None,
    train: bool,
    extras: dict[str, Any] | None = None,
) -> tuple[Any, State]:
    """Applies a named child inside its path scope and returns ``(y, new_state)``.

    ``x`` is the main input; the child also gets those of ``extras`` it reads.
    Its params are checked against the keys its ``init`` makes, and its result
    must be a ``(y, state)`` pair.
    """
    x = route(layer, x, extras or {})
    with scope(name), record_child(layer, x, params, state) as record:
        check_params(layer, params, x)
        y, new_state = checked_output(
            layer, layer.apply(params, state, x, key=child_key(as_key(key), name), train=train)
        )
        record(y)
    return y, new_state


def checked_output(layer: Layer, out: Any) -> tuple[Any, State]:
    """``out`` if it is the ``(y, state)`` pair of the contract; else a clear TypeError."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        return out
    got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
    raise TypeError(
        f"{type(layer).__name__} at '{_path()}': apply must return a pair (y, state) with "
        f"state a dict, got {got}. Fix: end apply with `return y, state`."
    )


def _path() -> str:
    return current_path() or "<root>"


def check_params(layer: Layer, params: Params, x: Any) -> None:
    """Raises if ``params`` hold keys ``layer.init`` does not make, or lack some it does."""
    expected = _expected_params(layer, x)
    if expected is not None:
        _compare_keys(layer, expected, params, ())


def _expected_params(layer: Layer, x: Any) -> Any:
    leaves, treedef = jax.tree.flatten(spec_of(x))
    signature = (treedef, tuple((a.shape, a.dtype) for a in leaves))
    try:
        return _expected_cached(layer, signature)
    except TypeError:  # an unhashable layer field: compute it uncached
        return _expected_uncached(layer, jax.tree.unflatten(treedef, leaves))


@functools.lru_cache(maxsize=1024)
def _expected_cached(layer: Layer, signature: Any) -> Any:
    treedef, shapes = signature
    x = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in shapes])
    return _expected_uncached(layer, x)


def _expected_uncached(layer: Layer, x: Any) -> Any:
    try:
        with not_recording():
            params, _ = jax.eval_shape(lambda k: layer.init(k, x), jax.random.key(0))
    except Exception:  # apply reports its own errors; this is only a key check
        return None
    return jax.tree.map(lambda _: None, params)


def _compare_keys(layer: Layer, expected: Any, given: Any, where: tuple[str, ...]) -> None:
    if not (isinstance(expected, dict) and isinstance(given, dict)):
        return
    unknown = sorted(k for k in set(given) - set(expected) if not _empty(given[k]))
    missing = sorted(k for k in set(expected) - set(given) if not _empty(expected[k]))
    if unknown or missing:
        at = "/".join(where) or "the top level"
        raise layer_error(
            layer,
            f"params at {at} have keys {sorted(given)}, expected {sorted(expected)} (unknown: "
            f"{unknown}, missing: {missing}). Fix: use the params this layer's init made, "
            "with the same keys.",
        )
    for k in set(given) & set(expected):
        _compare_keys(layer, expected[k], given[k], (*where, str(k)))


def _empty(tree: Any) -> bool:
    return isinstance(tree, dict) and not tree
