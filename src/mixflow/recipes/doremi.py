"""``mixflow doremi CONFIG.yaml``: DoReMi's three steps (reference → proxy → target) from one config.

The config holds the keys the three steps share (data, model, training arguments) at the top level,
plus optional sections whose keys override the shared ones for one step::

    output_dir: build/doremi          # root; steps write to <output_dir>/{reference,proxy,target}
    dataset: code,prose,arithmetic,random
    ...                               # any `mixflow train` key shared by the three steps
    doremi:                           # the doremi algorithm's params (reweight_eta, reweight_eps, output_weights)
      reweight_eta: 1.0
    reference:                        # step 1 overrides, e.g. the reference weights
      init_mixture_proportions: [0.25, 0.25, 0.25, 0.25]
    proxy:                            # step 2 overrides, e.g. the update schedule
      update_step: 1
    target:                           # step 3 overrides, e.g. a larger model or more steps
      max_steps: 2000

The pipeline sets what makes each step what it is, so those keys are errors anywhere in the file:
``train_type``, ``component``, ``component_name``, ``components_cfg_file``, ``static_mix`` (and
``doremi.reference_model_path``). The sampling keys (``init_mixture_proportions``,
``mixture_sample_rule``, ``mixture_temperature``) belong to the ``reference:`` section (the
reference weights) or the ``proxy:`` section (uniform when unset, as in the paper); the target's
come from the learned weights.

All three step configs are validated with the same checks as ``mixflow train`` before anything
trains. Step 1's ``output_dir`` (where ``run_training`` saves the final model) becomes step 2's
``reference_model_path``; step 2's ``doremi_summary.json`` (ᾱ or the last α, per
``doremi.output_weights``) becomes step 3's ``init_mixture_proportions``. Each step's model initialisation is seeded with its ``seed``, so the
whole pipeline is reproducible.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixflow.config.errors import ConfigError
from mixflow.config.load import validate
from mixflow.config.parse import merge, parse_overrides, read_yaml
from mixflow.config.schema import RunConfig, domain_names
from mixflow.errors import MixflowError
from mixflow.recipes.train import run_training
from mixflow.utils import distributed
from mixflow.utils.jsonlog import write_json_atomic

logger = logging.getLogger(__name__)

STEPS = ("reference", "proxy", "target")
#: Keys the pipeline sets itself, per step.
OWNED_KEYS = ("train_type", "component", "component_name", "components_cfg_file", "static_mix")
#: Sampling keys that only make sense per step (never shared, never for the target).
SAMPLING_KEYS = ("init_mixture_proportions", "mixture_sample_rule", "mixture_temperature")
SUMMARY_FILE = "doremi_summary.json"
PIPELINE_FILE = "doremi_pipeline.json"


@dataclass
class PipelineConfig:
    """The three steps' raw configs (before the handed-over values are filled in) and where they run."""

    root: Path
    shared: dict[str, Any]
    sections: dict[str, dict[str, Any]]
    doremi: dict[str, Any]
    base_dir: Path
    source: str
    output_dirs: dict[str, str] = field(default_factory=dict)

    @property
    def resuming(self) -> bool:
        """``resume_from_checkpoint: true`` (or ``auto``) at the pipeline level: continue where it stopped."""
        return self.shared.get("resume_from_checkpoint") in (True, "true", "auto")


def parse_pipeline(path: str | Path, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Split a pipeline YAML (plus overrides, dotted keys nest into sections) into its parts."""
    data = merge(read_yaml(path, "config"), overrides or {})
    base_dir = Path(path).resolve().parent
    sections: dict[str, dict[str, Any]] = {}
    for step in STEPS:
        value = data.pop(step, None) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{step}: expected a mapping of keys overriding the shared ones, got {value!r}")
        sections[step] = value
    doremi = data.pop("doremi", None) or {}
    if not isinstance(doremi, dict):
        raise ConfigError(f"doremi: expected a mapping of the doremi algorithm's params, got {doremi!r}")
    if "reference_model_path" in doremi:
        raise ConfigError(
            "doremi.reference_model_path: set by the pipeline (the reference step's output_dir); remove it"
        )
    for where, values in (("", data), *((f"{s}.", sections[s]) for s in STEPS)):
        for key in OWNED_KEYS:
            if key in values:
                raise ConfigError(f"{where}{key}: set by the doremi pipeline for each step; remove it")
    for key in SAMPLING_KEYS:
        if key in data:
            raise ConfigError(
                f"{key}: give it in the reference: section (the reference weights) or the proxy: section "
                "(the proxy's sampling, uniform when unset); the target's come from the learned weights"
            )
        if key in sections["target"]:
            raise ConfigError(f"target.{key}: the target's mixture is the learned weights; remove it")
    root = data.get("output_dir")
    if not root:
        raise ConfigError("output_dir: required (the steps write to <output_dir>/reference, /proxy and /target)")
    cfg = PipelineConfig(Path(str(root)), data, sections, doremi, base_dir, str(path))
    for step in STEPS:
        cfg.output_dirs[step] = str(sections[step].get("output_dir") or Path(str(root)) / step)
    return cfg


def step_config(
    cfg: PipelineConfig,
    step: str,
    reference_path: str | None = None,
    weights: list[float] | None = None,
) -> RunConfig:
    """The validated ``mixflow train`` config of one step. ``reference_path`` (proxy) and ``weights``
    (target) are what earlier steps hand over; left out, placeholders check everything else."""
    raw = merge(cfg.shared, cfg.sections[step])
    raw["output_dir"] = cfg.output_dirs[step]
    check_outputs = True
    if cfg.resuming:  # each step resumes where it stopped: finished ones are kept, the others continue
        raw.pop("resume_from_checkpoint", None)
        if finished_step(cfg.output_dirs[step], raw.get("max_steps")) is not None:
            check_outputs = False  # kept as it is, never trained again
        else:
            raw["resume_from_checkpoint"] = "auto"
    if step == "reference":
        raw.update(train_type="static", static_mix=True)
    elif step == "proxy":
        params = {**cfg.doremi, "reference_model_path": reference_path}
        raw.update(train_type="dynamic_mix", component={"name": "doremi", "params": params})
    else:
        raw.update(
            train_type="static", static_mix=True, mixture_sample_rule="mixture", init_mixture_proportions=weights
        )
    try:
        run = validate(copy.deepcopy(raw), cfg.base_dir, f"{cfg.source} ({step})", check_outputs=check_outputs)
    except ConfigError as err:
        raise ConfigError(f"{step}: {err}") from None
    return run  # a proxy that never updates is refused by the loader (check_mixing), as for any adaptive run


def finished_step(output_dir: str | Path, max_steps: Any) -> dict[str, Any] | None:
    """A step's results when its run finished (``mixflow_results.json`` at ``max_steps``, not stopped)."""
    path = Path(output_dir) / "mixflow_results.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(metrics, dict) and "stopped" not in metrics and metrics.get("steps") == max_steps:
        return metrics
    return None


def read_summary(proxy_dir: str | Path) -> dict[str, Any]:
    """Step 2's ``doremi_summary.json`` (the weights step 3 uses are under ``weights``)."""
    path = Path(proxy_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"proxy: {path} not found: the proxy run made no DoReMi update (raise max_steps?)")
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    if not summary.get("num_updates"):
        raise MixflowError(f"proxy: {path} records no DoReMi update (raise max_steps or lower warmup_step/update_step)")
    return summary


def _train(run: RunConfig, progress: bool, resuming: bool = False) -> dict[str, Any]:
    # run_training seeds before building the model, so each step is reproducible from its `seed`.
    if resuming:
        done = finished_step(run.training["output_dir"], run.training.get("max_steps"))
        if done is not None:
            logger.info("doremi: %s finished before; its results are kept", run.training["output_dir"])
            return done
    return run_training(run, progress=progress)


def run_pipeline(
    path: str | Path, overrides: Mapping[str, Any] | list[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Validate the three steps, then train reference → proxy → target; return (and write to
    ``<output_dir>/doremi_pipeline.json``) the weights and metrics of each step."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    cfg = parse_pipeline(path, overrides)
    runs = {step: step_config(cfg, step) for step in STEPS}  # every mistake surfaces before training
    names = domain_names(runs["reference"])
    k = len(names)
    runs["target"] = step_config(cfg, "target", weights=[1.0 / k] * k)

    logger.info("doremi: step 1/3, reference model -> %s", cfg.output_dirs["reference"])
    ref_metrics = _train(runs["reference"], progress, cfg.resuming)
    distributed.barrier()  # every rank runs the pipeline; the main process writes the summary

    runs["proxy"] = step_config(cfg, "proxy", reference_path=cfg.output_dirs["reference"])
    logger.info(
        "doremi: step 2/3, proxy model (reference %s) -> %s", cfg.output_dirs["reference"], cfg.output_dirs["proxy"]
    )
    proxy_metrics = _train(runs["proxy"], progress, cfg.resuming)
    distributed.barrier()  # every rank runs the pipeline; the main process writes the summary
    summary = read_summary(cfg.output_dirs["proxy"])
    weights = [float(w) for w in summary["weights"]]

    runs["target"] = step_config(cfg, "target", weights=weights)
    logger.info(
        "doremi: step 3/3, target model with the learned weights (%s) -> %s",
        summary["output_weights"],
        cfg.output_dirs["target"],
    )
    target_metrics = _train(runs["target"], progress, cfg.resuming)

    result = {
        "domain_names": summary["domain_names"],
        "reference_weights": list(ref_metrics.get("final_sampling_weights", {}).values()),
        "average": summary["average"],
        "last": summary["last"],
        "output_weights": summary["output_weights"],
        "target_weights": weights,
        "num_updates": summary["num_updates"],
        "output_dirs": dict(cfg.output_dirs),
        "metrics": {"reference": ref_metrics, "proxy": proxy_metrics, "target": target_metrics},
    }
    if distributed.is_main_process():
        write_json_atomic(cfg.root / PIPELINE_FILE, result)
    return result


def format_weights_table(result: Mapping[str, Any]) -> str:
    """Per domain: the reference weights, ᾱ, the last α, the target's weights and validation losses."""
    names = list(result["domain_names"])
    ref_val = result["metrics"]["reference"].get("val_loss", {})
    tgt_val = result["metrics"]["target"].get("val_loss", {})
    width = max(len("domain"), *(len(n) for n in names))
    header = f"{'domain':<{width}}  {'reference':>9}  {'average α':>9}  {'last α':>9}  {'target':>9}"
    if ref_val or tgt_val:
        header += f"  {'ref val':>8}  {'tgt val':>8}"
    lines = [
        f"DoReMi: {result['num_updates']} update(s); the target trained on the {result['output_weights']} weights",
        header,
    ]

    def loss(table: Mapping[str, float], name: str) -> str:
        value = table.get(name)
        return f"{value:8.4f}" if value is not None and math.isfinite(value) else f"{'-':>8}"

    ref_w = result["reference_weights"] or [float("nan")] * len(names)
    for i, name in enumerate(names):
        line = (
            f"{name:<{width}}  {ref_w[i]:9.4f}  {result['average'][i]:9.4f}  {result['last'][i]:9.4f}  "
            f"{result['target_weights'][i]:9.4f}"
        )
        if ref_val or tgt_val:
            line += f"  {loss(ref_val, name)}  {loss(tgt_val, name)}"
        lines.append(line)
    return "\n".join(lines)


__all__ = ["PipelineConfig", "format_weights_table", "parse_pipeline", "read_summary", "run_pipeline", "step_config"]
