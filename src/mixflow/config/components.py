"""Which algorithm and weighter a run uses: ``train_type`` with ``component`` or a components file.

The keys of the DoReMi pipeline's user documentation: ``train_type`` (static | dynamic_mix | dynamic_weight),
``components_cfg_file`` (a YAML with ``mixers:`` and ``weighters:`` sections) and
``component_name``, or an inline ``component``. The choice is made once, at load, and the chosen
component's params are built there (with the run's K and B), never again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mixflow.algorithms.params import ValidationContext, build_params, suggest
from mixflow.algorithms.registry import lookup
from mixflow.config.errors import ConfigError
from mixflow.config.parse import build_nested, read_yaml
from mixflow.config.paths import resolve_path
from mixflow.config.schema import ComponentConfig, ResolvedComponent, RunConfig, domain_names

SECTIONS = ("mixers", "weighters")


def global_batch_size(training: dict[str, Any], world_size: int | None = None) -> int:
    """B: ``per_device_train_batch_size × world size × gradient_accumulation_steps``; the world size
    defaults to the launcher's ``WORLD_SIZE`` (1 without one), known before anything loads."""
    world = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    per_device = int(training.get("per_device_train_batch_size", 8))
    return per_device * world * int(training.get("gradient_accumulation_steps", 1))


def static_component() -> ResolvedComponent:
    """The plain static mixture (its proportions come from the run's mixture keys)."""
    return ResolvedComponent(
        "static", build_params(lookup("static", "algorithm", "component_name").Params, {}, "static.params"), "static"
    )


def resolve_components(
    run: RunConfig, base_dir: Path, k_known: bool = True, b_known: bool = True
) -> tuple[ResolvedComponent, ResolvedComponent | None]:
    """(domain algorithm, sample weighter or None), their params typed and validated with (K, B).
    ``k_known`` / ``b_known`` False where the list of domains / the training keys failed their
    checks: the names and every params check that needs neither still run (a typo in a component's
    name is reported with the other errors, not after they are fixed)."""
    algorithm, weighter = _choose(run, base_dir)
    batch = global_batch_size(run.training) if b_known else None
    context = ValidationContext(len(domain_names(run)), batch) if k_known else None
    return _typed(algorithm, "algorithm", context), (
        _typed(weighter, "weighter", context) if weighter is not None else None
    )


def _typed(spec: tuple[ComponentConfig, str], kind: str, context: ValidationContext | None) -> ResolvedComponent:
    component, section = spec
    try:  # errors name the key the user wrote: component.name, or mixers.<entry>.name in a components file
        cls = lookup(component.name, kind, f"{section}.name")
        params = build_params(cls.Params, component.params, f"{component.name}.params", context)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return ResolvedComponent(component.name, params, section)


def _choose(run: RunConfig, base_dir: Path) -> tuple[tuple[ComponentConfig, str], tuple[ComponentConfig, str] | None]:
    m = run.mixing
    static = (ComponentConfig(name="static"), "static")
    if m.component is not None and m.components_cfg_file is not None:
        raise ConfigError("component: give either 'component' (inline) or 'components_cfg_file', not both")
    if m.train_type == "static" and m.component is None and m.components_cfg_file is None:
        if m.component_name != "static":  # nothing would read it: a typo must not train a static mixture
            raise ConfigError(
                f"component_name: {m.component_name!r} is ignored with train_type static and no components file; "
                "give components_cfg_file (or component), or remove it"
            )
        return static, None
    if m.component is not None:
        chosen = (m.component, "component")
    elif m.components_cfg_file is None:
        if m.train_type == "dynamic_weight":
            raise ConfigError(
                "components_cfg_file: train_type dynamic_weight needs a weighter ('component' or a components file)"
            )
        if m.component_name != "static":
            raise ConfigError(
                f"components_cfg_file: component_name {m.component_name!r} needs a components file or an inline 'component'"
            )
        chosen = static
    else:
        chosen = _from_file(resolve_path(m.components_cfg_file, base_dir), m.component_name, _section(m.train_type))
    if m.train_type == "dynamic_weight":
        return static, chosen
    if m.train_type == "static" and chosen[0].name != "static":
        raise ConfigError(f"component_name: train_type static expects the static component, got {chosen[0].name!r}")
    return chosen, None


def _section(train_type: str) -> str:
    return "weighters" if train_type == "dynamic_weight" else "mixers"


def _from_file(path: str, name: str, section: str) -> tuple[ComponentConfig, str]:
    """Entry ``name`` of ``section`` in the components file at ``path``."""
    table = read_yaml(path, "components_cfg_file")
    for key in table:
        if key not in SECTIONS:
            raise ConfigError(
                f"components_cfg_file: unknown section {key!r}; expected 'mixers' and/or 'weighters'{suggest(key, SECTIONS)}"
            )
    entries = table.get(section) or {}
    if not isinstance(entries, dict):
        raise ConfigError(f"components_cfg_file: section {section!r} must map names to {{name, params}}")
    if name not in entries:
        raise ConfigError(
            f"component_name: {name!r} is not in the {section!r} section of {path}; "
            f"expected one of {sorted(entries)}{suggest(name, entries)}"
        )
    entry = entries[name] or {}
    if "name" not in entry:
        entry = {"name": name, **entry}
    chosen = build_nested(ComponentConfig, entry, f"{section}.{name}")
    return ComponentConfig(chosen.name, dict(chosen.params or {})), f"{section}.{name}"
