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

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixflow.config.mixture_keys import static_mixture_keys
from mixflow.data.pretokenized import megatron_index, megatron_prefixes
from mixflow.errors import ConfigError, ConfigErrors, DataError
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


def megatron_sources(name: str, domain: dict[str, Any], given: list[str] | None) -> list[tuple[str, float]]:
    """(prefix, its share of the domain's weight) for each Megatron prefix the domain is read from:
    split by the tokens in each ``.idx``, as the run sampled the domain's rows."""
    if given is not None:
        prefixes = [Path(p.removesuffix(".bin").removesuffix(".idx")) for p in given]
    elif domain["format"] == "megatron":
        prefixes = megatron_prefixes(domain["paths"])
    else:
        raise _needs_path(name, domain, "a Megatron prefix", "PREFIX")
    tokens = np.ones(1) if len(prefixes) == 1 else _prefix_tokens(prefixes)
    if tokens is None:
        raise DataError(
            f"domain {name!r}: cannot read the indexes of {', '.join(map(str, prefixes))} to split its "
            f"weight by tokens; give one prefix with --path {name}=PREFIX"
        )
    return [(str(p), float(t / tokens.sum())) for p, t in zip(prefixes, tokens)]


def megatron_blend(weights: Mapping[str, float], sources: Mapping[str, list[tuple[str, float]]]) -> str:
    """``W1 PREFIX1 W2 PREFIX2 ...`` for the domains with weight > 0."""
    return " ".join(
        f"{w * share:.10g} {prefix}" for name, w in _positive(weights).items() for prefix, share in sources[name]
    )


def olmo_paths(name: str, domain: dict[str, Any], given: list[str] | None) -> list[str]:
    """A domain's raw token files for OLMo-core."""
    if given is not None:
        return list(given)
    if domain["format"] == "mixflow":  # a cache entry's tokens.bin is a raw token array
        return [str(Path(p) / "tokens.bin") for p in domain["paths"]]
    if domain["format"] == "numpy":
        for p in domain["paths"]:
            if Path(p).is_file() and _starts_like_npy(Path(p)):
                raise ConfigError(
                    f"--path: {p} is a .npy file with a header; OLMo-core memory-maps raw token files: "
                    f"give raw files with --path {name}=FILE"
                )
        return list(domain["paths"])
    raise _needs_path(name, domain, "raw token files", "FILE,FILE")


def _starts_like_npy(path: Path) -> bool:
    with open(path, "rb") as f:  # the first bytes only: a token file may be terabytes
        return f.read(len(_NPY_MAGIC)) == _NPY_MAGIC


def olmo_sources(weights: Mapping[str, float], paths: Mapping[str, list[str]]) -> dict[str, Any]:
    """An OLMo-core ``SourceMixtureList`` as a dict (``sources``: name, target ratio, paths)."""
    return {
        "sources": [
            {"source_name": name, "target_ratio": w, "paths": paths[name]} for name, w in _positive(weights).items()
        ]
    }


def _per_domain(names: Sequence[str], resolve: Callable[[str], Any]) -> dict[str, Any]:
    """``resolve(name)`` for every domain, every domain's error reported at once."""
    out, errors = {}, []
    for name in names:
        try:
            out[name] = resolve(name)
        except (ConfigError, DataError, FileNotFoundError) as err:
            errors.append(str(err))
    if len(errors) > 1:
        raise ConfigErrors(errors)
    if errors:
        raise ConfigError(errors[0])
    return out


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


def render(run: RunWeights, fmt: str, paths: Mapping[str, list[str]] | None = None) -> str:
    """The export text of ``run`` in format ``fmt`` (one of :data:`FORMATS`); ``paths``: a domain's
    data in the target format, where the run's own (``run.domains``) is not."""
    paths = paths or {}
    unknown = sorted(set(paths) - set(run.weights))
    if unknown:
        raise ConfigError(
            f"--path: no domain {', '.join(map(repr, unknown))} in this run; its domains: {', '.join(run.weights)}"
        )
    mixtures = [(s.weights, _stage_line(s)) for s in run.stages] or [(run.weights, "")]
    used = [d for d in run.weights if any(w[d] > 0 for w, _ in mixtures)]  # a domain at 0 needs no path

    def domain(name: str) -> dict[str, Any]:
        return run.domains.get(name, {"format": "unrecorded", "paths": []})

    if fmt == "megatron":
        sources = _per_domain(used, lambda n: megatron_sources(n, domain(n), paths.get(n)))
        lines = [(f"{note}\n" if note else "") + megatron_blend(w, sources) for w, note in mixtures]
        return "\n".join(lines) + "\n"
    head = f"# mixflow export: {run.origin}\n"
    if fmt == "olmo":
        files = _per_domain(used, lambda n: olmo_paths(n, domain(n), paths.get(n)))
        docs = [(f"{note}\n" if note else "") + _yaml(olmo_sources(w, files)) for w, note in mixtures]
        return head + "---\n".join(docs)
    if fmt == "yaml":
        keys = schedule_keys(run.stages) if run.stages else static_mixture_keys(run.weights)
        notes = "".join(f"{note}\n" for _, note in mixtures if note)
        return head + notes + _yaml(keys)
    raise ConfigError(f"--to: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def _yaml(data: dict[str, Any]) -> str:
    # lists of numbers on one line, lines never wrapped (a path or a weight list stays whole)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=10_000)
