"""A proposal from a fit: the constrained mixture, its predicted target with a bootstrap interval
over the swarm's runs, and the keys that train it (``proposal.yaml``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixflow.config.errors import ConfigError, ConfigErrors
from mixflow.config.mixture_keys import static_mixture_keys
from mixflow.search.fit import Fit, load_fit
from mixflow.search.plan import parse_prior
from mixflow.search.propose import Constraints, repetition_caps, simulate
from mixflow.search.regression import build_model
from mixflow.search.reuse import VIRTUAL, Reuse
from mixflow.utils.jsonlog import write_json_atomic, write_text_atomic


def constraints_for(
    fit: Fit,
    fixed: dict[str, float],
    prior: np.ndarray | None,
    kl: float | None,
    l1: float | None,
    tokens_per_run: float | None,
    max_epochs: float | None,
    domain_tokens: dict[str, float],
) -> Constraints:
    """The constraints in the fit's domain order; every unknown domain and missing option at once."""
    errors = [f"--fix: unknown domain {d!r} (domains: {', '.join(fit.domains)})" for d in fixed if d not in fit.domains]
    errors += [f"--domain-tokens: unknown domain {d!r}" for d in domain_tokens if d not in fit.domains]
    caps: dict[int, float] = {}
    if (tokens_per_run is None) != (max_epochs is None):
        errors.append("--tokens-per-run and --max-epochs: a repetition cap needs both")
    elif tokens_per_run is not None and max_epochs is not None:
        if tokens_per_run <= 0 or max_epochs <= 0:
            errors.append("--tokens-per-run and --max-epochs: expected numbers > 0")
        else:
            try:
                caps = repetition_caps(domain_tokens, fit.domains, tokens_per_run, max_epochs)
            except ConfigError as err:
                errors.append(str(err))
    if errors:
        raise ConfigErrors(errors)
    return Constraints(fixed={fit.domains.index(d): w for d, w in fixed.items()}, caps=caps, prior=prior, kl=kl, l1=l1)


def propose(
    folder: str | Path,
    fixed: dict[str, float] | None = None,
    prior: str | None = None,
    kl: float | None = None,
    l1: float | None = None,
    tokens_per_run: float | None = None,
    max_epochs: float | None = None,
    domain_tokens: dict[str, float] | None = None,
    top_k: int = 128,
    candidates: int = 100_000,
    bootstrap: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """The mixture the fit in ``folder`` predicts best under the constraints, and its prediction with
    a 95% interval: the same proposal scored by ``bootstrap`` refits on runs resampled with
    replacement (how much the prediction depends on which runs the swarm happened to have)."""
    fit = load_fit(folder)
    assert fit.regression is not None
    if prior == "natural":
        raise ConfigError("--prior: natural needs token counts a fit does not have; give uniform or DOMAIN=WEIGHT,...")
    p = None if prior is None else parse_prior(prior, fit.domains, None)
    constraints = constraints_for(fit, fixed or {}, p, kl, l1, tokens_per_run, max_epochs, domain_tokens or {})
    mixture, _ = simulate(fit.regression.predict, len(fit.domains), constraints, p, candidates, top_k, seed)
    predicted = float(fit.regression.predict(mixture[None, :])[0])
    assert fit.data is not None
    x, y = fit.data
    rng = np.random.default_rng(seed + 1)
    draws = []
    for _ in range(bootstrap):
        rows = rng.integers(0, len(y), len(y))
        draws.append(float(build_model(fit.model, seed).fit(x[rows], y[rows]).predict(mixture[None, :])[0]))
    interval = [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))] if draws else [predicted, predicted]
    out = {
        "domains": fit.domains,
        "mixture": {d: float(w) for d, w in zip(fit.domains, mixture)},
        "predicted": predicted,
        "predicted interval": interval,
        "bootstrap": bootstrap,
        "model": fit.model,
        "target": fit.target,
        "runs": fit.runs,
        "cv": fit.cv,
        "constraints": {
            "fixed": fixed or {},
            "prior": None if p is None else p.tolist(),
            "kl": kl,
            "l1": l1,
            "caps": {fit.domains[i]: c for i, c in constraints.caps.items()},
        },
        "top_k": top_k,
        "candidates": candidates,
        "seed": seed,
    }
    reused = _reuse_of(fit)
    if reused is not None:  # a reuse plan's swarm: the proposal is over (reused, added); train on all domains
        by_domain = dict(zip(fit.domains, mixture))
        full = reused.expand(np.array([[by_domain[c] for c in reused.columns]]))[0]
        out["training mixture"] = {d: float(w) for d, w in zip(reused.domains, full)}
    return out


def _reuse_of(fit: Fit) -> Reuse | None:
    """The reuse recorded by the plan whose collected table the fit read (plan.json beside runs.csv)."""
    plan = Path(fit.table).parent / "plan.json"
    try:
        record = json.loads(plan.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if "reuse" not in record or fit.domains != [VIRTUAL, *record["reuse"]["added"]]:
        return None
    r = record["reuse"]
    return Reuse(list(record["domains"]), dict(r["ratios"]), list(r["added"]), list(r["removed"]))


def proposal_yaml(proposal: dict[str, Any]) -> str:
    """The keys that train on the proposed mixture (``mixflow train``; ``init_mixture_proportions`` is
    also a DoReMi pipeline's starting point), in the fit's domain order."""
    low, high = proposal["predicted interval"]
    header = [
        f"# mixflow search propose: {proposal['model']} fit of {proposal['target']} on {proposal['runs']} runs "
        f"predicts {proposal['predicted']:.4g} [{low:.4g}, {high:.4g}] for this mixture",
        "# dataset order: " + ", ".join(proposal.get("training mixture", proposal["mixture"])),
    ]
    mixture = proposal.get("training mixture", proposal["mixture"])  # a reuse plan's: expanded to every domain
    return "\n".join(header) + "\n" + yaml.safe_dump(static_mixture_keys(mixture), sort_keys=False)


def write_proposal(proposal: dict[str, Any], out: str | Path) -> Path:
    folder = Path(out)
    write_json_atomic(folder / "proposal.json", proposal)
    write_text_atomic(folder / "proposal.yaml", proposal_yaml(proposal))
    return folder / "proposal.yaml"
