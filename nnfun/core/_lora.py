"""LoRA: low-rank adapters on a model's dense layers, trained while the rest stays frozen.

``nf.lora(model, params, rules)`` picks the dense layers whose param path
matches a glob and returns a :class:`LoRA` model and its params: the base params
unchanged, plus ``lora_a`` ``(..., in, rank)`` and ``lora_b`` ``(..., rank,
out)`` beside each chosen ``kernel``. The adapted layer computes ``x @ (kernel +
(alpha / rank) * lora_a @ lora_b) + bias``; ``lora_b`` starts at zero, so the
adapted model starts out equal to the base model. ``LoRA.labels`` feeds
``optax.multi_transform`` so that only the adapters train, and ``LoRA.merge``
folds them into plain kernels, giving back the base model and plain params.

Why the sum is formed on the params rather than inside ``Dense``: see
``docs/design.md`` ("LoRA").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._combinators import as_layer
from ._layer import Layer, Params, State, as_key, child_key, layer_error
from ._params import glob_to_regex

ADAPTER_KEYS = ("lora_a", "lora_b")
_SHOWN_PATHS = 50  # the longest list of layer paths an error message prints in full


def dense_paths(params: Mapping[str, Any]) -> list[str]:
    """The paths of the dicts in ``params`` holding a ``kernel`` of two or more axes.

    These are the layers LoRA can adapt: a ``Dense`` kernel is ``(in, out)``, and
    inside a ``Stack`` it gains leading axes, one per stacked copy.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.Sequential({"hidden": nf.Dense(8), "act": jax.nn.relu, "out": nf.Dense(2)})
        >>> params, _ = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> dense_paths(params)
        ['hidden', 'out']
    """
    found: list[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        kernel = node.get("kernel")
        if kernel is not None and not isinstance(kernel, Mapping) and jnp.ndim(kernel) >= 2:
            found.append(prefix)
        for name, child in node.items():
            if isinstance(child, Mapping):
                walk(child, f"{prefix}/{name}" if prefix else str(name))

    walk(params, "")
    return found


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_SHOWN_PATHS])
    more = len(paths) - _SHOWN_PATHS
    return shown + (f", ... ({more} more)" if more > 0 else "") if paths else "none"


def match_dense(params: Mapping[str, Any], rules: str | Sequence[str]) -> tuple[str, ...]:
    """The dense-layer paths of ``params`` that match any of the glob ``rules``, sorted.

    Raises a ``ValueError`` listing the dense-layer paths when a rule matches none.
    """
    rules = [rules] if isinstance(rules, str) else list(rules)
    if not rules or not all(isinstance(rule, str) for rule in rules):
        raise TypeError(
            f"nf.lora: rules must be a glob string or a list of them, got {rules!r}. "
            "Example: rules=['blocks/layer/attention/*']."
        )
    paths = dense_paths(params)
    chosen: set[str] = set()
    for rule in rules:
        regex = glob_to_regex(rule)
        matched = [path for path in paths if regex.match(path)]
        if not matched:
            hint = " Rules name layers, not their kernels: drop '/kernel'." * rule.endswith(
                "/kernel"
            )
            raise ValueError(
                f"nf.lora: the rule {rule!r} matches no dense layer; the layers with a "
                f"kernel are: {_listing(paths)}. '*' matches within one path segment, "
                f"'**' across segments.{hint}"
            )
        chosen.update(matched)
    return tuple(sorted(chosen))


def _node(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _replace(tree: Mapping[str, Any], parts: Sequence[str], value: Any) -> dict[str, Any]:
    # A copy of ``tree`` with ``value`` at ``parts``; the other subtrees are shared.
    head, *rest = parts
    return {**tree, head: _replace(tree[head], rest, value) if rest else value}


def _adapters(key: jax.Array, path: str, kernel: Any, rank: int) -> dict[str, jax.Array]:
    # lora_a ~ N(0, 1/in) keeps x @ lora_a at the scale of x; lora_b = 0 keeps the output.
    *lead, d_in, d_out = jnp.shape(kernel)
    a = jax.random.normal(child_key(key, path), (*lead, d_in, rank), jnp.float32)
    return {"lora_a": a / jnp.sqrt(d_in), "lora_b": jnp.zeros((*lead, rank, d_out), jnp.float32)}


class LoRA(Layer):
    """``layer`` with a low-rank update on the kernels of the dense layers at ``targets``.

    Each target's kernel ``W`` ``(..., in, out)`` is used as ``W + (alpha / rank) *
    lora_a @ lora_b``, with ``lora_a`` ``(..., in, rank)`` and ``lora_b`` ``(...,
    rank, out)`` stored beside it in the params (leading axes: ``Stack`` copies,
    each with its own adapter). The other params, the state, keys and paths are
    the wrapped layer's. Build one with :func:`lora`, which also adds the
    adapters to trained params.

    Args:
        layer: the base model.
        targets: ``"/"``-joined param paths of the dense layers to adapt (the
            dicts holding their ``kernel``).
        rank: the rank of the update.
        alpha: the update is scaled by ``alpha / rank``.

    Shapes: those of ``layer``.

    Example:
        >>> import jax, jax.numpy as jnp, nnfun as nf
        >>> model = nf.LoRA(nf.Sequential([nf.Dense(8), jax.nn.relu, nf.Dense(2)]), ("0",), rank=2)
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> params["0"]["lora_a"].shape, params["0"]["lora_b"].shape
        ((4, 2), (2, 8))
        >>> model.labels(params)["0"]
        {'bias': 'frozen', 'kernel': 'frozen', 'lora_a': 'adapter', 'lora_b': 'adapter'}
    """

    layer: Any
    targets: tuple[str, ...]
    rank: int = 8
    alpha: float = 16.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", as_layer(self.layer))
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"LoRA targets must be non-empty param paths, got {self.targets!r}")
        object.__setattr__(self, "targets", targets)
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive int, got {self.rank!r}")
        if not isinstance(self.alpha, int | float) or not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be a positive number, got {self.alpha!r}")

    @property
    def scale(self) -> float:
        """``alpha / rank``, the factor of the low-rank update."""
        return self.alpha / self.rank

    @property
    def extras(self) -> frozenset[str]:
        return self.layer.extras

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        params, state = self.layer.init(key, x)
        missing = [t for t in self.targets if t not in dense_paths(params)]
        if missing:
            raise layer_error(
                self,
                f"targets {missing} are not dense layers of the wrapped model; its layers "
                f"with a kernel are: {_listing(dense_paths(params))}.",
            )
        return self.add_adapters(params, key), state

    def add_adapters(self, params: Params, key: jax.Array) -> Params:
        """``params`` with a fresh ``lora_a`` and a zero ``lora_b`` beside each target's kernel."""
        for path in self.targets:
            node = _node(params, path)
            node = {**node, **_adapters(key, path, node["kernel"], self.rank)}
            params = _replace(params, path.split("/"), node)
        return params

    def _checked(self, params: Params, path: str) -> Mapping[str, Any]:
        node = _node(params, path)
        keys = sorted(node) if isinstance(node, Mapping) else None
        if keys is None or not {"kernel", *ADAPTER_KEYS} <= set(keys):
            raise layer_error(
                self,
                f"expected params at '{path}' with kernel, lora_a and lora_b, got "
                f"{keys if keys is not None else 'nothing'}. Fix: build the params with "
                "nf.lora(model, params, rules) or this model's init.",
            )
        kernel, a, b = (jnp.shape(node[k]) for k in ("kernel", *ADAPTER_KEYS))
        *lead, d_in, d_out = kernel
        expected_a, expected_b = (*lead, d_in, self.rank), (*lead, self.rank, d_out)
        if (tuple(a), tuple(b)) != (expected_a, expected_b):
            raise layer_error(
                self,
                f"at '{path}' the kernel {tuple(kernel)} with rank={self.rank} needs lora_a "
                f"{expected_a} and lora_b {expected_b}, got {tuple(a)} and {tuple(b)}. Fix: "
                "use the rank the adapters were made with.",
            )
        return node

    def _check_no_strays(self, params: Params) -> None:
        strays = [p for p in _adapter_paths(params) if p not in self.targets]
        if strays:
            raise layer_error(
                self,
                f"params hold adapters at {strays}, which are not among the targets "
                f"{list(self.targets)}. Fix: use the params made for this LoRA model.",
            )

    def merged(self, params: Params) -> Params:
        """The wrapped layer's params: each target's kernel plus its low-rank update.

        The sum is computed in float32 (or the kernel's dtype, if wider) and cast
        to the kernel's dtype.
        """
        self._check_no_strays(params)
        for path in self.targets:
            node = self._checked(params, path)
            kernel = node["kernel"]
            update = self.scale * jnp.matmul(node["lora_a"], node["lora_b"])
            plain = {k: v for k, v in node.items() if k not in ADAPTER_KEYS}
            wide = jnp.promote_types(kernel.dtype, jnp.float32)
            plain["kernel"] = (kernel.astype(wide) + update.astype(wide)).astype(kernel.dtype)
            params = _replace(params, path.split("/"), plain)
        return params

    def merge(self, params: Params) -> tuple[Layer, Params]:
        """``(base model, plain params)``: the adapters folded into the kernels.

        Example:
            >>> import jax, jax.numpy as jnp, nnfun as nf
            >>> base = nf.Sequential([nf.Dense(3)])
            >>> model = nf.LoRA(base, ("0",), rank=1)
            >>> params, _ = model.init(jax.random.key(0), jnp.zeros((1, 4)))
            >>> plain_model, plain = model.merge(params)
            >>> plain_model == base, sorted(plain["0"])
            (True, ['bias', 'kernel'])
        """
        return self.layer, self.merged(params)

    def labels(self, params: Params) -> dict[str, Any]:
        """``"adapter"`` for every ``lora_a``/``lora_b`` leaf, ``"frozen"`` for the others.

        Pass the method itself to ``optax.multi_transform``:
        ``optax.multi_transform({"adapter": optax.adam(1e-3), "frozen":
        optax.set_to_zero()}, model.labels)``.
        """

        def label(path: tuple[Any, ...], _: Any) -> str:
            last = getattr(path[-1], "key", None) if path else None
            return "adapter" if last in ADAPTER_KEYS else "frozen"

        return jax.tree_util.tree_map_with_path(label, params)

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        return self.layer.apply(self.merged(params), state, x, key=key, train=train)

    def init_cache(self, params: Params, *args: Any, **kwargs: Any) -> State:
        """The wrapped model's decoding cache (``init_cache``) for the merged params."""
        make = getattr(self.layer, "init_cache", None)
        if make is None:
            raise layer_error(self, f"{type(self.layer).__name__} has no init_cache")
        cache: State = make(self.merged(params), *args, **kwargs)
        return cache


def _adapter_paths(params: Mapping[str, Any]) -> list[str]:
    return [path for path in _all_dict_paths(params) if "lora_a" in _node_or_root(params, path)]


def _all_dict_paths(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths = [prefix]
    for name, child in node.items():
        if isinstance(child, Mapping):
            paths += _all_dict_paths(child, f"{prefix}/{name}" if prefix else str(name))
    return paths


def _node_or_root(params: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    node = params if not path else _node(params, path)
    return node if isinstance(node, Mapping) else {}


def lora(
    model: Layer,
    params: Params,
    rules: str | Sequence[str],
    *,
    rank: int = 8,
    alpha: float = 16.0,
    key: jax.Array | int = 0,
) -> tuple[LoRA, Params]:
    """Adds LoRA adapters to the dense layers of ``model`` whose param path matches ``rules``.

    Args:
        model: the base model (any layer: ``Sequential``, ``Stack``, ``GPT``, ...).
        params: its (trained) params; they are not changed.
        rules: a glob or a list of globs over layer paths, the ``"/"``-joined keys
            of the dicts holding a ``kernel`` (``"blocks/layer/attention/*"``;
            ``*`` matches inside one segment, ``**`` across segments).
        rank: the rank of each update.
        alpha: the update is scaled by ``alpha / rank``.
        key: a PRNG key or an int seed for ``lora_a`` (the key is folded with a CRC32 of
            each layer's path).

    Returns:
        ``(lora_model, lora_params)``: a :class:`LoRA` model and ``params`` with
        ``lora_a`` ``(..., in, rank)`` (normal, std ``1/sqrt(in)``) and a zero
        ``lora_b`` ``(..., rank, out)`` beside each matched kernel, in float32.

    Example:
        >>> import jax, jax.numpy as jnp, optax, nnfun as nf
        >>> model = nf.Sequential({"hidden": nf.Dense(8), "act": jax.nn.relu, "out": nf.Dense(2)})
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4)))
        >>> tuned, tuned_params = nf.lora(model, params, "hidden", rank=2)
        >>> tuned.targets, tuned_params["hidden"]["lora_b"].shape
        (('hidden',), (2, 8))
        >>> optimizer = optax.multi_transform(
        ...     {"adapter": optax.adam(1e-3), "frozen": optax.set_to_zero()}, tuned.labels)
        >>> merged_model, merged_params = tuned.merge(tuned_params)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"nf.lora: expected an nnfun Layer as model, got {type(model).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(
            f"nf.lora: expected the model's params (nested dicts), got {type(params).__name__}"
        )
    already = _adapter_paths(params)
    if already:
        raise ValueError(
            f"nf.lora: params already hold adapters at {already}. Fix: merge them first "
            "(model.merge(params)) and adapt the merged model."
        )
    targets = match_dense(params, rules)
    adapted = LoRA(model, targets, rank=rank, alpha=alpha)
    return adapted, adapted.add_adapters(dict(params), as_key(key))
