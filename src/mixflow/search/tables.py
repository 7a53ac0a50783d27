"""Swarm tables: one row per proxy run, the mixture it trained on and what it measured.

A table is a CSV with a key column (``run`` or ``index``), one column per domain holding the run's
mixture weight, and metric columns. The metrics can sit in the same file or in a second one joined
on the key, so the released tables of RegMix (Liu et al. 2024, arXiv 2407.01492:
``train_mixture_1m.csv`` + ``train_pile_loss_1m.csv``, joined on ``index``) and of Olmix (Chen et al.
2026, arXiv 2602.12237: ``ratios.csv`` + ``metrics.csv``, joined on ``run``) load unchanged.

Which columns are domains: with two files, every column of the mixture file that is not an
identifier (``run``, ``run_id``, ``index``, ``name``, ``Unnamed: …``); with one file, the same minus
the metric columns — those named ``metric/…`` (what ``mixflow search collect`` writes) and those the
target names. Every problem is reported at once, one line each, naming the file, the line and the
column.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixflow.config.errors import ConfigErrors

logger = logging.getLogger(__name__)

#: Columns that name a run rather than measure it (Olmix writes run, name and index).
IDENTIFIERS = ("run", "run_id", "index", "name")
#: Key columns, in the order they are tried for a join.
KEYS = ("run", "run_id", "index")
#: A metric column in a one-file table (``mixflow search collect`` writes ``metric/<domain>``).
METRIC_PREFIX = "metric/"
#: How far a mixture row may sum from 1 (RegMix's rounded rows sum to 0.996–1.003); rows are renormalised.
SUM_TOLERANCE = 0.01


@dataclass
class SwarmTable:
    """The runs of a swarm: mixtures [n, K] (rows sum to 1) and metrics per column."""

    key: str
    """The key column (``run``, ``run_id`` or ``index``)."""
    keys: list[str]
    domains: list[str]
    mixtures: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    """The file(s) it came from, for messages."""

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, rows: Iterable[int]) -> SwarmTable:
        idx = np.asarray(list(rows), dtype=int)
        return SwarmTable(
            self.key,
            [self.keys[i] for i in idx],
            list(self.domains),
            self.mixtures[idx],
            {k: v[idx] for k, v in self.metrics.items()},
            self.source,
        )


def _is_identifier(column: str) -> bool:
    return column in IDENTIFIERS or column.startswith("Unnamed") or column == ""


def read_csv(path: Path, errors: list[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]); a missing file, an empty one or a ragged row is an error."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        errors.append(f"{path}: cannot read it ({err.strerror or err})")
        return [], []
    reader = csv.reader(io.StringIO(text, newline=""))  # CRLF files (RegMix's 1B table) read like LF ones
    header = [c.strip() for c in next(reader, [])]
    if not header:
        errors.append(f"{path}: empty file, expected a CSV header line")
        return [], []
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        errors.append(f"{path}: line 1: column(s) {', '.join(dupes)} appear more than once")
    rows = []
    for line, values in enumerate(reader, start=2):
        if not values or all(not v.strip() for v in values):
            continue
        if len(values) != len(header):
            errors.append(f"{path}: line {line}: {len(values)} fields, the header has {len(header)}")
            continue
        rows.append((line, {c: v.strip() for c, v in zip(header, values)}))
    if not rows and header:
        errors.append(f"{path}: no data rows")
    return header, rows


def _number(path: Path, line: int, column: str, text: str, errors: list[str]) -> float:
    try:
        value = float(text)
    except ValueError:
        errors.append(f"{path}: line {line}: column {column!r}: expected a number, got {text!r}")
        return math.nan
    if not math.isfinite(value):
        errors.append(f"{path}: line {line}: column {column!r}: expected a finite number, got {text!r}")
    return value


def _key_column(headers: list[list[str]], paths: list[Path], errors: list[str]) -> str:
    for key in KEYS:
        if all(key in h for h in headers):
            return key
    if len(paths) == 1:
        return ""  # one file without a key: rows are numbered
    errors.append(
        f"{', '.join(map(str, paths))}: no key column common to both files (expected one of {', '.join(KEYS)})"
    )
    return ""


def load_table(table: str | Path, metrics: str | Path | None = None, metric_columns: Iterable[str] = ()) -> SwarmTable:
    """The swarm in ``table`` (and ``metrics``, joined on the key). ``metric_columns``: columns of a
    one-file table that are metrics although not named ``metric/…`` (the target's)."""
    errors: list[str] = []
    paths = [Path(table)] + ([Path(metrics)] if metrics is not None else [])
    read = [read_csv(p, errors) for p in paths]
    if any(not header for header, _ in read):  # a file that cannot be read: nothing more to check
        raise ConfigErrors(errors)
    key = _key_column([h for h, _ in read], paths, errors)
    header, rows = read[0]
    patterns = list(metric_columns)  # names or globs (a target's mean(loss_*)) of a one-file table's metrics
    named = {c for c in header if any(fnmatch.fnmatchcase(c, p) for p in patterns)}
    if metrics is None:
        domains = [c for c in header if not _is_identifier(c) and not c.startswith(METRIC_PREFIX) and c not in named]
        metric_names = [c for c in header if c.startswith(METRIC_PREFIX) or c in named]
    else:
        domains = [c for c in header if not _is_identifier(c)]
        metric_names = [c for c in read[1][0] if not _is_identifier(c)]
    if len(domains) < 2:
        errors.append(f"{paths[0]}: expected at least 2 domain columns (mixture weights), found {domains or 'none'}")
    keys = [r[key] if key else str(i) for i, (_, r) in enumerate(rows)]
    mixtures = _mixtures(paths[0], rows, domains, errors)
    values = _metrics(paths, read, key, keys, metric_names, errors)
    for path, (_, file_rows) in zip(paths, read):
        _check_keys(path, file_rows, key, errors)
    if errors:
        raise ConfigErrors(errors)
    # a run with no value for a metric (not finished, not measured) holds NaN there; whoever needs
    # that metric leaves the run out and says so (:func:`mixflow.search.target.target_values`)
    return SwarmTable(
        key or "row",
        keys,
        domains,
        mixtures,
        {m: np.array([v.get(k, math.nan) for k in keys]) for m, v in values.items()},
        " + ".join(map(str, paths)),
    )


def _mixtures(path: Path, rows: list[tuple[int, dict[str, str]]], domains: list[str], errors: list[str]) -> np.ndarray:
    out = np.zeros((len(rows), len(domains)))
    for i, (line, row) in enumerate(rows):
        w = np.array([_number(path, line, d, row[d], errors) for d in domains])
        if np.any(w < 0):
            errors.append(f"{path}: line {line}: negative mixture weight in {[d for d, x in zip(domains, w) if x < 0]}")
        total = float(np.sum(w))
        if math.isfinite(total) and abs(total - 1.0) > SUM_TOLERANCE:
            errors.append(
                f"{path}: line {line}: the mixture weights sum to {total:.4g}, expected 1 (± {SUM_TOLERANCE})"
            )
        out[i] = w / total if total > 0 else w
    return out


def _metrics(
    paths: list[Path],
    read: list[tuple[list[str], list[tuple[int, dict[str, str]]]]],
    key: str,
    keys: list[str],
    names: list[str],
    errors: list[str],
) -> dict[str, dict[str, float]]:
    path, (_, rows) = (paths[-1], read[-1])
    values: dict[str, dict[str, float]] = {m: {} for m in names}
    known = set(keys)
    strays = [row[key] for _, row in rows if key and row[key] not in known]
    if strays and len(paths) > 1:
        logger.warning(
            "%s: %d rows name a %s that %s does not have; they are left out (%s%s)",
            path,
            len(strays),
            key,
            paths[0],
            ", ".join(strays[:5]),
            ", ..." if len(strays) > 5 else "",
        )
    for i, (line, row) in enumerate(rows):
        k = row[key] if key else keys[i]
        for m in names:
            if row[m] != "":  # a run that did not measure this metric: left out where it is needed
                values[m][k] = _number(path, line, m, row[m], errors)
    return values


def _check_keys(path: Path, rows: list[tuple[int, dict[str, str]]], key: str, errors: list[str]) -> None:
    if not key:
        return
    seen: dict[str, int] = {}
    for line, row in rows:
        if row[key] in seen:
            errors.append(f"{path}: line {line}: {key} {row[key]!r} already on line {seen[row[key]]}")
        seen.setdefault(row[key], line)
