"""The ``overhead`` benchmark at many domains: what mixing costs per step at K = 64 and 256 tiny
domains (static, ODM, ADO, a linearly moving schedule, each writing its weights log), and what each
piece of the per-step bookkeeping costs per domain (the statistics, their packing for the
all-reduce, a sampler's batch, an update, a weights-log line), ADO's fit and the weights plot.

The step ratios are measured as for K = 4 (:func:`mixflow.bench.overhead_steps.step_ratios`: a plain
Trainer and a MixflowTrainer in turn on the same batches, CPU time, one thread); the pieces by
repeating each on synthetic inputs (median of several timings).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixflow.bench.stats import Comparison

#: The target step-time ratio against the plain Trainer at the largest K (issue 22).
TARGET = 1.05


def components(k: int) -> dict[str, tuple[str, dict[str, Any], int]]:
    """(component, params, update_step) of each algorithm timed at ``k`` domains."""
    rng = np.random.default_rng(0)
    moving = {
        "interpolation": "linear",
        "stages": [
            {"at": 0, "proportions": [1.0] * k},
            {"at": 10**6, "proportions": rng.uniform(0.5, 1.5, k).tolist()},
        ],
    }
    return {
        "static": ("static", {}, 5),  # its updates only log per-domain losses
        "odm": ("odm", {}, 1),
        # ADO's floor is below 1/K; its fits (every 1000 steps, as released) are timed on their own
        "ado": ("ado", {"min_probability": 0.1 / k}, 1),
        "schedule": ("schedule", moving, 5),  # p changes at every step: a weights-log line each
    }


def domain_step_ratios(
    k: int, vocab: int, pairs: int, step_ratios: Callable[..., dict[str, list[float]]]
) -> dict[str, dict[str, list[float]]]:
    """Per algorithm, its step-time ratios at ``k`` domains (weights log written, as in a run), timed by
    ``step_ratios`` (:func:`mixflow.bench.overhead_steps.step_ratios`, passed in by :mod:`mixflow.bench.overhead`)."""
    # at least two windows of update_step steps: a ratio is taken over a window (its update included)
    return {
        name: step_ratios(
            name, update_step, vocab, max(pairs, 2 * update_step), k=k, spec=(component, params), log=True
        )
        for name, (component, params, update_step) in components(k).items()
    }


def comparisons(k: int, vocab: int, ratios: dict[str, dict[str, list[float]]], judged: bool) -> list[Comparison]:
    """The ratios against the plain Trainer as comparisons; at the largest K they carry the target."""
    return [
        Comparison(
            f"{name} @ K={k}",
            "plain",
            f"vocab {vocab}: step time",
            tuple(math.log(v) for v in r["vs plain"]),
            "lower",
            "ratio",
            claim_range=(None, TARGET) if judged else None,
        )
        for name, r in ratios.items()
    ]


def _timed(fn: Callable[[], Any], repeats: int = 7, inner: int = 20) -> float:
    """Median seconds of one call of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def piece_costs(k: int, batch: int = 12) -> dict[str, float]:
    """Microseconds of each per-step piece at ``k`` domains (a batch of ``batch`` rows)."""
    from mixflow.algorithms.registry import build_algorithm
    from mixflow.algorithms.statistics import DomainStats
    from mixflow.data.sampler import MixtureSampler
    from mixflow.engine.records import weights_log_record
    from mixflow.utils.jsonlog import append_jsonl

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, k, (batch,), generator=gen)
    losses, counts = torch.rand(batch, generator=gen) * 100, torch.full((batch,), 128.0)
    stats = DomainStats.from_samples(ids, losses, counts, k)
    sampler = MixtureSampler([1000] * k, np.ones(k) / k, batch, seed=0)
    stream = sampler.iter_batches()
    odm = build_algorithm("odm", [f"d{i}" for i in range(k)], {}, init_weights=np.ones(k) / k)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "odm_weights.jsonl"
        out = {
            "statistics of a batch": _timed(lambda: DomainStats.from_samples(ids, losses, counts, k)),
            "packing for the all-reduce": _timed(lambda: stats.pack()),
            "a sampler batch": _timed(lambda: next(stream)),
            "an ODM update": _timed(lambda: odm.apply_update(stats, 10)),
            "a weights-log line": _timed(lambda: append_jsonl(log, weights_log_record(1, odm.domain_names, odm))),
        }
    return {name: seconds * 1e6 for name, seconds in out.items()}


def ado_fit_seconds(k: int, points: int = 100) -> float:
    """Seconds of one ADO fit of ``k`` laws on ``points`` smoothed history points."""
    from mixflow.algorithms.ado import ADO, ADOParams

    algo = ADO(
        [f"d{i}" for i in range(k)],
        ADOParams(min_probability=0.1 / k, block=1, ignore_steps=0, eps_min=1.0),
        init_weights=np.ones(k) / k,
    )
    algo.bind(12)
    steps = np.arange(1, points + 1)
    scale = np.random.default_rng(0).uniform(0.5, 2.0, k)
    algo.history = [(2.0 + scale * 5 * (12 * s) ** -0.3).tolist() for s in steps]
    return _timed(lambda: algo.fit(points), repeats=3, inner=1)


def plot_seconds(k: int, lines: int = 1000) -> float:
    """Seconds ``mixflow plot``'s drawing takes on a weights log of ``lines`` lines over ``k`` domains
    (timed in a fresh interpreter: the command line is the layer above this one)."""
    import subprocess
    import sys

    names = [f"d{i}" for i in range(k)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        with open(run / "odm_weights.jsonl", "w", encoding="utf-8") as f:
            for step in range(1, lines + 1):
                w = rng.dirichlet(np.ones(k)).tolist()
                f.write(
                    json.dumps(
                        {
                            "step": step,
                            "domain_names": names,
                            "domain_weights": w,
                            "sampling_weights": w,
                            "perdomain_scores": w,
                            "loss_weights": [1.0] * k,
                        }
                    )
                    + "\n"
                )
        code = (
            "import time; from mixflow.cli.plot import plot_run; start = time.perf_counter(); "
            f"plot_run({str(run)!r}); print(time.perf_counter() - start)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"overhead: mixflow plot failed: {out.stderr.strip().splitlines()[-1:]}")
        return float(out.stdout.strip().splitlines()[-1])


def measure(
    ctx: Any, counts: list[int], vocab: int, pairs: int, step_ratios: Callable[..., dict[str, list[float]]]
) -> tuple[dict[tuple[str, str], list[float]], list[Comparison], list[str]]:
    """Rows (method, metric) → values, comparisons and notes of the many-domain part."""
    cols: dict[tuple[str, str], list[float]] = {}
    found: list[Comparison] = []
    pieces: dict[int, dict[str, float]] = {}
    for k in counts:
        ctx.log("overhead: %d domains: static, ODM, ADO, a moving schedule", k)
        ratios = domain_step_ratios(k, vocab, pairs, step_ratios)
        for name, r in ratios.items():
            cols[(f"{name} @ K={k}", f"vocab {vocab}: step-time ratio vs plain")] = r["vs plain"]
        found += comparisons(k, vocab, ratios, judged=k == max(counts))
        pieces[k] = piece_costs(k)
        for piece, micros in pieces[k].items():
            cols[(f"{piece} @ K={k}", "microseconds")] = [micros]
    top = max(counts)
    fit = ado_fit_seconds(top)
    cols[(f"ADO fit @ K={top}", "seconds (100 history points)")] = [fit]
    cols[(f"mixflow plot @ K={top}", "seconds (1000 weights-log lines)")] = [plot_seconds(top)]
    notes = [
        f"ADO's fit of {top} laws takes {fit:.2f} s; at the released fit_every 1000 that is "
        f"{fit / 1000 * 1e3:.2f} ms a step"
    ]
    low = min(pieces)
    if top != low:
        notes.append(
            f"cost per domain (µs per domain, between K={low} and K={top}): "
            + "; ".join(
                f"{piece} {(pieces[top][piece] - pieces[low][piece]) / (top - low):.3f}" for piece in pieces[top]
            )
        )
    return cols, found, notes
