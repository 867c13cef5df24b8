"""Mixed precision: a dtype policy applied to any layer by one wrapper."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._combinators import as_layer
from ._layer import Layer, Params, State


class _PolicyFields(NamedTuple):
    param_dtype: str
    compute_dtype: str
    output_dtype: str


class Policy(_PolicyFields):
    """Which float dtype params are stored in, computed in, and returned in.

    Dtypes are stored by name (``"float32"``, ``"bfloat16"``, ...), so a policy is
    hashable and writes to a JSON config. Only floating-point leaves are ever cast:
    integer inputs (token ids), booleans and PRNG keys pass through unchanged.

    Args:
        param_dtype: dtype of the stored params and state (the optimizer sees these).
        compute_dtype: dtype the wrapped layer computes in (default: ``param_dtype``).
        output_dtype: dtype of the returned output (default: ``param_dtype``).

    Example:
        >>> import jax.numpy as jnp, nnfun as nf
        >>> policy = nf.Policy("float32", jnp.bfloat16, "float32")
        >>> policy.compute_dtype
        'bfloat16'
        >>> policy.cast_to_compute({"w": jnp.ones(2), "ids": jnp.arange(2)})["w"].dtype
        dtype(bfloat16)
    """

    __slots__ = ()

    def __new__(
        cls, param_dtype: Any = "float32", compute_dtype: Any = None, output_dtype: Any = None
    ) -> Policy:
        compute_dtype = param_dtype if compute_dtype is None else compute_dtype
        output_dtype = param_dtype if output_dtype is None else output_dtype
        names = [
            _float_name(value, field)
            for value, field in zip((param_dtype, compute_dtype, output_dtype), cls._fields)
        ]
        return super().__new__(cls, *names)

    def cast_to_param(self, tree: Any) -> Any:
        """Casts the floating leaves of ``tree`` to ``param_dtype``."""
        return cast_floating(tree, self.param_dtype)

    def cast_to_compute(self, tree: Any) -> Any:
        """Casts the floating leaves of ``tree`` to ``compute_dtype``."""
        return cast_floating(tree, self.compute_dtype)

    def cast_to_output(self, tree: Any) -> Any:
        """Casts the floating leaves of ``tree`` to ``output_dtype``."""
        return cast_floating(tree, self.output_dtype)


def _float_name(value: Any, field: str) -> str:
    try:
        dtype = jnp.dtype(value)
    except TypeError as e:
        raise ValueError(f"Policy {field}: {value!r} is not a dtype ({e})") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"Policy {field} must be a floating-point dtype such as 'float32' or 'bfloat16', "
            f"got {dtype.name}"
        )
    return dtype.name


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Casts every floating-point array leaf of ``tree`` to ``dtype``; others pass through.

    Example:
        >>> import jax.numpy as jnp
        >>> from nnfun.core._precision import cast_floating
        >>> [a.dtype.name for a in cast_floating([jnp.ones(1), jnp.arange(1)], "bfloat16")]
        ['bfloat16', 'int32']
    """

    def cast(leaf: Any) -> Any:
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree.map(cast, tree)


class MixedPrecision(Layer):
    """Runs ``layer`` under a dtype :class:`Policy`, with no change to the layer itself.

    ``apply`` casts the params, the state's floats and the input's floats to
    ``compute_dtype``, applies the layer, and casts the output to
    ``output_dtype`` and the new state back to ``param_dtype``. The casts are
    differentiable, so gradients arrive in ``param_dtype`` (float32 params stay
    float32 in the optimizer). No loss scaling is done: use bfloat16, whose
    exponent range is float32's, rather than float16 for compute.

    The wrapper is transparent: its params, state, random keys and layer paths
    are exactly the wrapped layer's, so wrapping or unwrapping a trained model
    keeps its checkpoint and its sharding rules valid.

    Args:
        layer: any layer or model (plain callables become layers).
        policy: a :class:`Policy` or a ``(param, compute, output)`` tuple; the
            default computes in bfloat16 with float32 params and output.

    Shapes: those of ``layer``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.MixedPrecision(nf.Dense(3), nf.Policy("float32", "bfloat16", "float32"))
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> params["kernel"].dtype, model.apply(params, state, jnp.ones((2, 4)))[0].dtype
        (dtype('float32'), dtype('float32'))
    """

    layer: Any
    policy: Any = Policy("float32", "bfloat16", "float32")

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", as_layer(self.layer))
        policy = self.policy
        if not isinstance(policy, Policy):
            if not isinstance(policy, (tuple, list)) or len(policy) != 3:
                raise TypeError(
                    "MixedPrecision policy must be an nf.Policy or a (param, compute, output) "
                    f"dtype tuple, got {policy!r}"
                )
            policy = Policy(*policy)
        object.__setattr__(self, "policy", policy)

    @property
    def extras(self) -> frozenset[str]:
        return self.layer.extras

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        params, state = self.layer.init(key, x)
        return self.policy.cast_to_param(params), self.policy.cast_to_param(state)

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        policy = self.policy
        y, new_state = self.layer.apply(
            policy.cast_to_compute(params),
            policy.cast_to_compute(state),
            policy.cast_to_compute(x),
            key=key,
            train=train,
        )
        return policy.cast_to_output(y), policy.cast_to_param(new_state)
