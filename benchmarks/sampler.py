"""Benchmark: MixtureSampler against a materialised, shuffled index table.

Draws ``--samples`` indices over 7 domains of ``--rows-per-domain`` rows each
with the proportions [0.541, 0.287, 0.042, 0.037, 0.034, 0.031, 0.028] and
a global batch of ``--batch-size``, with two methods:

- ``mixture_sampler``: :class:`mixflow.data.sampler.MixtureSampler`, batches
  from ``iter_batches()`` (also timed one int at a time through ``__iter__``,
  the Sampler protocol a DataLoader uses);
- ``table_baseline``: the straightforward approach: a Python list of every
  ``(domain, row)`` tuple (70M with the defaults), ``random.shuffle``-d,
  then for each sample a domain is chosen with ``random.choices`` by the
  proportions and that domain's cursor walks the table to its next entry
  (wrapping round to the start if a domain runs out, which only happens with
  a scaled-down ``--rows-per-domain``).

Each method runs in a fresh interpreter so that memory figures do not mix:

- ``rss``: peak resident set size of the process (``ru_maxrss``) minus its
  RSS just before the method starts (after the same imports in both);
- ``tracemalloc``: peak of Python-tracked allocations (numpy arrays included),
  in a separate run because tracing slows allocation-heavy code down.

The baseline's table costs about 100 bytes of RSS per row (tuple, int, list
slot): ~7 GB with the default 70M rows. Under tracemalloc, which keeps a
record of every allocation, the process needs about 3x that, so the
baseline's tracemalloc run is skipped (and reported as such) when it would
not fit in the available memory; its RSS figure is measured regardless, the
same way as MixtureSampler's. On a smaller machine pass ``--rows-per-domain``
(e.g. 1000000) to scale the baseline down.

Results are printed and written to ``benchmarks/results/sampler.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from mixflow.data.sampler import MixtureSampler

PROPORTIONS = [0.541, 0.287, 0.042, 0.037, 0.034, 0.031, 0.028]
# Measured RSS per table row of the baseline (7M-row runs), plain and under tracemalloc.
BASELINE_BYTES_PER_ROW = 100
BASELINE_TRACED_BYTES_PER_ROW = 330
RESULTS = Path(__file__).resolve().parent / "results" / "sampler.json"


def run_mixture_sampler(samples: int, rows: int, batch_size: int, seed: int, per_int: bool) -> dict[str, Any]:
    """Draw ``samples`` indices with MixtureSampler; a checksum keeps the work honest."""
    start = time.perf_counter()
    sampler = MixtureSampler([rows] * len(PROPORTIONS), PROPORTIONS, batch_size=batch_size, seed=seed)
    counts = np.zeros(len(PROPORTIONS), dtype=np.int64)
    checksum = 0
    drawn = 0
    if per_int:
        for index in sampler:
            checksum += index
            drawn += 1
            if drawn == samples:
                break
    else:
        for batch in sampler.iter_batches():
            take = batch[: samples - drawn]
            checksum += int(take.sum())
            counts += np.bincount(sampler.domain_ids(take), minlength=len(PROPORTIONS))
            drawn += take.size
            if drawn >= samples:
                break
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "setup_seconds": 0.0,
        "samples_per_s": samples / elapsed,
        "draw_samples_per_s": samples / elapsed,
        "checksum": checksum,
        "observed_proportions": None if per_int else (counts / counts.sum()).tolist(),
    }


def run_table_baseline(samples: int, rows: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Materialise, shuffle and walk the full (domain, row) table."""
    rng = random.Random(seed)
    k = len(PROPORTIONS)
    start = time.perf_counter()
    table = [(d, r) for d in range(k) for r in range(rows)]
    rng.shuffle(table)
    setup = time.perf_counter() - start

    size = len(table)
    cursors = [0] * k
    counts = [0] * k
    checksum = 0
    drawn = 0
    domains = range(k)
    draw_start = time.perf_counter()
    while drawn < samples:
        batch = min(batch_size, samples - drawn)
        for d in rng.choices(domains, weights=PROPORTIONS, k=batch):
            pos = cursors[d]
            while True:
                if pos == size:
                    pos = 0
                entry = table[pos]
                pos += 1
                if entry[0] == d:
                    break
            cursors[d] = pos
            counts[d] += 1
            checksum += d * rows + entry[1]
        drawn += batch
    draw = time.perf_counter() - draw_start
    elapsed = setup + draw
    total = sum(counts)
    return {
        "seconds": elapsed,
        "setup_seconds": setup,
        "samples_per_s": samples / elapsed,
        "draw_samples_per_s": samples / draw,
        "checksum": checksum,
        "observed_proportions": [c / total for c in counts],
    }


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    process = psutil.Process()
    use_tracemalloc = args.worker_mode == "tracemalloc"
    rss_before = process.memory_info().rss
    if use_tracemalloc:
        tracemalloc.start()
    if args.worker == "table_baseline":
        result = run_table_baseline(args.samples, args.rows_per_domain, args.batch_size, args.seed)
    else:
        per_int = args.worker == "mixture_sampler_iter"
        result = run_mixture_sampler(args.samples, args.rows_per_domain, args.batch_size, args.seed, per_int)
    if use_tracemalloc:
        result["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    result["rss_peak_delta_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - rss_before
    print(json.dumps(result))


def measure(method: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one method in a fresh interpreter and return its JSON result."""
    cmd = [
        sys.executable, __file__,
        "--samples", str(args.samples),
        "--rows-per-domain", str(args.rows_per_domain),
        "--batch-size", str(args.batch_size),
        "--seed", str(args.seed),
        "--worker", method,
        "--worker-mode", mode,
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000_000, help="indices to draw (default 10M)")
    parser.add_argument(
        "--rows-per-domain", type=int, default=10_000_000, help="rows in each of the 7 domains (default 10M)"
    )
    parser.add_argument("--batch-size", type=int, default=1024, help="global batch size (default 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the tracemalloc runs (RSS only)")
    parser.add_argument("--skip-baseline", action="store_true", help="measure MixtureSampler only")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-mode", default="time", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    table_rows = len(PROPORTIONS) * args.rows_per_domain
    available = psutil.virtual_memory().available
    if not args.skip_baseline and table_rows * BASELINE_BYTES_PER_ROW > 0.8 * available:
        parser.error(
            f"--rows-per-domain: the baseline table needs ~{human_bytes(table_rows * BASELINE_BYTES_PER_ROW)}, "
            f"only {human_bytes(available)} available; pass a smaller value or --skip-baseline"
        )

    methods = ["mixture_sampler", "mixture_sampler_iter"] + ([] if args.skip_baseline else ["table_baseline"])
    results: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for method in methods:
        print(f"running {method} ...", file=sys.stderr, flush=True)
        results[method] = measure(method, "time", args)
        if args.no_tracemalloc or method == "mixture_sampler_iter":
            continue
        if method == "table_baseline" and table_rows * BASELINE_TRACED_BYTES_PER_ROW > 0.8 * available:
            notes.append(
                f"table_baseline tracemalloc run skipped: it would need "
                f"~{human_bytes(table_rows * BASELINE_TRACED_BYTES_PER_ROW)}, {human_bytes(available)} available"
            )
            continue
        print(f"running {method} under tracemalloc ...", file=sys.stderr, flush=True)
        traced = measure(method, "tracemalloc", args)
        results[method]["tracemalloc_peak_bytes"] = traced["tracemalloc_peak_bytes"]
        results[method]["tracemalloc_run_seconds"] = traced["seconds"]

    print(
        f"\n{args.samples:,} samples, 7 domains x {args.rows_per_domain:,} rows, "
        f"global batch {args.batch_size}, proportions {PROPORTIONS}\n"
    )
    header = (
        f"{'method':<22} {'samples/s':>12} {'draw only/s':>12} {'setup s':>8} "
        f"{'peak RSS delta':>15} {'tracemalloc peak':>17}"
    )
    print(header)
    print("-" * len(header))
    for method, r in results.items():
        print(
            f"{method:<22} {r['samples_per_s']:>12,.0f} {r['draw_samples_per_s']:>12,.0f} {r['setup_seconds']:>8.1f} "
            f"{human_bytes(r['rss_peak_delta_bytes']):>15} {human_bytes(r.get('tracemalloc_peak_bytes')):>17}"
        )

    ratios: dict[str, float] = {}
    if "table_baseline" in results:
        ours, base = results["mixture_sampler"], results["table_baseline"]
        ratios = {
            "speed_end_to_end": ours["samples_per_s"] / base["samples_per_s"],
            "speed_draw_only": ours["samples_per_s"] / base["draw_samples_per_s"],
            "rss_peak_delta": base["rss_peak_delta_bytes"] / max(ours["rss_peak_delta_bytes"], 1),
        }
        if "tracemalloc_peak_bytes" in ours and "tracemalloc_peak_bytes" in base:
            ratios["tracemalloc_peak"] = base["tracemalloc_peak_bytes"] / ours["tracemalloc_peak_bytes"]
        print(
            f"\nMixtureSampler vs table baseline: {ratios['speed_end_to_end']:.1f}x faster end to end "
            f"({ratios['speed_draw_only']:.1f}x against the baseline's draw phase alone), "
            f"{ratios['rss_peak_delta']:.0f}x less peak RSS"
            + (f", {ratios['tracemalloc_peak']:.0f}x less traced memory" if "tracemalloc_peak" in ratios else "")
        )
    for note in notes:
        print(f"note: {note}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "sampler",
        "config": {
            "samples": args.samples,
            "rows_per_domain": args.rows_per_domain,
            "domains": len(PROPORTIONS),
            "proportions": PROPORTIONS,
            "batch_size": args.batch_size,
            "seed": args.seed,
        },
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total,
        },
        "results": results,
        "ratios": ratios,
        "notes": notes,
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
