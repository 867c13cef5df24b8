"""Layers to and from JSON-compatible configs, so a saved model rebuilds without its code."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from ._layer import Layer


def _class_path(cls: type) -> str:
    import nnfun

    if getattr(nnfun, cls.__name__, None) is cls:
        return f"nnfun.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(path: str, what: str) -> Any:
    module_name, _, attr = path.rpartition(".") if ":" not in path else path.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(
            f"cannot find {what} {path!r} ({type(e).__name__}: {e}); make the module that "
            "defines it importable (install it or add it to sys.path) before loading"
        ) from e
    return obj


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, Layer):
        return to_config(value, where)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{where}.{k}") for k, v in value.items()}}
    if isinstance(value, (np.dtype, type)) and _is_dtype(value):
        return {"__dtype__": np.dtype(value).name}
    if callable(value):
        module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
        if module and "<" not in qualname:
            path = f"{module}:{qualname}"
            if _import(path, "function") is value:
                return {"__callable__": path}
    raise TypeError(
        f"{where}: cannot write {value!r} ({type(value).__name__}) to a JSON config; use "
        "a name (an initializer or activation string) or a module-level function"
    )


def _is_dtype(value: Any) -> bool:
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__layer__" in value:
        return from_config(value)
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v) for k, v in value["__dict__"].items()}
    if "__dtype__" in value:
        import jax.numpy as jnp

        return jnp.dtype(value["__dtype__"])
    if "__callable__" in value:
        return _import(value["__callable__"], "function")
    raise ValueError(f"unrecognised config entry {value!r}")


def to_config(layer: Layer, where: str = "<root>") -> dict[str, Any]:
    """A JSON-compatible dict that :func:`from_config` turns back into an equal layer.

    Example:
        >>> import json, jax, nnfun as nf
        >>> model = nf.Sequential([nf.Dense(4), jax.nn.relu])
        >>> nf.from_config(json.loads(json.dumps(nf.to_config(model)))) == model
        True
    """
    fields = {
        f.name: _encode(getattr(layer, f.name), f"{where}.{f.name}")
        for f in dataclasses.fields(layer)
        if f.init
    }
    return {"__layer__": _class_path(type(layer)), "fields": fields}


def from_config(config: dict[str, Any]) -> Layer:
    """Rebuilds a layer from :func:`to_config`; user classes are found by import path."""
    cls = _import(config["__layer__"], "layer class")
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ValueError(f"{config['__layer__']!r} is not an nnfun Layer class")
    return cls(**{k: _decode(v) for k, v in config["fields"].items()})
