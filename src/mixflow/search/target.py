"""The quantity a search minimises, from a table's metric columns (``--target``).

Three forms: a column (``metric/the_pile_pile_cc_val_loss``); the mean of columns, each a name or a
glob (``mean(metric/*)``, ``mean(a, b)``); a weighted sum (``0.7*a + 0.3*b``; a term without a
weight counts once). Lower is better.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass

import numpy as np

from mixflow.config.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A weighted sum of metric columns."""

    expr: str
    weights: tuple[tuple[str, float], ...]

    @property
    def columns(self) -> list[str]:
        return [c for c, _ in self.weights]


def parse_target(expr: str, columns: list[str]) -> Target:
    """``expr`` against the table's ``columns``; a name or glob that matches none is an error naming
    the columns there are."""
    text = expr.strip()
    if not text:
        raise ConfigError("--target: empty; expected a column, mean(col, ...) or a weighted sum like 0.5*a + 0.5*b")
    if text in columns:
        return Target(expr, ((text, 1.0),))
    if text.startswith("mean(") and text.endswith(")"):
        names = [n.strip() for n in text[5:-1].split(",") if n.strip()]
        if not names:
            raise ConfigError(f"--target: {expr!r} averages no column; expected mean(col, ...)")
        matched = [c for n in names for c in _match(n, columns, expr)]
        unique = list(dict.fromkeys(matched))
        return Target(expr, tuple((c, 1.0 / len(unique)) for c in unique))
    weights: dict[str, float] = {}
    for term in text.split("+"):
        weight, _, name = term.strip().rpartition("*")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ConfigError(f"--target: {term.strip()!r} in {expr!r}: expected WEIGHT*COLUMN or COLUMN") from None
        for c in _match(name.strip(), columns, expr):
            weights[c] = weights.get(c, 0.0) + w
    return Target(expr, tuple(weights.items()))


def _match(name: str, columns: list[str], expr: str) -> list[str]:
    found = (
        [c for c in columns if fnmatch.fnmatchcase(c, name)]
        if any(ch in name for ch in "*?[")
        else ([name] if name in columns else [])
    )
    if not found:
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise ConfigError(f"--target: {name!r} in {expr!r} matches no metric column (columns: {shown or 'none'})")
    return found


def target_values(target: Target, metrics: dict[str, np.ndarray], source: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(values, rows that have them): a run missing a column of the target is left out, with one
    warning that counts them (never a NaN in a fit)."""
    n = len(next(iter(metrics.values()))) if metrics else 0
    total = np.zeros(n)
    for column, weight in target.weights:
        total = total + weight * metrics[column]
    ok = np.isfinite(total)
    if not ok.all():
        logger.warning(
            "%s: %d of %d runs lack a value of the target %s and are left out",
            source or "table",
            int((~ok).sum()),
            n,
            target.expr,
        )
    return total, ok


def describe(target: Target) -> str:
    """One line: the columns and their weights."""
    return " + ".join(f"{w:g}·{c}" if not math.isclose(w, 1.0) else c for c, w in target.weights)
