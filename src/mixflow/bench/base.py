"""The benchmark contract: a registered function that measures a claim and returns its rows.

``mixflow bench run NAME`` calls the benchmark with a :class:`BenchContext` (size, seeds, output
directory, progress) and writes what it returns as ``NAME.json`` (the schema below), ``NAME.md``
(a table a person reads, with the command that made it) and any plots it drew. A benchmark reports
what it measured, including a claim that does not hold; it never tunes a method per case.

JSON: ``{"name", "claim", "source", "setting", "seeds", "quick", "rows": [{"method", "metric",
"mean", "sd", "values"}], "comparisons": [{"method", "baseline", "metric", "diff_mean", "ci95",
"n_seeds", "verdict", ...}], "holds", "verdict", "elapsed_s", "commit", "machine"}``. Every judged
comparison is paired by seed with a 95% interval (:mod:`mixflow.bench.stats`); ``holds`` is true only
when every comparison that carries a claim has its whole interval inside the claimed range.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixflow.algorithms.registry import discover_modules
from mixflow.bench.stats import Comparison, compare

logger = logging.getLogger(__name__)

#: Entry-point group through which plugin packages add benchmark modules.
ENTRY_POINT_GROUP = "mixflow.benchmarks"


@dataclass
class BenchContext:
    """What a benchmark run is asked for."""

    quick: bool
    """Smallest sizes (about a minute each), for development and the test suite."""
    seeds: int
    """Number of seeds (0, 1, ..., seeds-1); each row reports mean ± sd over them."""
    out_dir: Path
    """Where the JSON, the table and the plots go."""
    tiny: bool = False
    """Smaller still than ``quick``: the test suite's size (seconds), checks the output only."""

    @property
    def scratch(self) -> Path:
        """Where a benchmark's training runs go (``<out>/runs``; not part of the results)."""
        return self.out_dir / "runs"

    def log(self, message: str, *args: Any) -> None:
        """A progress line (every long run says where it is; ``--quiet`` silences them)."""
        logging.getLogger("mixflow.progress.bench").info(message, *args)


@dataclass
class Row:
    """One method's value of one metric over the seeds."""

    method: str
    metric: str
    values: Sequence[float | None]
    censored_at: float | None = None
    """For a "steps to reach" metric: a seed that never reached it is None in ``values`` and is
    reported as "> censored_at" (its value is only known to be larger), never dropped."""

    def as_dict(self) -> dict[str, Any]:
        # a seed that failed (NaN) or never reached (censored) makes the mean undefined: it is never
        # dropped to make one
        known = [v for v in self.values if v is not None]
        if self.values and len(known) == len(self.values) and all(math.isfinite(v) for v in known):
            mean = statistics.fmean(known)
            sd = statistics.stdev(known) if len(known) > 1 else 0.0
        else:
            mean = sd = math.nan
        out: dict[str, Any] = {
            "method": self.method,
            "metric": self.metric,
            "mean": mean,
            "sd": sd,
            "values": [self._shown(v) for v in self.values],
        }
        if self.censored_at is not None:
            ordered = sorted(math.inf if v is None else v for v in self.values)
            median = ordered[(len(ordered) - 1) // 2] if ordered else math.nan  # the lower median: a censored
            out["median"] = self._shown(None if median == math.inf else median)  # upper half reads "> T"
        return out

    def _shown(self, value: float | None) -> float | str:
        return f"> {self.censored_at:g}" if value is None else value


@dataclass
class BenchResult:
    """What a benchmark measured."""

    setting: dict[str, Any]
    """The fixed setting (sizes, noise levels, steps, defaults used)."""
    rows: list[Row]
    holds: bool | None
    """The benchmark's own test of the claim; None where the claim is only reported."""
    verdict: str
    """One sentence: what was measured against the claim, with the figures."""
    plots: list[str] = field(default_factory=list)
    """File names of the PNGs written into the output directory."""
    notes: list[str] = field(default_factory=list)
    """Extra lines for the table (what a reader needs to interpret it)."""
    comparisons: list[Comparison] = field(default_factory=list)
    """Paired comparisons with intervals; those with a ``claim_range`` decide ``holds``."""

    def has(self, method: str, metric: str) -> bool:
        """Whether the benchmark measured this row."""
        return any(row.method == method and row.metric == metric for row in self.rows)

    def values(self, method: str, metric: str) -> list[float]:
        """The per-seed values of one row (an error when the benchmark did not measure it, or when a
        seed is censored: it has no value to pair, and dropping it would bias a comparison)."""
        for row in self.rows:
            if row.method == method and row.metric == metric:
                known = [v for v in row.values if v is not None]
                if len(known) < len(row.values):
                    raise ValueError(f"row {method!r} / {metric!r} has censored seeds (None): no values to pair")
                return known
        raise KeyError(f"no row {method!r} / {metric!r}")

    def compare(self, method: str, baseline: str, metric: str, better: str, **kwargs: Any) -> Comparison:
        """Add and return the paired comparison of two rows of the same metric (see :func:`stats.compare`)."""
        c = compare(
            method, self.values(method, metric), baseline, self.values(baseline, metric), metric, better, **kwargs
        )
        self.comparisons.append(c)
        return c

    def judge(self) -> bool:
        """``holds`` from the claimed comparisons: every one's whole interval inside its claimed range."""
        claimed = [c for c in self.comparisons if c.claim_range is not None]
        if not claimed:
            raise ValueError("judge: no comparison carries a claim")
        self.holds = all(bool(c.passes) for c in claimed)
        return self.holds

    def mean(self, method: str, metric: str) -> float:
        """The mean of one row (an error when the benchmark did not measure it)."""
        for row in self.rows:
            if row.method == method and row.metric == metric:
                return float(row.as_dict()["mean"])
        raise KeyError(f"no row {method!r} / {metric!r}")


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark."""

    name: str
    claim: str
    """The claim it tests, in one sentence."""
    source: str
    """Where the claim comes from (a seed paper, an issue)."""
    run: Callable[[BenchContext], BenchResult]
    needs: tuple[str, ...] = ()
    """Importable modules it needs beyond mixflow's own dependencies (the ``bench`` extra)."""
    seeds: int = 5
    """Seeds at full size (``--seeds`` overrides; ``--quick`` uses at most 3)."""


_BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(
    name: str, claim: str, source: str, needs: Sequence[str] = (), seeds: int = 5
) -> Callable[[Callable[[BenchContext], BenchResult]], Callable[[BenchContext], BenchResult]]:
    """Decorator: register ``run(ctx) -> BenchResult`` as benchmark ``name``."""

    def decorate(run: Callable[[BenchContext], BenchResult]) -> Callable[[BenchContext], BenchResult]:
        if name in _BENCHMARKS and _BENCHMARKS[name].run is not run:
            raise ValueError(f"benchmark {name!r} is already registered")
        _BENCHMARKS[name] = Benchmark(name, claim, source, run, tuple(needs), seeds)
        return run

    return decorate


def available_benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark (mixflow's and plugins'), by name."""
    discover_modules("mixflow.bench", ENTRY_POINT_GROUP)
    return dict(sorted(_BENCHMARKS.items()))


def commit(exclude: Path | None = None) -> str:
    """The git commit of the working tree (with ``-dirty`` when tracked files have changes outside
    ``exclude``, e.g. the results directory being written), or ``unknown``."""
    here = Path(__file__).parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=here
        ).stdout.strip()
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10, cwd=here
        ).stdout.strip()
        # an exclude outside the work tree is no pathspec git accepts (it would fail and read as clean)
        inside = exclude is not None and bool(top) and Path(exclude).resolve().is_relative_to(Path(top).resolve())
        pathspec = ["--", ".", f":(exclude){Path(exclude).resolve()}"] if inside and exclude is not None else []
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=top or here,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def machine() -> str:
    """A one-line description of the machine (CPU cores, memory, accelerator, torch)."""
    import torch

    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    accel = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores{memory}, {accel}, torch {torch.__version__}"


def timed(run: Callable[[BenchContext], BenchResult], ctx: BenchContext) -> tuple[BenchResult, float]:
    """(result, seconds) of one benchmark run."""
    start = time.perf_counter()
    result = run(ctx)
    return result, time.perf_counter() - start
