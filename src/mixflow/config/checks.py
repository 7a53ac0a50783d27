"""The cross-field checks of a ``mixflow train`` config, run once at load (before any data or model).

Each check raises :class:`~mixflow.config.errors.ConfigError` with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import typing
from pathlib import Path
from typing import Any

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import check_type, declared_paths
from mixflow.algorithms.registry import lookup
from mixflow.config.errors import ConfigError, ConfigErrors
from mixflow.config.paths import resolve_path
from mixflow.config.schema import ResolvedComponent, RunConfig, domain_names
from mixflow.engine.schedule import UpdateSchedule
from mixflow.providers.base import provider_needs

logger = logging.getLogger(__name__)


def _check_weights(values: list[float] | None, key: str, k: int) -> None:
    if values is None:
        return
    if len(values) != k:
        raise ConfigError(f"{key}: expected {k} values (one per domain), got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{key}: expected finite weights, got {values}")
    if any(v < 0 for v in values):
        raise ConfigError(f"{key}: expected non-negative weights, got {values}")
    if sum(values) <= 0:
        raise ConfigError(f"{key}: expected a positive sum, got {values}")


def _collect(errors: list[str], check: typing.Callable[..., typing.Any], *args: typing.Any) -> typing.Any:
    """``check(*args)``, or None with its error(s) appended to ``errors``."""
    try:
        return check(*args)
    except ConfigErrors as err:
        errors += err.messages
    except ConfigError as err:
        errors.append(str(err))
    return None


def check_mixing_keys(run: RunConfig) -> None:
    """The mixing keys on their own (they need no resolved component): every problem at once."""
    errors = _mixing_key_errors(run)
    if errors:
        raise ConfigErrors(errors) if len(errors) > 1 else ConfigError(errors[0])


def check_mixing(run: RunConfig, base_dir: Path) -> None:
    """What the chosen algorithm and weighter need from the rest of the run: every problem at once."""
    m = run.mixing
    try:
        schedule: UpdateSchedule | None = UpdateSchedule(m.warmup_step, m.update_step, m.update_times)
    except ValueError:
        schedule = None  # reported by check_mixing_keys
    errors = _algorithm_errors(run, schedule, len(domain_names(run)))
    if errors:
        raise ConfigErrors(errors) if len(errors) > 1 else ConfigError(errors[0])


def _mixing_key_errors(run: RunConfig) -> list[str]:
    m = run.mixing
    try:
        k = len(domain_names(run))
    except (ValueError, ConfigError):
        return []  # the data keys' own check names the problem
    errors: list[str] = []
    _collect(errors, _check_weights, m.init_mixture_proportions, "init_mixture_proportions", k)
    _collect(errors, _check_weights, m.domain_prior, "domain_prior", k)
    if m.mixture_sample_rule == "temperature" and m.mixture_temperature <= 0:
        errors.append(f"mixture_temperature: expected a positive number, got {m.mixture_temperature}")
    if not m.unimax_max_epochs > 0:
        errors.append(f"unimax_max_epochs: expected a number > 0, got {m.unimax_max_epochs}")
    errors += _max_epochs_errors(m.max_epochs, domain_names(run))
    if m.init_mixture_proportions is not None and m.mixture_sample_rule != "mixture":
        errors.append(
            f"init_mixture_proportions: only used with mixture_sample_rule 'mixture', got rule {m.mixture_sample_rule!r}"
        )
    try:
        UpdateSchedule(m.warmup_step, m.update_step, m.update_times)
    except ValueError as err:
        errors.append(str(err))
    workers = run.training.get("dataloader_num_workers") or 0
    if isinstance(workers, int) and not isinstance(workers, bool):
        from mixflow.integrations.hf_trainer import read_ahead

        ahead = read_ahead(workers, run.training.get("dataloader_prefetch_factor"))
        if m.mixture_plan_horizon < ahead:
            errors.append(
                f"mixture_plan_horizon: {m.mixture_plan_horizon} is shorter than the DataLoader's read-ahead "
                f"of {ahead} batches (1 + dataloader_num_workers × prefetch); set it to {ahead} or more: "
                "new weights then apply at the same batch for any number of workers"
            )
    return errors


def _max_epochs_errors(value: Any, names: list[str]) -> list[str]:
    """``max_epochs``: a number > 0, one per domain (null: no cap) or {domain: number > 0}."""
    if value is None:
        return []
    if isinstance(value, dict):
        errors = [f"max_epochs.{k}: not a domain of this run ({', '.join(names)})" for k in value if k not in names]
        items = list(value.items())
    elif isinstance(value, list):
        errors = (
            []
            if len(value) == len(names)
            else [f"max_epochs: expected {len(names)} values (one per domain: {', '.join(names)}), got {len(value)}"]
        )
        items = [(str(i), v) for i, v in enumerate(value) if v is not None]
    else:
        items, errors = [("", value)], []
    return errors + [
        f"max_epochs{'.' + k if k else ''}: expected a finite number > 0, got {v!r}"
        for k, v in items
        if not (isinstance(v, (int, float)) and 0 < v < float("inf"))
    ]


def per_domain_epochs(value: Any, names: list[str]) -> float | list[float | None] | None:
    """``max_epochs`` as the sampler takes it: one number, or one per domain in ``names`` order."""
    if isinstance(value, dict):
        return [value.get(n) for n in names]
    return value


def _algorithm_errors(run: RunConfig, schedule: UpdateSchedule | None, k: int) -> list[str]:
    """What the chosen algorithm and weighter need from the rest of the run."""
    m, algorithm, errors = run.mixing, run.algorithm, []
    assert algorithm is not None, "resolve_components runs before check_mixing"
    steps = run.training.get("max_steps")
    cls = lookup(algorithm.name, "algorithm", "component_name")
    # an algorithm with its own calendar (update_due) is not updated on the run's schedule
    updates = cls.needs_updates(algorithm.params) and cls.update_due is DomainAlgorithm.update_due
    if schedule is not None and updates and isinstance(steps, int) and steps > 0:
        # an adaptive algorithm that never updates trains a static mixture while the user believes otherwise
        first = schedule.first_update()
        if first is None:
            errors.append(
                f"update_times: 0 means {algorithm.name} never updates; use train_type: static for a "
                "fixed mixture, or update_times: -1"
            )
        elif first > steps:
            errors.append(
                f"warmup_step/update_step: {algorithm.name}'s first update would be at step {first}, after "
                f"max_steps {steps}: the run would train on its initial weights only"
            )
    for spec in lookup(algorithm.name, "algorithm", "component_name").provider_specs(algorithm.params):
        if provider_needs(spec.name).heldout_rows and not run.data.val_size:
            errors.append(f"val_size: {spec.owner} needs a held-out split per domain; set val_size > 0")
    key = algorithm.params.proportions_field
    proportions = getattr(algorithm.params, key) if key is not None else None
    if key is not None and proportions is not None:
        _collect(errors, _check_weights, proportions, f"{algorithm.name}.params.{key}", k)
        if m.init_mixture_proportions is not None and [float(x) for x in m.init_mixture_proportions] != proportions:
            # The seed's step 3 sets the learned weights at run level over a shared components file.
            logger.warning(
                "init_mixture_proportions %s overrides %s.params.%s %s of %s",
                m.init_mixture_proportions,
                algorithm.name,
                key,
                proportions,
                algorithm.section,
            )
            run.algorithm = dataclasses.replace(algorithm, params=dataclasses.replace(algorithm.params, **{key: None}))
    if m.static_mix and algorithm.name != "static":
        errors.append(f"static_mix: true expects component_name 'static', got {algorithm.name!r}")
    for component in (algorithm, run.weighter):
        if component is not None:
            _collect(errors, check_param_paths, component)
    return errors


def check_param_paths(component: ResolvedComponent) -> None:
    """Every path an algorithm's params declare (``param(..., path=...)``) exists and has the right kind."""
    for key, kind, value, hint in declared_paths(component.params):
        where = f"{component.name}.params.{key}"
        path = Path(value).expanduser()
        suffix = f" ({hint})" if hint else ""
        if kind == "file" and not path.is_file():
            raise ConfigError(f"{where}: file not found: {value}{suffix}")
        if kind == "model_dir":
            if not path.is_dir():
                raise ConfigError(f"{where}: expected a local model directory, not found: {value}{suffix}")
            # a LoRA adapter's directory holds adapter_config.json, its base model config.json
            if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
                raise ConfigError(
                    f"{where}: {value} has no config.json or adapter_config.json (not a model or adapter directory)"
                )


def check_task(run: RunConfig, base_dir: Path) -> None:
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
            full = resolve_path(path, base_dir)
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
    weighter = run.weighter
    if weighter is not None and (needs := lookup(weighter.name, "weighter", "component_name").required_task) not in (
        None,
        d.task,
    ):
        raise ConfigError(f"task: the {weighter.name} weighter needs task: {needs}, got {d.task}")


def check_training(run: RunConfig) -> None:
    t = run.training
    if not t.get("output_dir"):
        raise ConfigError("output_dir: required (where checkpoints, logs and plots go)")
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    errors = []
    for key, value in t.items():
        hint = hints.get(key)
        if hint in (int, float, bool, str):
            try:
                t[key] = check_type(value, hint, key)
            except ValueError as err:
                errors.append(str(err))
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if isinstance(t.get(key), int) and t[key] < 1:
            errors.append(f"{key}: expected an integer >= 1, got {t[key]}")
    steps = t.get("max_steps")
    if isinstance(steps, int) and steps <= 0 and steps != -1:  # -1: the Trainer's "derive it from the epochs"
        errors.append(f"max_steps: expected a positive number of optimizer steps (or leave it unset), got {steps}")
    for key in ("save_steps", "logging_steps", "eval_steps"):
        if isinstance(t.get(key), (int, float)) and not isinstance(t[key], bool) and t[key] <= 0:
            errors.append(f"{key}: expected a number of steps > 0, got {t[key]}")
    if isinstance(t.get("learning_rate"), float) and t["learning_rate"] < 0:
        errors.append(f"learning_rate: expected a number >= 0, got {t['learning_rate']}")
    errors += _sharding_errors(t)
    if errors:
        raise ConfigErrors(errors) if len(errors) > 1 else ConfigError(errors[0])
    try:
        TrainingArguments(**t)
    except (ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # name the key whose value the message quotes (e.g. "sometimes is not a valid SaveStrategy")
        keys = [k for k, v in t.items() if isinstance(v, str) and v and first.startswith(f"{v} is not a valid")]
        raise ConfigError(f"{keys[0] if keys else 'training arguments'}: {first}") from None


def _sharding_errors(t: dict[str, typing.Any]) -> list[str]:
    """Sharded engines the Trainer path cannot run as asked: one line each, instead of a run that
    silently trains something else."""
    import torch

    errors = []
    if t.get("deepspeed"):
        errors.append(
            "deepspeed: not supported by mixflow yet (ZeRO-3 partitions the parameters its statistics "
            "read, and no configuration of it is tested); use fsdp on GPUs, or DDP"
        )
    if t.get("fsdp") and not torch.cuda.is_available():
        errors.append(
            "fsdp: the Trainer's FSDP needs CUDA devices (on CPU accelerate would train plain DDP); "
            "for sharded training on CPU call fully_shard in your own loop (README: Sharded training)"
        )
    return errors


def check_output_dir(run: RunConfig) -> None:
    """A new run never appends to an old run's logs: an ``output_dir`` holding one is an error unless
    the run resumes it or ``overwrite_output_dir: true`` moves it aside (at the start of training)."""
    if run.safety.max_nonfinite_steps < 0:
        raise ConfigError(
            f"max_nonfinite_steps: expected an integer >= 0 (0: never stop), got {run.safety.max_nonfinite_steps}"
        )
    out = Path(run.training["output_dir"])
    resume = run.training.get("resume_from_checkpoint")
    if resume is True or resume in ("true", "auto"):
        from mixflow.integrations.checkpoints import newest_complete_checkpoint

        try:
            run.training["resume_from_checkpoint"] = newest_complete_checkpoint(str(out))
            return
        except ValueError:
            if resume != "auto":
                raise ConfigError(
                    f"resume_from_checkpoint: true, but {out} holds no complete checkpoint; train without it, or set "
                    "resume_from_checkpoint: auto to resume when there is one and start fresh otherwise"
                ) from None
            run.training["resume_from_checkpoint"] = None  # auto, nothing to resume: a fresh run
            if previous_run_files(out):  # a first attempt killed before its first checkpoint
                logger.warning(
                    "resume_from_checkpoint: auto: %s holds no complete checkpoint; starting fresh, its "
                    "files move to a previous-<n> folder",
                    out,
                )
                run.safety.overwrite_output_dir = True
    elif isinstance(resume, str) and resume:
        if not Path(resume).is_dir():
            raise ConfigError(f"resume_from_checkpoint: {resume} is not a checkpoint directory")
        return
    if run.safety.overwrite_output_dir:
        return
    found = previous_run_files(out)
    if found:
        raise ConfigError(
            f"output_dir: {out} holds a previous run ({', '.join(p.name for p in found[:3])}{', ...' if len(found) > 3 else ''}); "
            "resume it (resume_from_checkpoint: true), choose another output_dir, or set overwrite_output_dir: true "
            "to move its files into a previous-<n> folder"
        )


def previous_run_files(out: Path) -> list[Path]:
    """The files of a run in ``out``: its logs, results, trainer state and checkpoints."""
    if not out.is_dir():
        return []
    patterns = (
        "*_weights.jsonl",
        "*_summary.json",
        "mixflow_results.json",
        "mixflow_domains.json",
        "trainer_state.json",
        "checkpoint-*",
    )
    return sorted({p for pattern in patterns for p in out.glob(pattern)})
