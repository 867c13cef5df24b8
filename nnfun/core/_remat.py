"""Rematerialisation: recompute a layer's activations in the backward pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from ._combinators import as_layer
from ._layer import Layer, Params, State

# Policies of ``jax.checkpoint_policies`` usable by name (the factories that need
# arguments, such as ``save_only_these_names``, are passed as callables instead).
REMAT_POLICIES = tuple(
    name
    for name in (
        "nothing_saveable",
        "everything_saveable",
        "dots_saveable",
        "checkpoint_dots",
        "dots_with_no_batch_dims_saveable",
        "checkpoint_dots_with_no_batch_dims",
    )
    if hasattr(jax.checkpoint_policies, name)
)


class Remat(Layer):
    """Applies ``layer`` under ``jax.checkpoint``: activations are recomputed, not stored.

    In a gradient, the wrapped layer keeps only its inputs (and what ``policy``
    saves) for the backward pass and recomputes the rest, trading FLOPs for
    peak memory. Wrap a whole model, or each block of a deep one (for a
    ``Stack``, pass its own ``remat=True``). Like :class:`MixedPrecision` it is
    transparent: params, state, keys and paths are the wrapped layer's.

    Args:
        layer: any layer or model.
        policy: ``None`` (save nothing: recompute everything inside), the name of
            a ``jax.checkpoint_policies`` policy (``"dots_saveable"``: keep matrix
            products, recompute the cheap elementwise ops), or a policy callable.
        prevent_cse: passed to ``jax.checkpoint``; ``False`` is safe (and a little
            faster) only inside ``lax.scan``.

    Shapes: those of ``layer``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Remat(nf.Sequential([nf.Dense(8), jax.nn.relu, nf.Dense(1)]))
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> loss = lambda p: model.apply(p, state, jnp.ones((2, 4)))[0].sum()
        >>> jax.grad(loss)(params)["0"]["kernel"].shape
        (4, 8)
    """

    layer: Any
    policy: str | Callable[..., bool] | None = None
    prevent_cse: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", as_layer(self.layer))
        if isinstance(self.policy, str):
            if self.policy not in REMAT_POLICIES:
                raise ValueError(
                    f"unknown remat policy {self.policy!r}; names: {', '.join(REMAT_POLICIES)} "
                    "(or pass a jax.checkpoint_policies callable)"
                )
        elif self.policy is not None and not callable(self.policy):
            raise TypeError(f"Remat policy must be None, a name or a callable, got {self.policy!r}")

    @property
    def extras(self) -> frozenset[str]:
        return self.layer.extras

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        return self.layer.init(key, x)

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        def run(p: Params, s: State, inputs: Any, k: jax.Array | None) -> tuple[Any, State]:
            return self.layer.apply(p, s, inputs, key=k, train=train)

        policy = self.policy
        if isinstance(policy, str):
            policy = getattr(jax.checkpoint_policies, policy)
        checkpointed = jax.checkpoint(run, policy=policy, prevent_cse=self.prevent_cse)
        return checkpointed(params, state, x, key)
