"""``mixflow search fit``: a regression from mixture to target, how well it ranks runs it never saw
(k-fold cross-validated Spearman ρ, Pearson r, mean absolute error), and its predictions on another
table of runs.

RegMix (Liu et al. 2024, arXiv 2407.01492) judges a regression by the rank correlation of its
predictions with losses it was not fitted on, because a search only needs the ranking of mixtures.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.config.errors import ConfigError
from mixflow.search.regression import MixtureRegression, build_model
from mixflow.search.tables import SwarmTable, load_table
from mixflow.search.target import Target, describe, parse_target, target_values
from mixflow.utils.jsonlog import write_json_atomic


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (what Spearman's ρ needs)."""
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / denom) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(ranks(a), ranks(b))


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "spearman": spearman(truth, predicted),
        "pearson": pearson(truth, predicted),
        "mae": float(np.mean(np.abs(truth - predicted))),
    }


def cross_validate(model: str, x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Every run predicted by a model fitted on the other folds; the scores of those predictions."""
    if folds < 2:
        raise ConfigError(f"--folds: expected an integer >= 2, got {folds}")
    if len(y) < 2 * folds:
        raise ConfigError(
            f"search fit: {len(y)} runs are too few for {folds}-fold cross-validation "
            f"(at least {2 * folds}); add runs or lower --folds"
        )
    order = np.random.default_rng(seed).permutation(len(y))
    predicted = np.empty(len(y))
    for part in np.array_split(order, folds):
        train = np.setdiff1d(order, part)
        predicted[part] = build_model(model, seed).fit(x[train], y[train]).predict(x[part])
    return scores(y, predicted)


@dataclass
class Fit:
    """A fitted regression and what it was fitted on (``fit.json`` holds all but the model)."""

    table: str
    metrics: str | None
    target: str
    model: str
    seed: int
    domains: list[str]
    runs: int
    cv: dict[str, float]
    folds: int
    prediction: dict[str, Any] = field(default_factory=dict)
    regression: MixtureRegression | None = None
    data: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    """The (mixtures, targets) it was fitted on: a proposal's bootstrap refits on them."""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("regression", "data")}


def training_data(
    table: str | Path, metrics: str | Path | None, expr: str
) -> tuple[SwarmTable, Target, np.ndarray, np.ndarray]:
    """The table, the parsed target, and (x, y) over the runs that have the target."""
    loaded = load_table(table, metrics, metric_columns=_named_columns(expr))
    target = parse_target(expr, list(loaded.metrics))
    y, ok = target_values(target, loaded.metrics, loaded.source)
    return loaded, target, loaded.mixtures[ok], y[ok]


def _named_columns(expr: str) -> list[str]:
    """Names in a target expression that may be plain columns of a one-file table (no metric/ prefix)."""
    text = expr.strip()
    if text.startswith("mean(") and text.endswith(")"):
        return [n.strip() for n in text[5:-1].split(",")]
    return [term.strip().rpartition("*")[2].strip() for term in text.split("+")] + [text]


def fit_table(
    table: str | Path,
    expr: str,
    metrics: str | Path | None = None,
    model: str = "loglinear",
    folds: int = 5,
    seed: int = 0,
    cv: dict[str, float] | None = None,
) -> Fit:
    """Fit ``model`` on every run of the table and cross-validate it (``cv``: the scores of an earlier
    cross-validation of the same fit, which is then not run again)."""
    loaded, target, x, y = training_data(table, metrics, expr)
    scores_cv = cv if cv is not None else cross_validate(model, x, y, folds, seed)
    regression = build_model(model, seed).fit(x, y)
    # absolute paths: ``propose`` refits from fit.json, from wherever it is run
    return Fit(
        str(Path(table).resolve()),
        None if metrics is None else str(Path(metrics).resolve()),
        target.expr,
        model,
        seed,
        loaded.domains,
        len(y),
        scores_cv,
        folds,
        {"target columns": describe(target)},
        regression,
        (x, y),
    )


def predict_table(
    fit: Fit, other: str | Path, other_metrics: str | Path | None = None
) -> tuple[str, list[str], np.ndarray, dict[str, float]]:
    """Predictions for another table's runs (its key column, [key], predicted, and its scores where it
    has the target's columns). Its domains must be the fitted ones (any column order)."""
    assert fit.regression is not None
    loaded = load_table(other, other_metrics, metric_columns=_named_columns(fit.target))
    missing = [d for d in fit.domains if d not in loaded.domains]
    extra = [d for d in loaded.domains if d not in fit.domains]
    if missing or extra:
        raise ConfigError(
            f"{loaded.source}: its domain columns differ from the fitted table's "
            f"(missing {missing or 'none'}, extra {extra or 'none'})"
        )
    x = loaded.mixtures[:, [loaded.domains.index(d) for d in fit.domains]]
    predicted = fit.regression.predict(x)
    found: dict[str, float] = {}
    try:
        target = parse_target(fit.target, list(loaded.metrics))
    except ConfigError:
        return loaded.key, loaded.keys, predicted, found  # a table of mixtures to score, without losses
    if describe(target) != fit.prediction.get("target columns", describe(target)):
        raise ConfigError(
            f"{loaded.source}: the target {fit.target!r} matches other columns here ({describe(target)}) "
            f"than in the fitted table ({fit.prediction['target columns']})"
        )
    y, ok = target_values(target, loaded.metrics, loaded.source)
    found = {**scores(y[ok], predicted[ok]), "runs": int(ok.sum())}
    return loaded.key, loaded.keys, predicted, found


def write_fit(fit: Fit, out: str | Path, predictions: tuple[str, list[str], np.ndarray] | None = None) -> Path:
    """``out/fit.json`` (and ``out/predictions.csv`` with the other table's key column and ``predicted``)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if predictions is not None:
        key, keys, values = predictions
        tmp = folder / "predictions.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([key, "predicted"])
            writer.writerows([k, f"{v:.6g}"] for k, v in zip(keys, values))
        tmp.replace(folder / "predictions.csv")
    write_json_atomic(folder / "fit.json", fit.as_dict())
    return folder / "fit.json"


def load_fit(folder: str | Path) -> Fit:
    """The fit recorded in ``folder/fit.json``, refitted (deterministic for its seed) from its table;
    its recorded cross-validation is kept, not recomputed."""
    path = Path(folder) / "fit.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a search fit ({err}); run mixflow search fit first") from None
    fit = fit_table(
        record["table"],
        record["target"],
        record.get("metrics"),
        record["model"],
        record["folds"],
        record["seed"],
        cv=record["cv"],
    )
    fit.prediction = record.get("prediction", {})
    return fit
