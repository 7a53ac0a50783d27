"""``sampler``: MixtureSampler against index-table baselines, in speed and memory.

7 domains with the proportions [0.541, 0.287, 0.042, 0.037, 0.034, 0.031, 0.028] (a typical
pretraining mixture), a global batch of 1024, at ``rows`` rows per domain. Each method runs in a
fresh interpreter, so its peak RSS (minus the RSS before it started) is its own:

- ``MixtureSampler (batches)``: ``iter_batches()``; ``MixtureSampler (Trainer path)``: one index
  at a time through ``__iter__``, as a DataLoader reads it (plain ``int``s: the plan stays with the
  sampler);
- ``numpy index table``: a vectorised table: one permutation of every row per domain, then per
  batch multinomial counts and a cursor per domain;
- ``WeightedRandomSampler``: torch's sampler over one weight per row (p_d / n_d), with replacement;
- ``Python list table``: every (domain, row) pair in a shuffled list, ``random.choices`` per sample
  (at full size for the first seed only: it takes minutes and GiB).

At 10⁹ rows per domain only MixtureSampler runs: the tables would need 7·10⁹ entries.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from typing import Any

import numpy as np

from mixflow.bench.base import BenchContext, BenchResult, Row, register_benchmark
from mixflow.bench.stats import compare, interval_text

PROPORTIONS = [0.541, 0.287, 0.042, 0.037, 0.034, 0.031, 0.028]
BATCH = 1024
METHODS = (
    "MixtureSampler (batches)",
    "MixtureSampler (Trainer path)",
    "numpy index table",
    "WeightedRandomSampler",
    "Python list table",
)
#: Bytes per row a table method needs (measured), to skip what this machine cannot hold.
BYTES_PER_ROW = {"numpy index table": 16, "WeightedRandomSampler": 24, "Python list table": 110}


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _draw(method: str, samples: int, rows: int, seed: int) -> float:
    """Draw ``samples`` indices with ``method``; returns seconds (setup included)."""
    k, p = len(PROPORTIONS), np.asarray(PROPORTIONS)
    start = time.perf_counter()
    if method.startswith("MixtureSampler"):
        from mixflow.data.sampler import MixtureSampler

        sampler = MixtureSampler([rows] * k, PROPORTIONS, BATCH, seed=seed)
        if method.endswith("(batches)"):
            batches, drawn = sampler.iter_batches(), 0
            while drawn < samples:
                drawn += len(next(batches))
        else:
            for i, _ in enumerate(sampler):
                if i + 1 >= samples:
                    break
    elif method == "numpy index table":
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(rows) + d * rows for d in range(k)]
        cursor, drawn = np.zeros(k, dtype=np.int64), 0
        while drawn < samples:
            counts = rng.multinomial(BATCH, p)
            batch = np.concatenate([orders[d][(cursor[d] + np.arange(c)) % rows] for d, c in enumerate(counts)])
            cursor += counts
            rng.shuffle(batch)
            drawn += len(batch)
    elif method == "WeightedRandomSampler":
        import torch
        from torch.utils.data import WeightedRandomSampler

        weights = torch.repeat_interleave(torch.as_tensor(p / rows), rows)
        # torch annotates weights as Sequence[float], but converts them with torch.as_tensor and takes a
        # tensor as is; a list here would add its own time and memory to what this method is measured by
        draws = WeightedRandomSampler(
            weights,  # type: ignore[arg-type]
            samples,
            replacement=True,
            generator=torch.Generator().manual_seed(seed),
        )
        for _ in draws:  # the Sampler protocol, as a DataLoader reads it
            pass
    else:
        rnd = random.Random(seed)
        table = [(d, r) for d in range(k) for r in range(rows)]
        rnd.shuffle(table)
        cursors, drawn = [0] * k, 0
        for d in rnd.choices(range(k), weights=PROPORTIONS, k=samples):
            while table[cursors[d] % len(table)][0] != d:
                cursors[d] += 1
            cursors[d] += 1
            drawn += 1
    return time.perf_counter() - start


def worker(method: str, samples: int, rows: int, seed: int) -> None:
    """Entry point of the measuring subprocess: prints one JSON line. The peak RSS is sampled every
    millisecond while the method runs (the process's lifetime peak would be the imports')."""
    import threading

    import torch  # noqa: F401  (imported before the baseline RSS, as every method needs it loaded)

    from mixflow.data.sampler import MixtureSampler  # noqa: F401

    before, peak, done = _rss(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    seconds = _draw(method, samples, rows, seed)
    done.set()
    watcher.join()
    record = {"samples_per_s": samples / seconds, "seconds": seconds, "rss_mib": max(0, peak[0] - before) / 2**20}
    sys.stdout.write(json.dumps(record) + "\n")


def measure(method: str, samples: int, rows: int, seed: int) -> dict[str, float] | str:
    """One method in a fresh interpreter (memory figures do not mix); the error line if it failed."""
    code = f"from mixflow.bench.sampler import worker; worker({method!r}, {samples}, {rows}, {seed})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit status {out.returncode}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _sizes(ctx: BenchContext) -> dict[str, Any]:
    if ctx.tiny:
        return {"samples": 20_000, "rows": 20_000, "large_rows": 10**6}
    if ctx.quick:
        return {"samples": 10**6, "rows": 10**6, "large_rows": 10**9}
    return {"samples": 10**7, "rows": 10**7, "large_rows": 10**9}


def _measure_all(ctx: BenchContext, s: dict[str, Any]) -> tuple[dict[tuple[str, str], list[float]], dict[str, str]]:
    """Every method's samples/s and peak RSS per seed and table size; (columns, the failures' errors)."""
    cols: dict[tuple[str, str], list[float]] = {}
    failures: dict[str, str] = {}
    sizes = {"": s["rows"], " (10⁹ rows/domain)": s["large_rows"]}
    for seed in range(ctx.seeds):
        for suffix, rows in sizes.items():
            for method in METHODS:
                if suffix and not method.startswith("MixtureSampler (batches" if ctx.tiny else "MixtureSampler"):
                    continue
                if method == "Python list table" and seed > 0 and not (ctx.quick or ctx.tiny):
                    continue  # ~7 minutes and 7 GiB per full-size run: one seed says how slow it is
                need = BYTES_PER_ROW.get(method, 0) * rows * len(PROPORTIONS)
                if need > 0.7 * _available_bytes():
                    ctx.log("sampler: %s skipped at %d rows per domain (needs ~%.0f GiB)", method, rows, need / 2**30)
                    continue
                ctx.log("sampler: seed %d, %s, %d rows per domain", seed, method, rows)
                m = measure(method, s["samples"], rows, seed)
                if isinstance(m, str):
                    failures[f"{method} at {rows:.0e} rows/domain"] = m
                    continue
                cols.setdefault((method + suffix, "samples/s"), []).append(m["samples_per_s"])
                cols.setdefault((method + suffix, "peak RSS (MiB)"), []).append(m["rss_mib"])
    return cols, failures


@register_benchmark(
    "sampler",
    claim="MixtureSampler draws at least as fast as a vectorised numpy index table with memory that does not grow with the data "
    "(the whole interval of the speed ratio ≥ 1×, of the memory ratio at 100× the rows < 2×), and one index at a time "
    "(the Trainer's DataLoader) keeps at least half its batch speed (whole interval ≥ 0.5×)",
    source="docs/design.md (the sampler); issue 7",
    seeds=5,
)
def run(ctx: BenchContext) -> BenchResult:
    s = _sizes(ctx)
    cols, failures = _measure_all(ctx, s)
    result = BenchResult(
        setting={**s, "domains": len(PROPORTIONS), "proportions": PROPORTIONS, "batch": BATCH},
        rows=[Row(m, metric, v) for (m, metric), v in cols.items()],
        holds=None,
        verdict="",
    )
    _judge(result, s)
    result.notes.append("throughput includes setup (building a table, or nothing for MixtureSampler)")
    if not (ctx.quick or ctx.tiny):
        result.notes.append("the Python list table runs for the first seed only at full size (minutes and GiB per run)")
    if result.has("Python list table", "samples/s"):  # a materialised Python index table: one seed at full size
        ratio = result.mean("MixtureSampler (Trainer path)", "samples/s") / result.mean(
            "Python list table", "samples/s"
        )
        result.notes.append(
            f"the Trainer path draws {ratio:.1f}× as fast as the Python list table (means; the table "
            "has too few seeds at full size for an interval)"
        )
    result.notes += [f"{what}: failed: {why}" for what, why in failures.items()]
    return result


def _judge(result: BenchResult, s: dict[str, Any]) -> None:
    """Compares MixtureSampler's speed with the numpy table's, its peak RSS at the large row count with
    the one at the small, and the Trainer path with the batch path; sets the verdict."""
    speed = result.compare(
        "MixtureSampler (batches)", "numpy index table", "samples/s", "higher", scale="ratio", claim_range=(1.0, None)
    )
    large = "MixtureSampler (batches) (10⁹ rows/domain)"
    memory = compare(
        large,
        result.values(large, "peak RSS (MiB)"),
        "MixtureSampler (batches)",
        result.values("MixtureSampler (batches)", "peak RSS (MiB)"),
        "peak RSS (MiB)",
        "lower",
        scale="ratio",
        claim_range=(None, 2.0),
    )
    result.comparisons.append(memory)
    result.compare("MixtureSampler (Trainer path)", "numpy index table", "samples/s", "higher", scale="ratio")
    # the per-index cost a DataLoader adds (each index once carried its plan: 0.34× at 20ccf16)
    per_index = result.compare(
        "MixtureSampler (Trainer path)",
        "MixtureSampler (batches)",
        "samples/s",
        "higher",
        scale="ratio",
        claim_range=(0.5, None),
    )
    result.judge()
    result.verdict = (
        f"MixtureSampler {result.mean('MixtureSampler (batches)', 'samples/s') / 1e6:.2f}M samples/s, "
        f"{interval_text(speed)} the numpy table's (claim: the whole interval ≥ 1×), the Trainer path "
        f"{result.mean('MixtureSampler (Trainer path)', 'samples/s') / 1e6:.2f}M/s, {interval_text(per_index)} the "
        f"batch path's (claim ≥ 0.5×); peak RSS at {s['large_rows']:.0e} "
        f"rows/domain {interval_text(memory)} the one at {s['rows']:.0e} (claim < 2×; numpy table "
        f"{result.mean('numpy index table', 'peak RSS (MiB)'):.0f} MiB)."
    )
