"""Load and validate a ``mixflow train`` YAML file.

Every check runs here, before any data is tokenized or any model is loaded. Each failure is a
:class:`ConfigError` whose message is one line naming the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from mixflow.algorithms.registry import (
    available_algorithms,
    available_weighters,
    build_params,
    check_type,
    suggest,
)
from mixflow.config.schema import (
    ComponentConfig,
    DataConfig,
    DomainConfig,
    MixingConfig,
    ModelConfig,
    RunConfig,
)

#: TrainingArguments defaults that differ from Hugging Face's, and why.
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",  # nothing reaches an online service unless asked for
    "logging_steps": 10,
    "prediction_loss_only": True,  # evaluation needs the loss only; keeping logits costs memory
    "save_strategy": "steps",
}


class ConfigError(ValueError):
    """A configuration mistake; the message is one line naming the key."""


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def training_argument_names() -> set[str]:
    """Keys accepted by ``transformers.TrainingArguments``."""
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings (values parsed as YAML) into a mapping; dotted keys nest."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path``; errors name ``what`` (the key that pointed there)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what}: file not found: {path}")
    try:
        with open(p, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{what}: {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a mapping of keys in {path}, got {type(data).__name__}")
    return data


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, raw: Mapping[str, Any] | None = None
) -> RunConfig:
    """Read a YAML file (or ``raw``), apply overrides, validate everything that can be checked
    without loading data or a model, and return the typed configuration."""
    data = read_yaml(path, "config") if path is not None else dict(raw or {})
    data = _merge(data, overrides or {})
    base_dir = Path(path).resolve().parent if path is not None else Path.cwd()
    return validate(data, base_dir, str(path) if path is not None else "<dict>")


def _build_section(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    typed = {}
    for key, value in values.items():
        hint = hints[key]
        if key == "dataset" and isinstance(value, str):  # the seed's comma-separated form
            value = [v.strip() for v in value.split(",") if v.strip()]
        if key == "domains" and value is not None:
            value = [_build_nested(DomainConfig, v, f"domains[{i}]") for i, v in enumerate(_as_list(value, key))]
        elif key == "component" and value is not None:
            value = _build_nested(ComponentConfig, value, "component")
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


def _build_nested(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {sorted(fields)}{suggest(key, fields)}")
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in value]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: required key is missing")
    try:
        return cls(**{k: check_type(v, hints[k], f"{where}.{k}") for k, v in value.items()})
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate(data: dict[str, Any], base_dir: Path, source: str) -> RunConfig:
    """Route flat keys to their sections, type-check them and run the cross-field checks."""
    sections: dict[type, dict[str, Any]] = {MixingConfig: {}, DataConfig: {}, ModelConfig: {}}
    owners = {name: cls for cls in sections for name in _fields(cls)}
    training_names = training_argument_names()
    training: dict[str, Any] = {}
    for key, value in data.items():
        if key in owners:
            sections[owners[key]][key] = value
        elif key in training_names:
            training[key] = value
        else:
            known = sorted(set(owners) | training_names)
            raise ConfigError(f"{key}: unknown key{suggest(key, known)}")
    mixing = _build_section(MixingConfig, sections[MixingConfig])
    data_cfg = _build_section(DataConfig, sections[DataConfig])
    model = _build_section(ModelConfig, sections[ModelConfig])
    training = {**TRAINING_DEFAULTS, **training}
    run = RunConfig(mixing=mixing, data=data_cfg, model=model, training=training, source=source)
    _check_data(run, base_dir)
    _check_mixing(run, base_dir)
    _check_model(run)
    _check_training(run)
    _check_task(run, base_dir)
    return run


def domain_names(run: RunConfig) -> list[str]:
    """The domain names in order, from ``domains`` or ``dataset``."""
    if run.data.domains is not None:
        return [d.name for d in run.data.domains]
    return list(run.data.dataset or [])


def _check_data(run: RunConfig, base_dir: Path) -> None:
    d = run.data
    if (d.domains is None) == (d.dataset is None):
        raise ConfigError("dataset: expected exactly one of 'dataset' (names in dataset_info.json) or 'domains' (inline list)")
    names = domain_names(run)
    if not names:
        raise ConfigError("dataset: expected at least one domain")
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset: domain names must be unique, got {names}")
    if d.cutoff_len < 2:
        raise ConfigError(f"cutoff_len: expected an integer >= 2, got {d.cutoff_len}")
    if d.val_size < 0 or (d.val_size >= 1 and d.val_size != int(d.val_size)):
        raise ConfigError(f"val_size: expected a fraction in [0, 1) or a whole number of rows, got {d.val_size}")
    if d.max_samples is not None and d.max_samples < 1:
        raise ConfigError(f"max_samples: expected a positive integer, got {d.max_samples}")
    if d.domains is not None:
        for i, dom in enumerate(d.domains):
            dom.path = _resolve(dom.path, base_dir)
            if not os.path.exists(dom.path):
                raise ConfigError(f"domains[{i}].path: file not found: {dom.path}")
    else:
        d.dataset_dir = _resolve(d.dataset_dir, base_dir)
        info = Path(d.dataset_dir) / "dataset_info.json"
        if not info.is_file():
            raise ConfigError(f"dataset_dir: expected {info} to exist (it maps dataset names to files)")
        from mixflow.data.sources import sources_from_dataset_info

        try:
            sources = sources_from_dataset_info(d.dataset_dir, names)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"dataset: {err}") from None
        for source in sources:
            if not os.path.exists(source.path):
                raise ConfigError(f"dataset: file of domain {source.name!r} not found: {source.path}")


def _resolve(path: str, base_dir: Path) -> str:
    """Paths are relative to the working directory, as in the seed's configs; when that does not
    exist, relative to the config file's directory (both are documented)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return str(p)
    alt = base_dir / p
    return str(alt) if alt.exists() else str(p)


def _check_weights(values: list[float] | None, key: str, k: int) -> None:
    if values is None:
        return
    if len(values) != k:
        raise ConfigError(f"{key}: expected {k} values (one per domain), got {len(values)}")
    if any(v < 0 for v in values):
        raise ConfigError(f"{key}: expected non-negative weights, got {values}")
    if sum(values) <= 0:
        raise ConfigError(f"{key}: expected a positive sum, got {values}")


def resolve_components(run: RunConfig, base_dir: Path | None = None) -> tuple[ComponentConfig, ComponentConfig | None]:
    """(domain-level algorithm, sample weighter or None) selected by train_type and component_name."""
    m = run.mixing
    static = ComponentConfig(name="static")
    if m.component is not None and m.components_cfg_file is not None:
        raise ConfigError("component: give either 'component' (inline) or 'components_cfg_file', not both")
    if m.train_type == "static" and m.component is None and m.components_cfg_file is None:
        return static, None
    section = "weighters" if m.train_type == "dynamic_weight" else "mixers"
    if m.component is not None:
        chosen = m.component
    elif m.components_cfg_file is None:
        if m.train_type == "dynamic_weight":
            raise ConfigError("components_cfg_file: train_type dynamic_weight needs a weighter ('component' or a components file)")
        if m.component_name != "static":
            raise ConfigError(f"components_cfg_file: component_name {m.component_name!r} needs a components file or an inline 'component'")
        chosen = static
    else:
        path = _resolve(m.components_cfg_file, base_dir or Path.cwd())
        m.components_cfg_file = path
        table = read_yaml(path, "components_cfg_file")
        for key in table:
            if key not in ("mixers", "weighters"):
                raise ConfigError(f"components_cfg_file: unknown section {key!r}; expected 'mixers' and/or 'weighters'{suggest(key, ['mixers', 'weighters'])}")
        entries = table.get(section) or {}
        if not isinstance(entries, dict):
            raise ConfigError(f"components_cfg_file: section {section!r} must map names to {{name, params}}")
        if m.component_name not in entries:
            raise ConfigError(
                f"component_name: {m.component_name!r} is not in the {section!r} section of {path}; "
                f"expected one of {sorted(entries)}{suggest(m.component_name, entries)}"
            )
        entry = entries[m.component_name] or {}
        if "name" not in entry:
            entry = {"name": m.component_name, **entry}
        chosen = _build_nested(ComponentConfig, entry, f"{section}.{m.component_name}")
        chosen.params = dict(chosen.params or {})
    if m.train_type == "dynamic_weight":
        return static, chosen
    if m.train_type == "static" and chosen.name != "static":
        raise ConfigError(f"component_name: train_type static expects the static component, got {chosen.name!r}")
    return chosen, None


def _check_mixing(run: RunConfig, base_dir: Path) -> None:
    m = run.mixing
    k = len(domain_names(run))
    _check_weights(m.init_mixture_proportions, "init_mixture_proportions", k)
    _check_weights(m.domain_prior, "domain_prior", k)
    if m.mixture_sample_rule == "temperature" and m.mixture_temperature <= 0:
        raise ConfigError(f"mixture_temperature: expected a positive number, got {m.mixture_temperature}")
    if m.init_mixture_proportions is not None and m.mixture_sample_rule != "mixture":
        raise ConfigError(
            f"init_mixture_proportions: only used with mixture_sample_rule 'mixture', got rule {m.mixture_sample_rule!r}"
        )
    for key in ("warmup_step", "update_step", "update_times"):
        value = getattr(m, key)
        low = {"warmup_step": 0, "update_step": 1, "update_times": -1}[key]
        if value < low:
            raise ConfigError(f"{key}: expected an integer >= {low}, got {value}")
    algorithm, weighter = resolve_components(run, base_dir)
    table = available_algorithms()
    if algorithm.name not in table:
        raise ConfigError(f"component_name: unknown algorithm {algorithm.name!r}; expected one of {sorted(table)}{suggest(algorithm.name, table)}")
    try:
        params = build_params(table[algorithm.name].Params, algorithm.params, f"{algorithm.name}.params")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # Algorithms that evaluate held-out losses (FGLS, ERMA) set `needs_heldout`; a callable decides
    # from the params (VA composed with one of them) and may return the name to report.
    needs = getattr(table[algorithm.name], "needs_heldout", False)
    if callable(needs):
        needs = needs(params)
    if needs and not run.data.val_size:
        who = needs if isinstance(needs, str) else algorithm.name.upper()
        raise ConfigError(f"val_size: {who} needs a held-out split per domain; set val_size > 0")
    proportions = getattr(params, "proportions", None)
    if algorithm.name == "static" and proportions is not None:
        _check_weights(proportions, "static.params.proportions", k)
        if m.init_mixture_proportions is not None and [float(x) for x in m.init_mixture_proportions] != proportions:
            raise ConfigError(
                "static.params.proportions: differs from init_mixture_proportions; give one of them, or the same values"
            )
    if m.static_mix and algorithm.name != "static":
        raise ConfigError(f"static_mix: true expects component_name 'static', got {algorithm.name!r}")
    if weighter is not None:
        wtable = available_weighters()
        if weighter.name not in wtable:
            raise ConfigError(f"component_name: unknown weighter {weighter.name!r}; expected one of {sorted(wtable)}{suggest(weighter.name, wtable)}")
        try:
            build_params(wtable[weighter.name].Params, weighter.params, f"{weighter.name}.params")
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _check_task(run: RunConfig, base_dir: Path) -> None:
    """The classification keys (eval_data, real_data, num_labels) and weighters that need a task."""
    d = run.data
    classification = d.task == "classification"
    names = set(domain_names(run))
    for key in ("eval_data", "real_data"):
        value = getattr(d, key)
        if value is None:
            continue
        if not classification:
            raise ConfigError(f"{key}: only used with task: classification")
        resolved = []
        for path in [value] if isinstance(value, str) else list(value):
            full = _resolve(path, base_dir)
            if not os.path.exists(full):
                raise ConfigError(f"{key}: file not found: {path}")
            stem = Path(full).stem if Path(full).suffix else Path(full).name
            if key == "eval_data" and stem in names:
                raise ConfigError(f"eval_data: {path} would be reported as {stem!r}, which is already a domain name")
            if key == "eval_data":
                names.add(stem)
            resolved.append(full)
        setattr(d, key, resolved)
    if run.model.num_labels is not None:
        if not classification:
            raise ConfigError("num_labels: only used with task: classification")
        if run.model.num_labels < 2:
            raise ConfigError(f"num_labels: expected an integer >= 2, got {run.model.num_labels}")
    _, weighter = resolve_components(run, base_dir)
    # A weighter whose weights only mean something for one task says so in `required_task`.
    needs = getattr(available_weighters().get(weighter.name), "required_task", None) if weighter is not None else None
    if needs is not None and needs != d.task:
        raise ConfigError(f"task: the {weighter.name} weighter needs task: {needs}, got {d.task}")


def _check_model(run: RunConfig) -> None:
    m = run.model
    if (m.model_name_or_path is None) == (m.model_config is None):
        raise ConfigError("model_name_or_path: expected exactly one of 'model_name_or_path' (a local directory) or 'model_config'")
    if m.model_name_or_path is not None and not Path(m.model_name_or_path).is_dir():
        raise ConfigError(f"model_name_or_path: expected a local model directory, not found: {m.model_name_or_path}")
    if m.model_config is not None and "model_type" not in m.model_config:
        raise ConfigError("model_config.model_type: required (e.g. llama)")
    if m.model_config is not None:
        from transformers import CONFIG_MAPPING

        if m.model_config["model_type"] not in CONFIG_MAPPING:
            mt = str(m.model_config["model_type"])
            raise ConfigError(f"model_config.model_type: unknown model type {mt!r}{suggest(mt, list(CONFIG_MAPPING.keys()))}")
    tok = run.data.tokenizer
    if tok not in (None, "byte") and not Path(tok).is_dir():
        raise ConfigError(f"tokenizer: expected 'byte' or a local tokenizer directory, not found: {tok}")


def _check_training(run: RunConfig) -> None:
    t = run.training
    if not t.get("output_dir"):
        raise ConfigError("output_dir: required (where checkpoints, logs and plots go)")
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    for key, value in t.items():
        hint = hints.get(key)
        if hint in (int, float, bool, str):
            try:
                t[key] = check_type(value, hint, key)
            except ValueError as err:
                raise ConfigError(str(err)) from None
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if key in t and t[key] < 1:
            raise ConfigError(f"{key}: expected an integer >= 1, got {t[key]}")
    if "learning_rate" in t and t["learning_rate"] < 0:
        raise ConfigError(f"learning_rate: expected a number >= 0, got {t['learning_rate']}")
    try:
        TrainingArguments(**t)
    except (ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"training arguments: {first}") from None
