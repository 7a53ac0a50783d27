"""Typed algorithm parameters: the base dataclass, field helpers, and building params from config.

Every algorithm's ``Params`` is a dataclass derived from :class:`AlgorithmParams`. The front door
builds it once, at config load, with :func:`build_params` (unknown keys, missing required keys,
wrong types and whatever :meth:`AlgorithmParams.validate` rejects are one-line errors), and the
run builder hands that same object to the algorithm, which never re-validates it.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from mixflow.errors import ConfigError

#: What a path-valued parameter must point at; the front door checks it (this layer does no I/O).
PathKind = Literal["file", "model_dir"]


@dataclass(frozen=True)
class ValidationContext:
    """What a params check may know before any data or model is loaded."""

    num_domains: int
    """K: the number of domains of the run."""
    batch_size: int | None = None
    """B: the global batch (all ranks, all micro-batches of one step); None when not known."""


@dataclass
class AlgorithmParams:
    """Base of every algorithm's parameter dataclass. Each field is documented by an attribute
    docstring (the string right below it), which ``mixflow list`` shows.

    A params class with a ``preset: str | None`` field and a ``presets`` table lets a config name a
    documented recipe: ``build_params`` fills every key the config does not set from it.
    """

    #: preset name -> the parameter values it stands for (keys the config sets win).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The field holding fixed sampling proportions, one per domain (a static mixture's), or None: the
    #: config checks them against K, and ``init_mixture_proportions`` overrides them with a warning.
    proportions_field: ClassVar[str | None] = None

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        """Semantic checks, run once at config load (``build_params``), before any data or model
        loads. ``context`` gives K and B where checks depend on them. Raise
        ``ValueError(f"{where}.<key>: expected ...")`` (one line); default: none."""


def param(default: Any, path: PathKind, hint: str = "") -> Any:
    """A path-valued parameter's field: the value names a file or a model directory, which the front
    door checks (``hint`` says what to do when it is missing). Document it with an attribute
    docstring like every other field."""
    return dataclasses.field(default=default, metadata={"path": path, "hint": hint})


@dataclass(frozen=True)
class Bounds:
    """The range a numeric parameter must lie in, declared on its field (:func:`bounded`) and checked
    by :func:`build_params` before the params' own ``validate``; ``mixflow list`` shows it."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = False
    """Also refuse ±inf (NaN never lies in a range)."""
    why: str = ""

    def admits(self, value: float) -> bool:
        return not (
            value != value  # NaN
            or (self.finite and abs(value) == float("inf"))
            or (self.ge is not None and not value >= self.ge)
            or (self.gt is not None and not value > self.gt)
            or (self.le is not None and not value <= self.le)
            or (self.lt is not None and not value < self.lt)
        )

    def describe(self, kind: str, optional: bool) -> str:
        """E.g. "a number in [0, 1)", "a finite number > 0", "an integer >= 2 (why) or null"."""
        low = (
            (f"[{self.ge:g}", f">= {self.ge:g}")
            if self.ge is not None
            else ((f"({self.gt:g}", f"> {self.gt:g}") if self.gt is not None else None)
        )
        high = (
            (f"{self.le:g}]", f"<= {self.le:g}")
            if self.le is not None
            else ((f"{self.lt:g})", f"< {self.lt:g}") if self.lt is not None else None)
        )
        what = f"a finite {kind.split(' ', 1)[1]}" if self.finite else kind
        if low and high:
            text = f"{what} in {low[0]}, {high[0]}"
        else:
            text = f"{what} {(low or high or ('', ''))[1]}".rstrip()
        return text + (f" ({self.why})" if self.why else "") + (" or null" if optional else "")


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = False,
    why: str = "",
) -> Any:
    """A numeric parameter's field with its range (``ge``/``gt`` below, ``le``/``lt`` above): a value
    outside it is the config error ``<where>.<name>: expected a number in [0, 1), got 2``."""
    return dataclasses.field(default=default, metadata={"bounds": Bounds(ge, gt, le, lt, finite, why)})


def check_bounds(params: AlgorithmParams, where: str) -> None:
    """Every declared range of ``params`` (one error for the first value outside its range)."""
    errors = bounds_errors(params, f"{where}.")
    if errors:
        raise ConfigError(errors[0])


def bounds_errors(config: Any, prefix: str = "") -> list[str]:
    """One line for each field of the dataclass ``config`` outside its declared range (:func:`bounded`),
    named ``<prefix><field>``."""
    hints = typing.get_type_hints(type(config))
    errors = []
    for f in dataclasses.fields(config):
        bounds = f.metadata.get("bounds")
        value = getattr(config, f.name)
        if bounds is not None and value is not None and not bounds.admits(float(value)):
            errors.append(f"{prefix}{f.name}: expected {_range_text(bounds, hints[f.name])}, got {value}")
    return errors


def _range_text(bounds: Bounds, hint: Any) -> str:
    args = typing.get_args(hint)
    return bounds.describe("an integer" if int in (hint, *args) else "a number", type(None) in args)


def required_param(expected: str, path: PathKind | None = None, hint: str = "") -> Any:
    """A parameter without a default (declare it before the defaulted ones). Omitting it is the config
    error ``<where>.<name>: required (<expected>)``."""
    return dataclasses.field(metadata={"required": expected, **({"path": path, "hint": hint} if path else {})})


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstring of every field of a params dataclass (its bases' included), one line each."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # defined where no source is kept (e.g. an interactive session)
            continue
        body = ast.parse(source).body[0]
        statements = getattr(body, "body", [])
        for stmt, nxt in zip(statements, statements[1:]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr):
                if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                    docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def declared_paths(params: AlgorithmParams) -> list[tuple[str, PathKind, str, str]]:
    """(field, kind, value, hint) of every path-valued parameter that is set, for the front door."""
    out = []
    for f in dataclasses.fields(params):
        kind = f.metadata.get("path")
        value = getattr(params, f.name)
        if kind and value:
            out.append((f.name, kind, str(value), f.metadata.get("hint", "")))
    return out


def suggest(name: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def build_params(
    cls: type[AlgorithmParams],
    params: Mapping[str, Any] | AlgorithmParams | None,
    where: str,
    context: ValidationContext | None = None,
) -> AlgorithmParams:
    """Validate a params mapping against a params dataclass: unknown keys, missing required keys, wrong
    types and whatever the params' ``validate`` hook rejects are errors."""
    if isinstance(params, AlgorithmParams):  # already built at config load: never checked twice
        return params
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    preset = params.get("preset")
    if preset is not None and "preset" in fields:
        if preset not in cls.presets:
            raise ConfigError(
                f"{where}.preset: expected one of {sorted(cls.presets)}{suggest(str(preset), list(cls.presets))}, got {preset!r}"
            )
        params = {**cls.presets[preset], **params}
    for key in params:
        if key not in fields:
            raise ConfigError(
                f"{where}.{key}: unknown parameter; expected one of {sorted(fields)}{suggest(key, fields)}"
            )
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if no_default and name not in params:
            expected = f.metadata.get("required")
            raise ConfigError(f"{where}.{name}: required" + (f" ({expected})" if expected else ""))
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in params.items():
        values[key] = check_type(value, hints[key], f"{where}.{key}")
    typed = cls(**values)
    check_bounds(typed, where)
    typed.validate(where, context)
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
        raise ConfigError(f"{where}: expected {_describe(hint)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{where}: expected one of {list(args)}{suggest(str(value), [str(a) for a in args])}, got {value!r}"
        )
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {k: check_type(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
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


def describe_params(cls: Any) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each parameter of an algorithm or weighter class."""
    rows = []
    hints = typing.get_type_hints(cls.Params)
    docs = field_docs(cls.Params)
    for f in dataclasses.fields(cls.Params):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        bounds = f.metadata.get("bounds")
        what = _range_text(bounds, hints[f.name]) if bounds is not None else _describe(hints[f.name])
        rows.append((f.name, what, default, docs.get(f.name, "")))
    return rows
