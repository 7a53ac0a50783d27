"""``search-arena``: the mixture ``mixflow search`` proposes from the arena's swarm, trained on every
scoring seed against the natural, uniform and best static mixtures, with the search's compute counted.

The swarm is the arena's own (``lm-arena`` and this benchmark share the corpus, the scratch folder
and its cached runs): the simple mixtures, Dirichlet draws, one log-linear proposal and the best
members run again on more seeds, each scored on the validation documents. Every regression model is
cross-validated on that table (how well it ranks mixtures it did not see on *this* corpus), the
default one (the log-linear mixing law: Data Mixing Laws, Ye et al. 2025, arXiv 2403.16952, Eq. 1)
is fitted on all of it and RegMix's simulation (Liu et al. 2024, arXiv 2407.01492, §3) proposes the
mixture, as ``mixflow search fit`` and ``propose`` do with their defaults. Its runs are scored on the
test documents, which neither the swarm nor the fit ever saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixflow.bench.arena import (
    BEST_STATIC,
    VAL_TARGET,
    Arena,
    as_best_static,
    best_static_source,
    search_best_static,
    slug,
)
from mixflow.bench.arena_runs import run_specs
from mixflow.bench.arena_scores import TARGET
from mixflow.bench.base import BenchContext, BenchResult, Row, register_benchmark
from mixflow.bench.lm_arena import corpus_arena
from mixflow.bench.stats import Comparison, compare, interval_text
from mixflow.search.fit import cross_validate
from mixflow.search.propose import Constraints, simulate
from mixflow.search.regression import build_model

PROPOSAL = "search proposal"
DEFAULT_MODEL = "loglinear"
#: The mixtures the proposal is measured against (all run with the arena's own specs, so their runs are shared).
AGAINST = ("natural", "uniform", BEST_STATIC)


def swarm_table(best: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(mixtures, validation target losses): one row per swarm run, replicates included."""
    return (
        np.array([m["mixture"] for m in best["members"]], dtype=np.float64),
        np.array([m[VAL_TARGET] for m in best["members"]], dtype=np.float64),
    )


def propose_mixture(arena: Arena, x: np.ndarray, y: np.ndarray) -> list[float]:
    """The default regression fitted on the whole swarm, then RegMix's simulation around the natural
    mixture with ``mixflow search propose``'s defaults (no constraint)."""
    law = build_model(DEFAULT_MODEL).fit(x, y)
    mixture, _ = simulate(law.predict, len(arena.domains), Constraints(), np.array(arena.mixture("natural")))
    return [float(v) for v in mixture]


def _runs(arena: Arena, mixtures: dict[str, list[float]]) -> dict[str, list[dict[str, Any]]]:
    # the same run folders as lm-arena's (arena.slug), so its finished baselines are reused
    specs = [
        arena.spec(name, seed, arena.static_config(arena.work / f"seed{seed}" / slug(name), seed, mixture))
        for seed in range(arena.seeds)
        for name, mixture in mixtures.items()
    ]
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in run_specs(specs, arena.jobs, arena.log, arena.devices):
        runs.setdefault(r["method"], []).append(r)
    return {name: sorted(results, key=lambda r: r["seed"]) for name, results in runs.items()}


def _mixture_runs(arena: Arena, best: dict[str, Any], proposal: list[float]) -> dict[str, list[dict[str, Any]]]:
    """The runs of natural, uniform, the best static mixture and the proposal on every seed. A best
    static mixture that is a baseline is trained as that baseline (lm-arena's runs of it are reused)."""
    source = best_static_source(best)
    mixtures = {name: arena.mixture(name) for name in AGAINST if name != BEST_STATIC}
    chosen = best["mixture"] if source == BEST_STATIC else arena.mixture(source)
    trained = _runs(arena, {**mixtures, source: chosen, PROPOSAL: proposal})
    return {
        **{name: trained[name] for name in mixtures},
        BEST_STATIC: as_best_static(trained[source]),
        PROPOSAL: trained[PROPOSAL],
    }


def _run_rows(arena: Arena, best: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """Each mixture's target, worst clean domain loss and training steps (the swarm's counted for the
    two mixtures chosen from it)."""
    rows = []
    for name, results in runs.items():
        rows.append(Row(name, TARGET, [r[TARGET] for r in results]))
        rows.append(
            Row(name, "worst clean domain loss", [max(r["test_loss"][d] for d in arena.clean) for r in results])
        )
        searched = best["steps"] if name in (BEST_STATIC, PROPOSAL) else 0
        rows.append(Row(name, "training steps (search included)", [float(r["steps"] + searched) for r in results]))
    return rows


def _against(runs: dict[str, list[dict[str, Any]]]) -> list[Comparison]:
    """The proposal against each of ``AGAINST`` on the target loss (the claim: below natural)."""
    return [
        compare(
            PROPOSAL,
            [r[TARGET] for r in runs[PROPOSAL]],
            name,
            [r[TARGET] for r in runs[name]],
            TARGET,
            "lower",
            claim_range=(None, 0.0) if name == "natural" else None,
        )
        for name in AGAINST
    ]


@register_benchmark(
    "search-arena",
    claim="on the arena's corpus, the mixture mixflow search proposes from the swarm (log-linear law, RegMix's "
    "simulation) lowers the target loss below the natural mixture's with its whole 95% interval; it is placed "
    "against uniform and the swarm's measured best, with the swarm's compute counted",
    source="issue 21 (mixture search); RegMix (Liu et al. 2024) §3; Data Mixing Laws (Ye et al. 2025) Eq. 1",
    needs=("lightgbm", "sklearn"),
    seeds=4,
)
def run(ctx: BenchContext) -> BenchResult:
    arena, setting = corpus_arena(ctx, methods=[])
    best = search_best_static(arena)
    x, y = swarm_table(best)
    models = ["linear", DEFAULT_MODEL, "lightgbm"] + ([] if ctx.tiny else ["gp"])
    rows = [
        Row(
            model, f"5-fold cross-validated Spearman ρ ({len(y)} swarm runs)", [cross_validate(model, x, y)["spearman"]]
        )
        for model in models
    ]
    proposal = propose_mixture(arena, x, y)
    ctx.log("search-arena: proposed %s", ", ".join(f"{d} {w:.3f}" for d, w in zip(arena.domains, proposal)))
    runs = _mixture_runs(arena, best, proposal)
    rows += _run_rows(arena, best, runs)
    result = BenchResult(
        setting={
            **setting,
            "steps": arena.steps,
            "seeds": arena.seeds,
            "domains": arena.domains,
            "clean domains": arena.clean,
            "swarm runs": best["runs"],
            "swarm steps": best["steps"],
            "swarm seconds": round(best["seconds"]),
            "default model": DEFAULT_MODEL,
            "proposal": dict(zip(arena.domains, proposal)),
            "best static": dict(zip(arena.domains, best["mixture"])),
        },
        rows=rows,
        holds=None,
        verdict="",
    )
    result.comparisons += _against(runs)
    result.judge()
    rho = {row.method: row.values[0] for row in rows[: len(models)]}
    result.verdict = "; ".join(
        f"{PROPOSAL} − {c.baseline}: {interval_text(c)} ({c.verdict})" for c in result.comparisons
    ) + (f". Cross-validated ρ on {len(y)} swarm runs: " + ", ".join(f"{m} {v:.2f}" for m, v in rho.items()))
    result.notes.append(
        f"the search's compute: {best['runs']} swarm runs, {best['steps']} steps, counted in the steps of "
        "both mixtures chosen from it (best static: its lowest measured member; the proposal: the fit)"
    )
    return result
