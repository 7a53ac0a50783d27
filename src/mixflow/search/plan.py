"""``mixflow search plan``: the mixtures of a swarm and one ready-to-run ``mixflow train`` config per proxy.

Mixtures are drawn from Dirichlet distributions around a prior with a random strength (RegMix,
Liu et al. 2024, arXiv 2407.01492, §3.1: α = prior × strength, strength log-uniform, so the swarm
holds both sparse and near-prior mixtures); the prior itself and the uniform mixture are always
members; a draw closer than ``min_distance`` (L1) to a member is rejected, so the swarm covers the
simplex instead of piling up near the prior.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixflow.config.errors import ConfigError, ConfigErrors
from mixflow.config.load import load_config
from mixflow.config.parse import read_yaml
from mixflow.config.schema import MixingConfig
from mixflow.recipes.inputs import domain_sources
from mixflow.search.reuse import earlier_proposal, plan_reuse, runs_saved
from mixflow.utils.jsonlog import write_json_atomic

logger = logging.getLogger(__name__)

#: The user's mixing keys a proxy run replaces (it trains one fixed mixture).
MIXING_KEYS = tuple(
    f.name for f in dataclasses.fields(MixingConfig) if f.name not in ("on_exhausted", "objective_normalization")
)
#: RegMix's range of Dirichlet strengths (multiples of K·prior).
STRENGTHS = (0.1, 5.0)


def draw_mixtures(
    prior: np.ndarray, runs: int, concentration: float = 1.0, seed: int = 0, min_distance: float = 0.1
) -> tuple[np.ndarray, float]:
    """``runs`` mixtures [runs, K] (the prior and uniform first) and the minimum distance used: it is
    halved, with a log line, when the draws cannot keep it (more runs than the simplex has room for)."""
    k = len(prior)
    uniform = np.full(k, 1.0 / k)
    chosen = [prior] + ([uniform] if np.abs(prior - uniform).sum() > 1e-9 else [])
    rng = np.random.default_rng(seed)
    tries, distance = 0, float(min_distance)
    while len(chosen) < runs:
        strength = concentration * k * np.exp(rng.uniform(np.log(STRENGTHS[0]), np.log(STRENGTHS[1])))
        w = rng.dirichlet(np.maximum(prior * strength, 1e-3))
        tries += 1
        if min(np.abs(w - c).sum() for c in chosen) >= distance:
            chosen.append(w)
            tries = 0
        elif tries > 200:
            distance /= 2
            logger.info("search plan: no draw kept the minimum distance in 200 tries; lowering it to %.3g", distance)
            tries = 0
    return np.array(chosen[:runs]), distance


def parse_prior(spec: str, domains: list[str], tokens: dict[str, int] | None) -> np.ndarray:
    """``natural`` (token counts), ``uniform``, or DOMAIN=WEIGHT,... / W1,W2,... in domain order."""
    if spec == "uniform":
        return np.full(len(domains), 1.0 / len(domains))
    if spec == "natural":
        assert tokens is not None
        p = np.array([float(tokens[d]) for d in domains])
    else:
        parts = [x.strip() for x in spec.split(",") if x.strip()]
        try:
            if all("=" in x for x in parts):
                named = {a.strip(): float(b) for a, _, b in (x.partition("=") for x in parts)}
                if sorted(named) != sorted(domains):
                    raise ConfigError(f"--prior: give every domain once ({', '.join(domains)}), got {', '.join(named)}")
                p = np.array([named[d] for d in domains])
            else:
                p = np.array([float(x) for x in parts])
        except ValueError:
            raise ConfigError(
                f"--prior: expected natural, uniform, DOMAIN=WEIGHT,... or {len(domains)} numbers, got {spec!r}"
            ) from None
        if len(p) != len(domains):
            raise ConfigError(f"--prior: expected {len(domains)} weights (one per domain), got {len(p)}")
    if np.any(p < 0) or p.sum() <= 0:
        raise ConfigError("--prior: weights must be >= 0 and not all 0")
    return p / p.sum()


def absolute_paths(value: Any, base: Path) -> Any:
    """``value`` with every string that names an existing file or folder relative to ``base`` made
    absolute: the proxy configs live in ``out/runs/``, where the user's relative paths would not resolve."""
    if isinstance(value, dict):
        return {k: absolute_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [absolute_paths(v, base) for v in value]
    if isinstance(value, str) and value and not Path(value).is_absolute() and "\n" not in value:
        candidate = base / value
        try:
            return str(candidate.resolve()) if candidate.exists() else value
        except OSError:
            return value
    return value


def _archive(folder: Path) -> None:
    """Move an earlier plan (its configs, runs and tables) into ``folder/previous-<n>/``: nothing is deleted,
    and no run of the old plan can pass for one of the new."""
    n = 1
    while (folder / f"previous-{n}").exists():
        n += 1
    target = folder / f"previous-{n}"
    target.mkdir()
    for name in ("runs", "plan.csv", "plan.json", "runs.csv"):
        if (folder / name).exists():
            (folder / name).replace(target / name)
    logger.warning("search plan: the earlier plan in %s moved to %s", folder, target)


def _domain_tokens(run: Any) -> dict[str, int]:
    from mixflow.recipes.build import cache_domains

    return {e.meta["key"]["domain"]: int(e.meta["num_tokens"]) for e in cache_domains(run, progress=False)}


def _reused_mixtures(
    plan: dict[str, Any], earlier: Any, p: np.ndarray, reuse: str | Path | None, min_distance: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """(drawn table, minimum distance used, full mixtures) when an earlier proposal is reused: the
    kept domains vary as one (their earlier ratios fixed), the added ones on their own; records the
    reuse in ``plan``."""
    domains, runs = plan["domains"], plan["runs"]
    reused = plan_reuse(earlier, domains)
    if not reused.added:
        raise ConfigError(
            f"--reuse: no domain was added (removed: {', '.join(reused.removed) or 'none'}), so no run "
            "is needed: train on the earlier mixture renormalised over the kept domains: "
            + ", ".join(f"{d}={w:.6g}" for d, w in reused.ratios.items())
        )
    table, used = draw_mixtures(reused.reduce(p), runs, plan["concentration"], plan["seed"], min_distance)
    plan.update(columns=reused.columns, reuse=reused.as_dict(), runs_saved=runs_saved(runs, reused))
    logger.info(
        "search plan: reusing %s: %d kept domains as one, %d added, %d removed; a full plan at the same "
        "runs per dimension would need %d more runs",
        reuse,
        len(reused.ratios),
        len(reused.added),
        len(reused.removed),
        plan["runs_saved"],
    )
    return table, used, reused.expand(table)


def plan_swarm(
    config: str | Path,
    runs: int,
    out: str | Path,
    prior: str = "natural",
    concentration: float = 1.0,
    seed: int = 0,
    min_distance: float = 0.1,
    overwrite: bool = False,
    reuse: str | Path | None = None,
) -> Path:
    """Write ``out/runs/NNNN.yaml`` (the user's config with the run's mixture and output folder) and
    ``out/plan.csv``; every generated config is validated before anything is written. ``overwrite``
    moves an earlier plan and its runs into ``out/previous-<n>/``. ``reuse`` (an earlier proposal's
    folder): only the added domains and the kept ones' total vary (:mod:`mixflow.search.reuse`)."""
    folder = Path(out)
    if (folder / "plan.csv").exists() and not overwrite:
        raise ConfigError(f"{folder / 'plan.csv'}: a plan is already there; choose another --out or pass --overwrite")
    if runs < 2:
        raise ConfigError(f"--runs: expected an integer >= 2, got {runs}")
    earlier = earlier_proposal(reuse) if reuse is not None else None
    raw = absolute_paths(read_yaml(config, "config"), Path(config).resolve().parent)
    run = load_config(config, check_outputs=False)  # every config error before any tokenization
    domains = [source.name for source in domain_sources(run)]
    p = parse_prior(prior, domains, _domain_tokens(run) if prior == "natural" else None)
    plan: dict[str, Any] = {
        "config": str(Path(config).resolve()),
        "runs": runs,
        "domains": domains,
        "columns": domains,
        "prior": p.tolist(),
        "prior_spec": prior,
        "concentration": concentration,
        "seed": seed,
    }
    if earlier is not None:
        table, used, mixtures = _reused_mixtures(plan, earlier, p, reuse, min_distance)
    else:
        table, used = draw_mixtures(p, runs, concentration, seed, min_distance)
        mixtures = table
    configs = _configs(raw, folder, mixtures)
    if (folder / "plan.csv").exists():  # --overwrite, checked above
        _archive(folder)
    _write_plan(folder, configs, plan["columns"], table)
    write_json_atomic(folder / "plan.json", {**plan, "min_distance": used})
    logger.info(
        "search plan: %d proxy configs in %s (prior %s, minimum L1 distance %.3g)", runs, folder / "runs", prior, used
    )
    return folder / "plan.csv"


def _configs(raw: dict[str, Any], folder: Path, mixtures: np.ndarray) -> dict[str, dict[str, Any]]:
    """One validated config per mixture (every problem at once, before anything is written)."""
    base = {k: v for k, v in raw.items() if k not in MIXING_KEYS}
    configs, errors = {}, []
    for i, w in enumerate(mixtures):
        name = f"{i:04d}"
        # a proxy killed by its scheduler resumes from its last complete checkpoint when launched again
        cfg = {
            "resume_from_checkpoint": "auto",
            **base,
            "train_type": "static",
            "mixture_sample_rule": "mixture",
            "init_mixture_proportions": [round(float(x), 6) for x in w],
            "output_dir": str((folder / "runs" / name).resolve()),
        }
        try:
            load_config(raw=cfg, check_outputs=False)
        except ConfigErrors as err:
            errors += [f"run {name}: {m}" for m in err.messages]
        except ConfigError as err:
            errors.append(f"run {name}: {err}")
        configs[name] = cfg
    if errors:
        raise ConfigErrors(errors[:20])
    return configs


def _write_plan(folder: Path, configs: dict[str, dict[str, Any]], columns: list[str], table: np.ndarray) -> None:
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    for name, cfg in configs.items():
        (folder / "runs" / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    tmp = folder / "plan.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *columns])
        writer.writerows([name, *(f"{x:.6f}" for x in w)] for name, w in zip(configs, table))
    tmp.replace(folder / "plan.csv")


def read_plan(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "plan.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a search plan ({err}); run mixflow search plan first") from None
