"""Load a ``mixflow train`` YAML file: read it, apply overrides, route keys to typed sections.

Everything is validated here, once, before any data is tokenized or any model is loaded
(:mod:`mixflow.config.checks` and :mod:`mixflow.config.data_checks` hold the cross-field checks, :mod:`mixflow.config.components` the
choice of algorithm). Each failure is a :class:`ConfigError` whose message is one line naming the
key and what was expected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixflow.algorithms.params import suggest
from mixflow.config import checks, data_checks, model_checks
from mixflow.config.compat import translate
from mixflow.config.components import resolve_components
from mixflow.config.errors import ErrorCollector
from mixflow.config.parse import build_section, fields_of, merge, read_yaml
from mixflow.config.schema import DataConfig, MixingConfig, ModelConfig, RunConfig, SafetyConfig

#: TrainingArguments defaults that differ from Hugging Face's, and why.
TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",  # nothing reaches an online service unless asked for
    "logging_steps": 10,
    "prediction_loss_only": True,  # evaluation needs the loss only; keeping logits costs memory
    "save_strategy": "steps",
}


def training_argument_names() -> set[str]:
    """Keys accepted by ``transformers.TrainingArguments``."""
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    raw: Mapping[str, Any] | None = None,
    check_outputs: bool = True,
) -> RunConfig:
    """Read a YAML file (or ``raw``), apply overrides, validate everything that can be checked
    without loading data or a model, and return the typed configuration. ``check_outputs=False``
    skips the check that ``output_dir`` holds no earlier run (for commands that do not train)."""
    data = read_yaml(path, "config") if path is not None else dict(raw or {})
    data = merge(data, overrides or {})
    base_dir = Path(path).resolve().parent if path is not None else Path.cwd()
    return validate(data, base_dir, str(path) if path is not None else "<dict>", check_outputs)


def validate(data: dict[str, Any], base_dir: Path, source: str, check_outputs: bool = True) -> RunConfig:
    """Route flat keys to their sections, type-check them and run the cross-field checks."""
    sections: dict[type, dict[str, Any]] = {MixingConfig: {}, DataConfig: {}, ModelConfig: {}, SafetyConfig: {}}
    owners = {name: cls for cls in sections for name in fields_of(cls)}
    training_names = training_argument_names()
    data, refused = translate(data, set(owners) | training_names)  # LLaMA-Factory keys users bring along
    training: dict[str, Any] = {}
    errors = ErrorCollector()
    errors.messages += refused
    known = sorted(set(owners) | training_names)
    for key, value in data.items():
        if key in owners:
            sections[owners[key]][key] = value
        elif key in training_names:
            training[key] = value
        else:
            errors.messages.append(f"{key}: unknown key{suggest(key, known)}")
    mixing = errors.run(build_section, MixingConfig, sections[MixingConfig])
    data_cfg = errors.run(build_section, DataConfig, sections[DataConfig])
    model = errors.run(build_section, ModelConfig, sections[ModelConfig])
    safety = errors.run(build_section, SafetyConfig, sections[SafetyConfig])
    if mixing is None or data_cfg is None or model is None or safety is None:
        errors.raise_if_any()  # the checks below read the typed sections (an unknown key hides none of them)
        raise AssertionError("a section failed to build without an error message")
    training = {**TRAINING_DEFAULTS, **training}
    run = RunConfig(mixing=mixing, data=data_cfg, model=model, training=training, source=source, safety=safety)
    # Every check that can run does, and all their errors are reported together; the ones that
    # depend on the chosen components run once those resolved.
    data_ok = errors.passes(data_checks.check_data, run, base_dir)
    training_ok = errors.passes(checks.check_training, run)  # the components read the batch size
    if check_outputs and run.training.get("output_dir"):  # check_training reported a missing one
        errors.run(checks.check_output_dir, run)
    errors.run(checks.check_mixing_keys, run)
    if errors.passes(model_checks.check_model, run):
        errors.run(model_checks.check_model_fits_data, run)
    k_known = data_ok or data_checks.domain_list_error(run) is None  # a domain's missing file leaves K known
    components = errors.run(resolve_components, run, base_dir, k_known, training_ok)
    if components is not None and data_ok and training_ok:
        run.algorithm, run.weighter = components
        errors.run(checks.check_mixing, run, base_dir)
        errors.run(checks.check_task, run, base_dir)
    errors.raise_if_any()
    return run
