"""Reading config files and turning mappings into typed config dataclasses."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mixflow.algorithms.params import check_type, suggest
from mixflow.config.errors import ConfigError
from mixflow.config.schema import ComponentConfig, DomainConfig


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's scalars: only ``true``/``false`` are booleans (``no``,
    ``on``, ``off``, ``yes`` stay the strings users mean, e.g. ``save_strategy: no``), ``1e-4``
    is a number and ``1:30`` a string, as in every other YAML 1.2 and JSON reader. A key given
    twice in one mapping is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key}: given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_INT = "tag:yaml.org,2002:int"
ConfigLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] not in (_BOOL, _FLOAT, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.2 integers: no sexagesimal 1:30 (= 90 in YAML 1.1)
ConfigLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$"), list("-+0123456789")
)
ConfigLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ConfigLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (config files and ``key=value`` overrides alike)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings (values parsed as YAML 1.2 scalars) into a mapping; dotted keys nest."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key (neither is modified)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path``; errors name ``what`` (the key that pointed there)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what}: file not found: {path}")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or ""
        if "given twice" in problem:
            raise ConfigError(f"{problem} in {path}") from None
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{what}: {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a mapping of keys in {path}, got {type(data).__name__}")
    return data


def build_section(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    typed = {}
    for key, value in values.items():
        hint = hints[key]
        if key in ("dataset", "eval_dataset") and isinstance(value, str):  # the seed's comma-separated form
            value = [v.strip() for v in value.split(",") if v.strip()]
        if key == "domains" and value is not None:
            value = [build_nested(DomainConfig, v, f"domains[{i}]") for i, v in enumerate(_as_list(value, key))]
        elif key == "component" and value is not None:
            value = build_nested(ComponentConfig, value, "component")
        else:
            try:
                value = check_type(value, hint, key)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        typed[key] = value
    return cls(**typed)


def _as_list(value: Any, key: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    return value


def build_nested(cls: type, value: Any, where: str) -> Any:
    """A nested config dataclass from a mapping (unknown keys, missing keys and types checked)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    fields = fields_of(cls)
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {sorted(fields)}{suggest(key, fields)}")
    missing = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in value
    ]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required key is missing")
    try:
        return cls(**{k: check_type(v, hints[k], f"{where}.{k}") for k, v in value.items()})
    except ValueError as err:
        raise ConfigError(str(err)) from None
