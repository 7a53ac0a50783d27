"""Running benchmarks and writing what they measured: ``NAME.json``, ``NAME.md``, ``report.md``."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixflow.algorithms.params import suggest
from mixflow.bench.base import BenchContext, Benchmark, BenchResult, available_benchmarks, commit, machine, timed
from mixflow.errors import ConfigError
from mixflow.utils.jsonlog import read_json, write_json_atomic

#: What ``pip install`` adds the optional benchmark dependencies.
EXTRA = "pip install 'mixflow[bench]'"


def select(names: Sequence[str]) -> list[Benchmark]:
    """The named benchmarks (``all``: every one); an unknown name or a missing extra is one error."""
    table = available_benchmarks()
    if list(names) in ([], ["all"]):
        chosen = list(table.values())
    else:
        unknown = [n for n in names if n not in table]
        if unknown:  # every unknown name at once, each with the closest one
            raise ConfigError(
                "\n".join(
                    f"bench: unknown benchmark {n!r}; expected one of {sorted(table)} or 'all'{suggest(n, table)}"
                    for n in unknown
                )
            )
        chosen = [table[n] for n in names]
    missing = sorted({m for b in chosen for m in b.needs if importlib.util.find_spec(m) is None})
    if missing:
        raise ConfigError(f"bench: {', '.join(missing)} not installed; run: {EXTRA}")
    return chosen


def run_benchmarks(
    names: Sequence[str],
    quick: bool = False,
    seeds: int | None = None,
    out: str | Path = "build/bench",
    tiny: bool = False,
) -> list[Path]:
    """Run each benchmark and write its files; returns the JSON paths."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for bench in select(names):
        n = seeds if seeds is not None else (2 if tiny else min(3, bench.seeds) if quick else bench.seeds)
        ctx = BenchContext(quick=quick or tiny, seeds=n, out_dir=out_dir, tiny=tiny)
        ctx.log("bench %s: %s (%s, %d seeds)", bench.name, bench.claim, "quick" if ctx.quick else "full size", n)
        code = commit(exclude=out_dir)  # the code that runs, before this run writes its results
        result, elapsed = timed(bench.run, ctx)
        claimed = [c for c in result.comparisons if c.claim_range is not None]
        if result.holds and any(not c.passes for c in claimed):  # a benchmark's own defect, never a result
            raise RuntimeError(f"bench {bench.name}: holds is true but a claimed interval leaves its range")
        path = write_result(
            out_dir,
            bench.name,
            bench.claim,
            bench.source,
            result,
            n,
            ctx.quick,
            elapsed,
            code,
            command(bench.name, ctx, seeds),
        )
        ctx.log("bench %s: %s (%.0f s)", bench.name, _holds_word(result.holds), elapsed)
        written.append(path)
    return written


def write_result(
    out_dir: Path,
    name: str,
    claim: str,
    source: str,
    result: BenchResult,
    seeds: int,
    quick: bool,
    elapsed: float,
    code: str,
    cmd: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``NAME.json`` (the schema of :mod:`mixflow.bench.base`, plus ``extra``) and ``NAME.md``."""
    payload = {
        "name": name,
        "claim": claim,
        "source": source,
        "setting": result.setting,
        "seeds": seeds,
        "quick": quick,
        "rows": [row.as_dict() for row in result.rows],
        "comparisons": [c.as_dict() for c in result.comparisons],
        "holds": result.holds,
        "verdict": result.verdict,
        "elapsed_s": round(elapsed, 2),
        "commit": code,
        "machine": machine(),
        "plots": result.plots,
        "notes": result.notes,
        **(extra or {}),
    }
    path = out_dir / f"{name}.json"
    write_json_atomic(path, payload)
    (out_dir / f"{name}.md").write_text(table_markdown(payload, cmd), encoding="utf-8")
    return path


def command(name: str, ctx: BenchContext, seeds: int | None) -> str:
    """The command that reproduces a result."""
    parts = ["mixflow bench run", name]
    if ctx.tiny:
        parts.append("--tiny")
    elif ctx.quick:
        parts.append("--quick")
    if seeds is not None:
        parts.append(f"--seeds {seeds}")
    parts.append(f"--out {ctx.out_dir}")
    return " ".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}"
    return str(value)


def _holds_word(holds: bool | None) -> str:
    return {True: "holds", False: "does not hold", None: "reported"}[holds]


def table_markdown(payload: dict[str, Any], cmd: str) -> str:
    """The person-readable table of one result."""
    lines = [
        f"# {payload['name']}",
        "",
        f"**Claim** ({payload['source']}): {payload['claim']}",
        "",
        f"**Result: {_holds_word(payload['holds'])}.** {payload['verdict']}",
        "",
        "| method | metric | mean | sd | values |",
        "|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        values = ", ".join(_fmt(v) for v in row["values"])
        mean = _fmt(row["mean"]) if "median" not in row else f"{_fmt(row['mean'])} (median {_fmt(row['median'])})"
        lines.append(f"| {row['method']} | {row['metric']} | {mean} | {_fmt(row['sd'])} | {values} |")
    if payload.get("comparisons"):
        lines += [
            "",
            "Paired by seed, 95% intervals (a ratio's interval is of the geometric mean):",
            "",
            "| method | baseline | metric | difference | 95% interval | seeds (or bootstrap) | verdict | claim |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in payload["comparisons"]:
            unit = "×" if c.get("scale") == "ratio" else ""
            lo, hi = c["ci95"]
            claim = "–"
            if "claim_range" in c:
                low, high = c["claim_range"]
                bounds = " and ".join(
                    x
                    for x in (
                        f"> {_fmt(low)}{unit}" if low is not None else "",
                        f"< {_fmt(high)}{unit}" if high is not None else "",
                    )
                    if x
                )
                claim = f"{bounds}: {'holds' if c['passes'] else 'does not hold'}"
            lines.append(
                f"| {c['method']} | {c['baseline']} | {c['metric']} | {_fmt(c['diff_mean'])}{unit} | "
                f"[{_fmt(lo)}, {_fmt(hi)}]{unit} | {c.get('interval', c['n_seeds'])} | {c['verdict']} | {claim} |"
            )
    lines += ["", "Setting: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in payload["setting"].items())]
    lines += [f"- {note}" for note in payload.get("notes", [])]
    lines += [f"![{p}]({p})" for p in payload.get("plots", [])]
    lines += [
        "",
        f"{payload['seeds']} seeds, {'quick' if payload['quick'] else 'full'} size, {payload['elapsed_s']} s, "
        f"commit {payload['commit']}, {payload['machine']}.",
        "",
        f"Reproduce: `{cmd}`",
        "",
    ]
    return "\n".join(lines)


def write_report(directory: str | Path) -> Path:
    """Merge every ``*.json`` result in ``directory`` into ``report.md``: one row per claim."""
    directory = Path(directory)
    results = []
    for path in sorted(directory.glob("*.json")):
        payload = read_json(path)
        if isinstance(payload, dict) and {"name", "claim", "holds", "verdict"} <= set(payload):
            results.append(payload)
    if not results:
        raise FileNotFoundError(f"bench report: no benchmark results (*.json) in {directory}")
    lines = [
        "# mixflow benchmark report",
        "",
        "| benchmark | claim | result | verdict | files |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        files = [f"[table]({r['name']}.md)"] + [f"[{p}]({p})" for p in r.get("plots", [])]
        lines.append(f"| {r['name']} | {r['claim']} | {_holds_word(r['holds'])} | {r['verdict']} | {' '.join(files)} |")
    commits = sorted({r.get("commit", "unknown") for r in results})
    machines = sorted({r.get("machine", "unknown") for r in results})
    sizes = sorted({"quick" if r.get("quick") else "full" for r in results})
    lines += ["", f"Commit {', '.join(commits)}; {'; '.join(machines)}; {', '.join(sizes)} size.", ""]
    path = directory / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
