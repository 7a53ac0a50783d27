"""The data keys' checks of a ``mixflow train`` config (which domains, their files and kinds, the
evaluation sets), run once at load before any data is read; every problem at once, each one line."""

from __future__ import annotations

from pathlib import Path

from mixflow.config.errors import ConfigError, ConfigErrors
from mixflow.config.paths import resolve_path
from mixflow.config.schema import DataConfig, RunConfig, domain_names
from mixflow.data.packing import check_cutoff_len
from mixflow.data.sources import DomainSource, domain_source, resolve_files, sources_from_dataset_info


def domain_list_error(run: RunConfig) -> str | None:
    """What is wrong with the list of domains itself (which domains, not their files), or None: then
    K is known even where a domain's files are not found."""
    d = run.data
    if (d.domains is None) == (d.dataset is None):
        return "dataset: expected exactly one of 'dataset' (names in dataset_info.json) or 'domains' (inline list)"
    names = domain_names(run)
    if not names:
        return "dataset: expected at least one domain"
    if len(set(names)) != len(names):
        return f"dataset: domain names must be unique, got {names}"
    return None


def check_data(run: RunConfig, base_dir: Path) -> None:
    """The data keys; every problem of every domain at once (the structure first: which domains)."""
    structure = domain_list_error(run)
    if structure is not None:
        raise ConfigError(structure)
    d, names = run.data, domain_names(run)
    errors: list[str] = []
    try:
        check_cutoff_len(d.cutoff_len)
    except ValueError as err:
        errors.append(str(err))
    if d.val_size < 0 or (d.val_size >= 1 and d.val_size != int(d.val_size)):
        errors.append(f"val_size: expected a fraction in [0, 1) or a whole number of rows, got {d.val_size}")
    if d.max_samples is not None and d.max_samples < 1:
        errors.append(f"max_samples: expected a positive integer, got {d.max_samples}")
    if d.preprocessing_num_workers is not None and d.preprocessing_num_workers < 1:
        errors.append(f"preprocessing_num_workers: expected a positive integer, got {d.preprocessing_num_workers}")
    if d.tokenized_dir is not None:
        d.tokenized_dir = str(Path(d.tokenized_dir).expanduser())
    errors += _inline_domain_errors(d, base_dir) if d.domains is not None else _dataset_errors(d, names, base_dir)
    errors += _eval_dataset_errors(d)
    if errors:
        raise ConfigErrors(errors) if len(errors) > 1 else ConfigError(errors[0])


def _eval_dataset_errors(d: DataConfig) -> list[str]:
    """``eval_dataset``: text sets named in ``dataset_info.json``, for a language model."""
    if not d.eval_dataset:
        return []
    if d.task == "classification":
        return ["eval_dataset: a language model's evaluation sets; a classifier's are eval_data"]
    if d.domains is not None:
        return [
            "eval_dataset: names in <dataset_dir>/dataset_info.json, which inline domains do not use; "
            "give the domains with dataset and dataset_dir"
        ]
    errors = [
        f"eval_dataset: {n!r} is a training domain (its file trains the model); name a separate entry, e.g. {n}_eval"
        for n in d.eval_dataset
        if n in (d.dataset or [])
    ]
    try:
        sources = sources_from_dataset_info(d.dataset_dir, [n for n in d.eval_dataset if n not in (d.dataset or [])])
    except (ValueError, FileNotFoundError) as err:
        return [*errors, f"eval_dataset: {err}"]
    for source in sources:
        try:
            resolve_files(source)
        except (ValueError, FileNotFoundError) as err:
            errors.append(f"eval_dataset: {err}")
        if source.formatting is not None:
            errors.append(f"eval_dataset: {source.name!r} is instruction data; evaluation sets are text here")
    return errors


def _inline_domain_errors(d: DataConfig, base_dir: Path) -> list[str]:
    errors = []
    for i, dom in enumerate(d.domains or []):
        paths = [resolve_path(p, base_dir) for p in (dom.path if isinstance(dom.path, list) else [dom.path])]
        dom.path = paths if isinstance(dom.path, list) else paths[0]
        try:
            resolve_files(DomainSource(dom.name, dom.path, token_format=dom.format))
        except (ValueError, FileNotFoundError) as err:
            errors.append(f"domains[{i}].path: {err}")
            continue
        try:
            source = domain_source(
                dom.name,
                dom.path,
                f"domains[{i}]",
                dom.text_field,
                dom.formatting,
                dom.columns,
                dom.tags,
                dom.format,
                dom.dtype,
                dom.eos_id,
            )
            _check_kind(d, dom.name, source.formatting is not None)
        except ValueError as err:  # ConfigError included
            errors.append(str(err))
    return errors


def _dataset_errors(d: DataConfig, names: list[str], base_dir: Path) -> list[str]:
    d.dataset_dir = resolve_path(d.dataset_dir, base_dir)
    info = Path(d.dataset_dir) / "dataset_info.json"
    if not info.is_file():
        return [f"dataset_dir: expected {info} to exist (it maps dataset names to files)"]
    try:
        sources = sources_from_dataset_info(d.dataset_dir, names)
    except (ValueError, FileNotFoundError) as err:
        return [f"dataset: {err}"]
    errors = []
    for source in sources:
        try:
            resolve_files(source)
            _check_kind(d, source.name, source.formatting is not None)
        except ConfigError as err:
            errors.append(str(err))
        except (ValueError, FileNotFoundError) as err:
            errors.append(f"dataset: {err}")
    return errors


def _check_kind(d: DataConfig, name: str, instruction: bool) -> None:
    """A domain's kind (plain text or instruction data) against ``stage`` and ``task``."""
    stage = d.stage
    if instruction and d.task == "classification":
        raise ConfigError(
            f"task: classification reads a text and a label per example, but domain {name!r} is "
            "instruction data (alpaca / sharegpt)"
        )
    if stage == "sft" and not instruction:
        raise ConfigError(
            f"stage: sft trains on instruction data, but domain {name!r} is plain text (give it a "
            "formatting and columns, or remove stage)"
        )
    if stage == "pt" and instruction:
        raise ConfigError(
            f"stage: pt trains on plain text, but domain {name!r} is instruction data (use stage: sft, "
            "or remove stage to mix both)"
        )
