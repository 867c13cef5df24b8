"""Combinators: layers built from other layers, and plain functions as layers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._children import apply_child, extras_of, init_child, split_inputs
from ._layer import Layer, Params, State, layer_error

# Functions of ``jax.nn`` that map one array to one array, usable as layers by
# name. Most keep the shape; ``glu`` halves the last axis.
ACTIVATIONS = tuple(
    name
    for name in (
        "celu",
        "elu",
        "gelu",
        "glu",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "hard_tanh",
        "identity",
        "leaky_relu",
        "log_sigmoid",
        "log_softmax",
        "mish",
        "relu",
        "relu6",
        "selu",
        "sigmoid",
        "silu",
        "soft_sign",
        "softmax",
        "softplus",
        "sparse_plus",
        "sparse_sigmoid",
        "squareplus",
        "swish",
        "tanh",
    )
    if callable(getattr(jax.nn, name, None))
)


def as_layer(obj: Any) -> Layer:
    """Returns ``obj`` if it is a layer; wraps a ``jax.nn`` activation or any callable."""
    if isinstance(obj, Layer):
        return obj
    if isinstance(obj, type) and issubclass(obj, Layer):
        raise TypeError(
            f"got the layer class {obj.__name__}, not a layer. Fix: instantiate it with its "
            f"settings, e.g. {obj.__name__}(...) in place of {obj.__name__}."
        )
    if callable(obj):
        for name in ACTIVATIONS:
            if getattr(jax.nn, name) is obj:
                return Activation(name)
        return Lambda(obj)
    raise TypeError(f"expected a Layer or a callable, got {type(obj).__name__}: {obj!r}")


def named_layers(layers: Any) -> tuple[tuple[str, Layer], ...]:
    """Normalises a list or a dict of layers to ``((name, layer), ...)``."""
    if isinstance(layers, Mapping):
        items = list(layers.items())
    elif isinstance(layers, Sequence) and not isinstance(layers, str):
        is_pair = [
            isinstance(i, (tuple, list)) and len(i) == 2 and isinstance(i[0], str) for i in layers
        ]
        items = list(layers) if layers and all(is_pair) else list(enumerate(layers))
    else:
        raise TypeError(f"expected a list or a dict of layers, got {type(layers).__name__}")
    named = tuple((str(name), as_layer(layer)) for name, layer in items)
    names = [n for n, _ in named]
    if len(set(names)) != len(names) or any("/" in n or not n for n in names):
        raise ValueError(f"child names must be unique, non-empty and free of '/': {names}")
    return named


def _is_empty(tree: Any) -> bool:
    return isinstance(tree, dict) and not tree


def _nonempty(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tree.items() if not _is_empty(v)}


class _Container(Layer):
    """A layer whose ``layers`` field holds named children."""

    layers: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", named_layers(self.layers))

    @property
    def extras(self) -> frozenset[str]:
        return extras_of(*(layer for _, layer in self.layers))

    def _check_names(self, params: Params, state: State) -> None:
        names = {name for name, _ in self.layers}
        for what, tree in (("params", params), ("state", state)):
            unknown = sorted(k for k in tree if k not in names and not _is_empty(tree[k]))
            if unknown:
                raise layer_error(
                    self,
                    f"{what} have keys {unknown} that name no child; the children are "
                    f"{sorted(names)}. Fix: use the {what} this model's init made.",
                )

    def _init_each(
        self, key: jax.Array, inputs: Sequence[Any], extras: dict[str, Any] | None = None
    ) -> tuple[Params, State, list[Any]]:
        params: Params = {}
        state: State = {}
        outs = []
        for (name, layer), x in zip(self.layers, inputs, strict=True):
            params[name], state[name], out = init_child(name, layer, key, x, extras)
            outs.append(out)
        return _nonempty(params), _nonempty(state), outs

    def _apply_each(
        self,
        params: Params,
        state: State,
        inputs: Sequence[Any],
        key: jax.Array | None,
        train: bool,
        extras: dict[str, Any] | None = None,
    ) -> tuple[list[Any], State]:
        self._check_names(params, state)
        ys, new_state = [], dict(state)
        for (name, layer), x in zip(self.layers, inputs, strict=True):
            y, s = apply_child(
                name, layer, params.get(name, {}), state.get(name, {}), x, key, train, extras
            )
            ys.append(y)
            if not _is_empty(s):
                new_state[name] = s
        return ys, new_state


class Sequential(_Container):
    """Applies layers one after another; children are named by position or by key.

    Args:
        layers: a list of layers (named ``"0"``, ``"1"``, ...) or a dict of named
            layers. Plain callables such as ``jax.nn.relu`` become layers.

    Extra inputs (``{"inputs": x, "mask": m}``) reach every child that reads them;
    each child's output becomes the next child's main input.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Sequential({"hidden": nf.Dense(8), "act": jax.nn.relu, "out": nf.Dense(2)})
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> sorted(params)
        ['hidden', 'out']
        >>> model.apply(params, state, jnp.zeros((5, 4)))[0].shape
        (5, 2)
    """

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, extras = split_inputs(self, x)
        params: Params = {}
        state: State = {}
        for name, layer in self.layers:
            params[name], state[name], x = init_child(name, layer, key, x, extras)
        return _nonempty(params), _nonempty(state)

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, extras = split_inputs(self, x)
        self._check_names(params, state)
        new_state = dict(state)
        for name, layer in self.layers:
            x, s = apply_child(
                name, layer, params.get(name, {}), state.get(name, {}), x, key, train, extras
            )
            if not _is_empty(s):
                new_state[name] = s
        return x, new_state


class Parallel(_Container):
    """Applies the i-th layer to the i-th element of a tuple input; returns a tuple.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Parallel([nf.Dense(2), nf.Dense(3)])
        >>> params, state = model.init(jax.random.key(0), (jnp.zeros((1, 4)), jnp.zeros((1, 5))))
        >>> [y.shape for y in model.apply(params, state, (jnp.zeros((1, 4)), jnp.zeros((1, 5))))[0]]
        [(1, 2), (1, 3)]
    """

    @property
    def extras(self) -> frozenset[str]:
        return frozenset()  # its input is a tuple, one element per child

    def _check(self, x: Any) -> None:
        if not isinstance(x, (tuple, list)) or len(x) != len(self.layers):
            got = (
                f"{type(x).__name__} of length {len(x)}"
                if isinstance(x, (tuple, list))
                else type(x).__name__
            )
            raise layer_error(self, f"expected a tuple of {len(self.layers)} inputs, got {got}")

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        self._check(x)
        params, state, _ = self._init_each(key, x)
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        self._check(x)
        ys, new_state = self._apply_each(params, state, x, key, train)
        return tuple(ys), new_state


MERGES = ("concat", "sum", "tuple")


class Branch(_Container):
    """Feeds one input to every child and merges their outputs.

    Args:
        layers: a list or dict of layers.
        merge: ``"concat"`` (along the last axis), ``"sum"``, or ``"tuple"``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Branch([nf.Dense(2), nf.Dense(3)], merge="concat")
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> model.apply(params, state, jnp.zeros((6, 4)))[0].shape
        (6, 5)
    """

    merge: str = "concat"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.merge not in MERGES:
            raise ValueError(f"Branch merge must be one of {MERGES}, got {self.merge!r}")

    def _merge(self, ys: Sequence[Any]) -> Any:
        if self.merge == "tuple":
            return tuple(ys)
        shapes = [jnp.shape(y) for y in ys]
        if self.merge == "sum":
            if len(set(shapes)) != 1:
                raise layer_error(self, f"merge='sum' needs equal output shapes, got {shapes}")
            return sum(ys[1:], ys[0])
        if len({s[:-1] for s in shapes}) != 1:
            raise layer_error(
                self, f"merge='concat' needs outputs equal but for the last axis, got {shapes}"
            )
        return jnp.concatenate(ys, axis=-1)

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, extras = split_inputs(self, x)
        params, state, outs = self._init_each(key, [x] * len(self.layers), extras)
        jax.eval_shape(self._merge, outs)  # raises the merge error at init
        return params, state

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, extras = split_inputs(self, x)
        inputs = [x] * len(self.layers)
        ys, new_state = self._apply_each(params, state, inputs, key, train, extras)
        return self._merge(ys), new_state


class Residual(Layer):
    """``y = x + layer(x)``; the wrapped layer must keep the shape of its input.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Residual(nf.Dense(4))
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> sorted(params)
        ['layer']
    """

    layer: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", as_layer(self.layer))

    @property
    def extras(self) -> frozenset[str]:
        return self.layer.extras

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        x, extras = split_inputs(self, x)
        params, state, out = init_child("layer", self.layer, key, x, extras)
        if (out.shape, out.dtype) != (x.shape, x.dtype):
            raise layer_error(
                self,
                f"the wrapped layer maps {x.shape} {x.dtype} to {out.shape} {out.dtype}; a "
                "residual connection needs the same shape and dtype. Make its output width "
                f"{x.shape[-1]}, or add a projection.",
            )
        return _nonempty({"layer": params}), _nonempty({"layer": state})

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        x, extras = split_inputs(self, x)
        p, s = params.get("layer", {}), state.get("layer", {})
        y, s = apply_child("layer", self.layer, p, s, x, key, train, extras)
        return x + y, _nonempty({"layer": s})


class Activation(Layer):
    """An activation function of ``jax.nn``, by name (``"relu"``, ``"gelu"``, ...).

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> nf.Activation("relu").apply({}, {}, jnp.array([-1.0, 2.0]))[0]
        Array([0., 2.], dtype=float32)
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.name!r}; valid names: {', '.join(ACTIVATIONS)}"
            )

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
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
        return getattr(jax.nn, self.name)(x), state


class Lambda(Layer):
    """Wraps a parameter-free function ``fn(x) -> y`` as a layer.

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> nf.Lambda(jnp.square).apply({}, {}, jnp.array([3.0]))[0]
        Array([9.], dtype=float32)
    """

    fn: Callable[[Any], Any]

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
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
        return self.fn(x), state


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    parameters = inspect.signature(fn).parameters.values()
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


class FunctionLayer(Layer):
    """A layer from a pair of pure functions.

    Args:
        init_fn: ``init_fn(key, x_spec) -> params``.
        apply_fn: ``apply_fn(params, x) -> y``; it receives ``key=`` and ``train=``
            as keywords if its signature names them.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> affine = nf.FunctionLayer(
        ...     lambda key, x: {"w": jax.random.normal(key, (x.shape[-1], 3))},
        ...     lambda params, x: x @ params["w"])
        >>> params, state = affine.init(jax.random.key(0), jnp.zeros((2, 4)))
        >>> affine.apply(params, state, jnp.zeros((2, 4)))[0].shape
        (2, 3)
    """

    init_fn: Callable[[jax.Array, Any], Any]
    apply_fn: Callable[..., Any]

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        return self.init_fn(key, x), {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        kwargs: dict[str, Any] = {}
        if _accepts(self.apply_fn, "key"):
            kwargs["key"] = key
        if _accepts(self.apply_fn, "train"):
            kwargs["train"] = train
        return self.apply_fn(params, x, **kwargs), state
