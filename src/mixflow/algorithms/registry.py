"""Registries of algorithms and sample weighters, and building them from config."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, Sequence, TypeVar

import numpy as np

from mixflow.algorithms.base import AlgorithmParams, DomainAlgorithm, SampleWeighter

_ALGORITHMS: dict[str, type[DomainAlgorithm]] = {}
_WEIGHTERS: dict[str, type[SampleWeighter]] = {}

A = TypeVar("A", bound=type)

def register_algorithm(cls: A) -> A:
    """Class decorator: make a :class:`DomainAlgorithm` buildable by its ``name``."""
    _register(_ALGORITHMS, cls, "algorithm")
    return cls

def register_weighter(cls: A) -> A:
    """Class decorator: make a :class:`SampleWeighter` buildable by its ``name``."""
    _register(_WEIGHTERS, cls, "weighter")
    return cls

def _register(table: dict, cls: type, kind: str) -> None:
    name = getattr(cls, "name", None)
    if not name:
        raise TypeError(f"{cls.__name__}: a registered {kind} needs a class attribute 'name'")
    if name in table and table[name] is not cls:
        raise ValueError(f"{kind} {name!r} is already registered by {table[name].__qualname__}")
    table[name] = cls

def unregister(name: str) -> None:
    """Remove a registered algorithm or weighter (for tests and plugins)."""
    _ALGORITHMS.pop(name, None)
    _WEIGHTERS.pop(name, None)

def available_algorithms() -> dict[str, type[DomainAlgorithm]]:
    return dict(sorted(_ALGORITHMS.items()))

def available_weighters() -> dict[str, type[SampleWeighter]]:
    return dict(sorted(_WEIGHTERS.items()))

def suggest(name: str, choices: Sequence[str]) -> str:
    """" (did you mean 'x'?)" for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

def _lookup(table: Mapping[str, type], name: str, kind: str, key: str) -> type:
    if name not in table:
        raise ValueError(f"{key}: unknown {kind} {name!r}; expected one of {sorted(table)}{suggest(name, table)}")
    return table[name]

def build_params(cls: type[AlgorithmParams], params: Mapping[str, Any] | None, where: str) -> AlgorithmParams:
    """Validate a params mapping against a params dataclass: unknown keys, missing required keys, wrong
    types and whatever the params' ``validate`` hook rejects are errors."""
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in params:
        if key not in fields:
            raise ValueError(f"{where}.{key}: unknown parameter; expected one of {sorted(fields)}{suggest(key, fields)}")
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if no_default and name not in params:
            expected = f.metadata.get("required")
            raise ValueError(f"{where}.{name}: required" + (f" ({expected})" if expected else ""))
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in params.items():
        values[key] = check_type(value, hints[key], f"{where}.{key}")
    typed = cls(**values)
    if hasattr(typed, "validate"):
        typed.validate(where)
    return typed

def check_type(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a (simple) type hint, converting int → float where a float is expected.

    Supports the hints config dataclasses use: bool, int, float, str, None, Literal, Optional/Union,
    list[...], dict[str, ...] and Any.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return check_type(value, option, where)
            except ValueError as err:
                errors.append(err)
        raise ValueError(f"{where}: expected {_describe(hint)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ValueError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}: expected one of {list(args)}{suggest(str(value), [str(a) for a in args])}, got {value!r}")
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {k: check_type(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {value!r}")
    return value

def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + str(list(args))
    if origin in (list, tuple, Sequence):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if hint is type(None):
        return "null"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))

def build_algorithm(
    name: str,
    domain_names: Sequence[str],
    params: Mapping[str, Any] | None = None,
    init_weights: Sequence[float] | np.ndarray | None = None,
    prior: Sequence[float] | np.ndarray | None = None,
    where: str = "component",
) -> DomainAlgorithm:
    """Build a registered domain-level algorithm from its name and a params mapping."""
    cls = _lookup(_ALGORITHMS, name, "algorithm", f"{where}.name")
    typed = build_params(cls.Params, params, f"{where}.params")
    k = len(domain_names)
    init = np.full(k, 1.0 / k) if init_weights is None else init_weights
    return cls(domain_names, typed, init_weights=init, prior=prior)

def build_weighter(
    name: str, domain_names: Sequence[str], params: Mapping[str, Any] | None = None, where: str = "weighter"
) -> SampleWeighter:
    """Build a registered sample weighter from its name and a params mapping."""
    cls = _lookup(_WEIGHTERS, name, "weighter", f"{where}.name")
    return cls(domain_names, build_params(cls.Params, params, f"{where}.params"))

def describe_params(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each parameter of an algorithm or weighter class."""
    rows = []
    hints = typing.get_type_hints(cls.Params)
    for f in dataclasses.fields(cls.Params):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((f.name, _describe(hints[f.name]), default, f.metadata.get("help", "")))
    return rows
