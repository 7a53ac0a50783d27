"""A run's weights (:mod:`mixflow.recipes.export`) written for another trainer.

- ``megatron``: a Megatron-LM ``--data-path`` blend, ``W1 PREFIX1 W2 PREFIX2 ...`` (Megatron
  normalises the weights and requires each > 0, so a domain at weight 0 is left out). It is also
  the content of a ``--data-args-path`` file. A domain read from several prefixes has its weight
  split over them by their tokens (from each ``.idx``), as the run sampled its rows.
- ``olmo``: an OLMo-core ``SourceMixtureList`` in YAML (``sources:`` with ``source_name``,
  ``target_ratio`` summing to 1 and each > 0, ``paths`` of raw token files) for a
  ``SourceMixtureDatasetConfig``'s ``source_list``.
- ``yaml``: ``mixflow train`` keys: a static mixture, or for a scheduled run a ``schedule`` whose
  stages hold each stage's mixture.

With stages, ``megatron`` writes one blend line per stage after a ``#`` line naming its steps, and
``olmo`` one YAML document per stage. Paths come from the run's ``mixflow_domains.json``; a domain
whose data is not in the target format needs its path given (``paths``, ``--path DOMAIN=PATH``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixflow.config.mixture_keys import static_mixture_keys
from mixflow.data.pretokenized import megatron_index, megatron_prefixes
from mixflow.errors import ConfigError, DataError
from mixflow.recipes.export import RunWeights, Stage

FORMATS = ("megatron", "olmo", "yaml")
_NPY_MAGIC = b"\x93NUMPY"


def _needs_path(name: str, domain: dict[str, Any], target: str, form: str) -> ConfigError:
    """The error for a domain whose recorded data is not in the target format."""
    if not domain.get("paths"):
        why = "the run recorded no data paths (it has no mixflow_domains.json)"
    else:
        why = f"the run read it as {domain['format']} data, not {target}"
    return ConfigError(f"--path: domain {name!r}: {why}; give its data with --path {name}={form}")


def _positive(weights: Mapping[str, float]) -> dict[str, float]:
    """The domains with weight > 0, normalised to sum 1 (Megatron and OLMo-core refuse a 0 weight)."""
    kept = {d: w for d, w in weights.items() if w > 0}
    total = sum(kept.values())
    return {d: w / total for d, w in kept.items()}


def _prefix_tokens(prefixes: Sequence[Path]) -> np.ndarray | None:
    """Tokens of each Megatron prefix (from its index); None where an index cannot be read."""
    try:
        return np.array([float(megatron_index(p.with_name(p.name + ".idx"))[1].sum()) for p in prefixes])
    except OSError:
        return None


def megatron_blend(
    weights: Mapping[str, float], domains: Mapping[str, dict[str, Any]], paths: Mapping[str, list[str]]
) -> str:
    """``W1 PREFIX1 W2 PREFIX2 ...`` for the domains with weight > 0."""
    parts = []
    for name, w in _positive(weights).items():
        if name in paths:
            prefixes = [Path(p.removesuffix(".bin").removesuffix(".idx")) for p in paths[name]]
        elif domains[name]["format"] == "megatron":
            prefixes = megatron_prefixes(domains[name]["paths"])
        else:
            raise _needs_path(name, domains[name], "a Megatron prefix", "PREFIX")
        shares = np.ones(len(prefixes)) if len(prefixes) == 1 else _prefix_tokens(prefixes)
        if shares is None:
            raise DataError(
                f"domain {name!r}: cannot read the indexes of {', '.join(map(str, prefixes))} to split its "
                f"weight by tokens; give one prefix with --path {name}=PREFIX"
            )
        parts += [f"{w * s / shares.sum():.10g} {p}" for s, p in zip(shares, prefixes)]
    return " ".join(parts)


def _olmo_paths(name: str, domain: dict[str, Any], paths: Mapping[str, list[str]]) -> list[str]:
    """A domain's raw token files for OLMo-core."""
    if name in paths:
        return list(paths[name])
    if domain["format"] == "mixflow":  # a cache entry's tokens.bin is a raw token array
        return [str(Path(p) / "tokens.bin") for p in domain["paths"]]
    if domain["format"] == "numpy":
        for p in domain["paths"]:
            if Path(p).is_file() and Path(p).read_bytes()[:6] == _NPY_MAGIC:
                raise ConfigError(
                    f"--path: {p} is a .npy file with a header; OLMo-core memory-maps raw token files: "
                    f"give raw files with --path {name}=FILE"
                )
        return list(domain["paths"])
    raise _needs_path(name, domain, "raw token files", "FILE,FILE")


def olmo_sources(
    weights: Mapping[str, float], domains: Mapping[str, dict[str, Any]], paths: Mapping[str, list[str]]
) -> dict[str, Any]:
    """An OLMo-core ``SourceMixtureList`` as a dict (``sources``: name, target ratio, paths)."""
    sources = [
        {"source_name": name, "target_ratio": w, "paths": _olmo_paths(name, domains[name], paths)}
        for name, w in _positive(weights).items()
    ]
    return {"sources": sources}


def schedule_keys(stages: Sequence[Stage]) -> dict[str, Any]:
    """``mixflow train`` keys of a schedule holding each stage's mixture from its first step."""
    names = list(stages[0].weights)
    return {
        "dataset": ",".join(names),
        "train_type": "dynamic_mix",
        "component": {
            "name": "schedule",
            "params": {
                "unit": "step",
                "interpolation": "step",
                "stages": [{"at": s.first_step - 1, "proportions": list(s.weights.values())} for s in stages],
            },
        },
    }


def _stage_line(stage: Stage) -> str:
    moved = "; p moved within it: its mean over the stage" if stage.moved else ""
    return f"# stage: steps {stage.first_step}–{stage.last_step} ({stage.what}{moved})"


def render(
    run: RunWeights, fmt: str, domains: Mapping[str, dict[str, Any]], paths: Mapping[str, list[str]] | None = None
) -> str:
    """The export text of ``run`` in format ``fmt`` (one of :data:`FORMATS`)."""
    paths = paths or {}
    unknown = sorted(set(paths) - set(run.weights))
    if unknown:
        raise ConfigError(
            f"--path: no domain {', '.join(map(repr, unknown))} in this run; its domains: {', '.join(run.weights)}"
        )
    mixtures = [(s.weights, _stage_line(s)) for s in run.stages] or [(run.weights, "")]
    if fmt == "megatron":
        lines = [(f"{note}\n" if note else "") + megatron_blend(w, domains, paths) for w, note in mixtures]
        return "\n".join(lines) + "\n"
    head = f"# mixflow export: {run.origin}\n"
    if fmt == "olmo":
        docs = [
            (f"{note}\n" if note else "")
            + yaml.safe_dump(olmo_sources(w, domains, paths), sort_keys=False, default_flow_style=None, width=10_000)
            for w, note in mixtures
        ]
        return head + "---\n".join(docs)
    if fmt == "yaml":
        keys = schedule_keys(run.stages) if run.stages else static_mixture_keys(run.weights)
        notes = "".join(f"{note}\n" for _, note in mixtures if note)
        return head + notes + yaml.safe_dump(keys, sort_keys=False, default_flow_style=None, width=10_000)
    raise ConfigError(f"--to: expected one of {', '.join(FORMATS)}, got {fmt!r}")
