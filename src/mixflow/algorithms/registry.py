"""Registries of domain algorithms and sample weighters: registering, discovering, building.

A new algorithm is one file: a module in this package (or in a plugin package that declares an
entry point in the ``mixflow.algorithms`` group) whose class carries ``@register_algorithm`` or
``@register_weighter``. :func:`discover` imports every such module once, the first time a registry
is read, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm, SampleWeighter
from mixflow.algorithms.params import AlgorithmParams, ValidationContext, build_params, suggest
from mixflow.errors import ConfigError

logger = logging.getLogger(__name__)

#: Entry-point group through which plugin packages add algorithm modules.
ENTRY_POINT_GROUP = "mixflow.algorithms"

_ALGORITHMS: dict[str, type[DomainAlgorithm]] = {}
_WEIGHTERS: dict[str, type[SampleWeighter]] = {}
_DISCOVERED: set[str] = set()

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


def discover_modules(package: str, group: str) -> None:
    """Import every public module of ``package`` and every entry point of ``group``, once.

    Importing a module is what registers the components it defines; a plugin's entry point names
    a module (or an object in one) to import.
    """
    if package in _DISCOVERED:
        return
    _DISCOVERED.add(package)
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    for entry in importlib.metadata.entry_points(group=group):
        logger.debug("loading plugin %s from %s", entry.name, entry.value)
        entry.load()


def discover() -> None:
    """Import every algorithm module of mixflow and of installed plugins (idempotent)."""
    discover_modules("mixflow.algorithms", ENTRY_POINT_GROUP)


def available_algorithms() -> dict[str, type[DomainAlgorithm]]:
    """Registered domain algorithms by name."""
    discover()
    return dict(sorted(_ALGORITHMS.items()))


def available_weighters() -> dict[str, type[SampleWeighter]]:
    """Registered sample weighters by name."""
    discover()
    return dict(sorted(_WEIGHTERS.items()))


@overload
def lookup(name: str, kind: Literal["algorithm"], key: str) -> type[DomainAlgorithm[Any]]: ...
@overload
def lookup(name: str, kind: Literal["weighter"], key: str) -> type[SampleWeighter[Any]]: ...
@overload
def lookup(name: str, kind: str, key: str) -> type[DomainAlgorithm[Any]] | type[SampleWeighter[Any]]: ...
def lookup(name: str, kind: str, key: str) -> type[DomainAlgorithm[Any]] | type[SampleWeighter[Any]]:
    """The registered class ``name`` of ``kind`` ("algorithm" or "weighter"); errors name ``key``."""
    table: Mapping[str, type[DomainAlgorithm[Any]] | type[SampleWeighter[Any]]] = (
        available_algorithms() if kind == "algorithm" else available_weighters()
    )
    if name not in table:
        raise ConfigError(f"{key}: unknown {kind} {name!r}; expected one of {sorted(table)}{suggest(name, table)}")
    return table[name]


def build_algorithm(
    name: str,
    domain_names: Sequence[str],
    params: Mapping[str, Any] | AlgorithmParams | None = None,
    init_weights: Sequence[float] | np.ndarray | None = None,
    prior: Sequence[float] | np.ndarray | None = None,
    where: str = "component",
    batch_size: int | None = None,
) -> DomainAlgorithm:
    """Build a registered domain algorithm from its name and params (a mapping, validated here with
    K and ``batch_size``, or params already built at config load, used as they are). Errors name
    ``<where>.params.<key>``."""
    cls = lookup(name, "algorithm", f"{where}.name")
    k = len(domain_names)
    typed = build_params(cls.Params, params, f"{where}.params", ValidationContext(k, batch_size))
    init = np.full(k, 1.0 / k) if init_weights is None else init_weights
    return cls(domain_names, typed, init_weights=init, prior=prior)


def build_weighter(
    name: str,
    domain_names: Sequence[str],
    params: Mapping[str, Any] | AlgorithmParams | None = None,
    where: str = "weighter",
) -> SampleWeighter:
    """Build a registered sample weighter from its name and params (see :func:`build_algorithm`)."""
    cls = lookup(name, "weighter", f"{where}.name")
    typed = build_params(cls.Params, params, f"{where}.params", ValidationContext(len(domain_names)))
    return cls(domain_names, typed)
