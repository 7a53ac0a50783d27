"""The arena's comparison (step 4 of :mod:`mixflow.bench.arena`): every baseline, the best static
mixture and every method run on every seed, then scored against the best static mixture — rows,
paired comparisons, the fraction of the natural → best-static gap closed, calibration figures and
the recommendation."""

from __future__ import annotations

from typing import Any

import numpy as np

from mixflow.bench.arena import (
    BASELINES,
    BEST_STATIC,
    EQUAL_COMPUTE,
    Arena,
    as_best_static,
    best_static_source,
    method_spec,
    search_best_static,
)
from mixflow.bench.arena_recommend import recommend
from mixflow.bench.arena_runs import RunSpec, check_specs, reused, run_specs
from mixflow.bench.arena_scores import TARGET, bound_text, calibration, gap_closed, mean_curve, steps_to
from mixflow.bench.base import BenchResult, Row


def run_arena(arena: Arena) -> tuple[BenchResult, dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Every baseline, the best static mixture and every method on every seed: the result, what it
    concludes (recommendation, gap closed, calibration) and every run's record (for plots)."""
    check_specs(
        [arena.spec("uniform", 0, arena.static_config(arena.work / "check", 0, arena.mixture("uniform")))]
        + [method_spec(arena, m, 0) for m in arena.methods]
    )
    best = search_best_static(arena)
    specs = _scoring_specs(arena, best)
    arena.log(
        "arena: %d runs (%d seeds × %d methods and baselines), %s",
        len(specs),
        arena.seeds,
        len(specs) // arena.seeds,
        f"one on each of {arena.devices} devices" if arena.devices else f"{arena.jobs} at a time",
    )
    earlier = reused(specs)
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in run_specs(specs, arena.jobs, arena.log, arena.devices):
        runs.setdefault(r["method"], []).append(r)
    for results in runs.values():
        results.sort(key=lambda r: r["seed"])
    if best_static_source(best) != BEST_STATIC:
        runs = _with_best_static_as(runs, best_static_source(best))
    result, summary = score(arena, runs, best)
    if earlier:  # provenance: those runs ran at an earlier commit with the same config and data
        result.notes.append(
            f"{earlier} of the {len(specs)} runs were reused from their saved results (the same run "
            "config and data digest), not run again by this invocation"
        )
    return result, summary, runs


def _with_best_static_as(runs: dict[str, list[dict[str, Any]]], baseline: str) -> dict[str, list[dict[str, Any]]]:
    """``runs`` with ``baseline``'s runs also as "best static", placed after the last baseline."""
    out: dict[str, list[dict[str, Any]]] = {}
    for method, results in runs.items():
        out[method] = results
        if method == BASELINES[-1]:
            out[BEST_STATIC] = as_best_static(runs[baseline])
    return out


def _scoring_specs(arena: Arena, best: dict[str, Any]) -> list[RunSpec]:
    """The runs scored on every seed: the baselines, the best static mixture (unless the swarm chose a
    baseline: then its runs are that baseline's), every method and, with
    DoReMi, the best static mixture at DoReMi's total steps."""
    specs = []
    for seed in range(arena.seeds):
        for name in BASELINES:
            specs.append(
                arena.spec(
                    name, seed, arena.static_config(arena.work / f"seed{seed}" / name, seed, arena.mixture(name))
                )
            )
        if best_static_source(best) == BEST_STATIC:
            specs.append(
                arena.spec(
                    BEST_STATIC,
                    seed,
                    arena.static_config(arena.work / f"seed{seed}" / "best_static", seed, best["mixture"]),
                )
            )
        specs += [method_spec(arena, m, seed) for m in arena.methods]
        if "doremi" in arena.methods:  # the same total compute as DoReMi's reference + proxy + target
            config = arena.static_config(arena.work / f"seed{seed}" / "best_static_x3", seed, best["mixture"])
            config.update(
                max_steps=3 * arena.steps,
                eval_steps=max(1, arena.steps // 2),
                warmup_steps=3 * int(arena.base.get("warmup_steps", 0)),
            )
            specs.append(arena.spec(EQUAL_COMPUTE, seed, config))
    return specs


def score(
    arena: Arena, runs: dict[str, list[dict[str, Any]]], best: dict[str, Any]
) -> tuple[BenchResult, dict[str, Any]]:
    """Rows, comparisons, calibration and the recommendation from every run's results."""
    result = BenchResult(setting={}, rows=_rows(arena, runs), holds=None, verdict="")
    by_baseline = {b: float(np.mean([r[TARGET] for r in runs[b]])) for b in (*BASELINES, BEST_STATIC)}
    best_baseline = min(by_baseline, key=by_baseline.__getitem__)
    _add_steps_to(result, arena, runs, best_baseline)
    _compare(result, runs)
    gap = gap_closed(runs)
    cal = calibration(runs)
    rec = recommend(arena.domains, best["mixture"], result.comparisons, arena.methods)
    result.setting = _setting(arena, best, cal, best_baseline)
    result.verdict = _verdict(result, by_baseline, cal, rec)
    result.notes += _notes(arena, best, gap)
    return result, {"recommendation": rec, "gap": gap, "calibration": cal, "best_baseline": best_baseline}


def _rows(arena: Arena, runs: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """Each method's target, worst clean domain, per-domain test losses, seconds and training steps."""
    rows = []
    for method, results in runs.items():
        rows.append(Row(method, TARGET, [r[TARGET] for r in results]))
        rows.append(
            Row(method, "worst clean domain loss", [max(r["test_loss"][d] for d in arena.clean) for r in results])
        )
        for d in arena.domains:
            rows.append(Row(method, f"{d} test loss", [r["test_loss"][d] for r in results]))
        rows.append(Row(method, "seconds", [r["seconds"] for r in results]))
        rows.append(
            Row(method, "training steps (all stages)", [float(r["steps"] + r.get("extra_steps", 0)) for r in results])
        )
    return rows


def _add_steps_to(result: BenchResult, arena: Arena, runs: dict[str, list[dict[str, Any]]], best_baseline: str) -> None:
    """Adds each method's steps to reach the best baseline's final validation loss (censored at the
    run's steps)."""
    reach = float(np.mean([mean_curve(r["curve"], arena.clean)[-1] for r in runs[best_baseline]]))
    steps_rows: dict[str, list[float | None]] = {}
    for method, results in runs.items():
        steps_rows[method] = [steps_to(r["curve"], arena.clean, reach) for r in results]
    for method, values in steps_rows.items():
        result.rows.append(
            Row(method, f"steps to {best_baseline}'s final validation loss", values, censored_at=float(arena.steps))
        )


def _compare(result: BenchResult, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Compares every method with the best static mixture, DoReMi with the best static mixture at its
    total steps, and every method with the natural mixture, on the target loss."""
    for method in runs:
        if method not in (BEST_STATIC, EQUAL_COMPUTE):
            result.compare(method, BEST_STATIC, TARGET, "lower")
    if EQUAL_COMPUTE in runs and "doremi" in runs:
        result.compare("doremi", EQUAL_COMPUTE, TARGET, "lower")
    for method in runs:
        if method not in ("natural", BEST_STATIC, EQUAL_COMPUTE):
            result.compare(method, "natural", TARGET, "lower")


def _setting(arena: Arena, best: dict[str, Any], cal: dict[str, float], best_baseline: str) -> dict[str, Any]:
    """The result's setting: the arena's size, domains, the swarm's cost and the baselines' mixtures."""
    return {
        "steps": arena.steps,
        "seeds": arena.seeds,
        "domains": arena.domains,
        "clean domains": arena.clean,
        "train tokens": arena.tokens,
        "best static mixture": dict(zip(arena.domains, best["mixture"])),
        "swarm runs": best["runs"],
        "swarm steps": best["steps"],
        "swarm seconds": round(best["seconds"]),
        "best static chosen": best["chosen"],
        "baselines' mixtures": {b: dict(zip(arena.domains, np.round(arena.mixture(b), 4).tolist())) for b in BASELINES},
        "calibration": cal,
        "best baseline": best_baseline,
    }


def _verdict(result: BenchResult, by_baseline: dict[str, float], cal: dict[str, float], rec: dict[str, Any]) -> str:
    """One sentence: the methods better, no different and worse than the best static mixture, the
    calibration and the recommendation."""
    better = [c.method for c in result.comparisons if c.baseline == BEST_STATIC and c.verdict == "better"]
    worse = [c.method for c in result.comparisons if c.baseline == BEST_STATIC and c.verdict == "worse"]
    same = [c.method for c in result.comparisons if c.baseline == BEST_STATIC and c.verdict == "no different"]
    return (
        f"against the best static mixture (target loss {by_baseline['best static']:.4f}, natural "
        f"{by_baseline['natural']:.4f}, uniform {by_baseline['uniform']:.4f}): better {', '.join(better) or 'none'}; "
        f"no different {', '.join(same) or 'none'}; worse {', '.join(worse) or 'none'}. Calibration: seed sd / gap "
        f"{cal['sd / gap']:.2f} (target ≤ 0.25), |natural − uniform| = {cal['|natural − uniform| / sd']:.1f} seed sd "
        f"(target > 4). Recommendation: {rec['method']} — {rec['why']}."
    )


def _notes(arena: Arena, best: dict[str, Any], gap: dict[str, tuple[float, float, float]]) -> list[str]:
    """The notes: the gap each method closes, what the target is, and how the best static was chosen."""
    notes = [
        f"fraction of the natural → best-static gap closed by {m}: {v:.2f} [{bound_text(lo)}, {bound_text(hi)}] "
        "(Fieller's 95% interval over the seeds' paired differences)"
        for m, (v, lo, hi) in gap.items()
        if m not in ("natural", BEST_STATIC)
    ]
    notes.append(
        f"target: the mean test loss over the clean domains ({', '.join(arena.clean)}); test documents "
        "are never trained, tuned or chosen on; validation curves (steps to reach) use the training files' "
        "validation split"
    )
    notes.append(
        f"best static: the swarm member {best['chosen']!r}, lowest mean target on the validation "
        f"documents over {arena.replicate[1]} seeds among the {arena.replicate[0]} best of one seed "
        f"({best['runs']} swarm runs, {best['steps']} steps); DoReMi's steps count its reference and "
        "proxy"
    )
    if best_static_source(best) != BEST_STATIC:
        notes.append(
            f"best static is the baseline {best['chosen']!r}: its runs at every seed are that baseline's "
            "(the same mixture and seeds), not trained twice"
        )
    return notes
