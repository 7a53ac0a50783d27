"""``mixflow search collect``: every finished proxy's final per-domain validation losses in one table
(``runs.csv``: ``run``, the mixture's domain columns, ``metric/<domain>``: the evaluation after the
last step, from ``mixflow_results.json``), the input of ``search fit``."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from mixflow.config.errors import ConfigError
from mixflow.search.plan import read_plan

logger = logging.getLogger(__name__)


def run_output(folder: Path, name: str) -> Path:
    """The output folder a planned run's config names."""
    config = yaml.safe_load((folder / "runs" / f"{name}.yaml").read_text(encoding="utf-8"))
    return Path(config["output_dir"])


def results(out: Path) -> dict[str, Any] | None:
    """A run's ``mixflow_results.json`` (written last, atomically), or None while it has none."""
    try:
        return dict(json.loads((out / "mixflow_results.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def finished(out: Path) -> bool:
    """Whether a run ended, well or stopped (a diverged run writes its results with ``stopped``)."""
    return results(out) is not None


def stopped(out: Path) -> str | None:
    """Why a run stopped early (it diverged), or None."""
    found = results(out)
    return None if found is None else found.get("stopped")


def planned_runs(folder: Path) -> list[dict[str, str]]:
    read_plan(folder)  # a clear error when this is not a plan
    with open(folder / "plan.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def collect(folder: str | Path) -> Path:
    """Write ``folder/runs.csv`` from the finished runs (the final evaluation of each domain); the
    unfinished ones are named in one warning and left out."""
    root = Path(folder)
    plan = read_plan(root)
    domains = list(plan["domains"])  # the metrics: every domain of the config
    columns = list(plan.get("columns", domains))  # the mixture: what the swarm varied (reuse: fewer)
    rows: list[list[Any]] = []
    missing: list[str] = []
    broken: list[str] = []
    for entry in planned_runs(root):
        out = run_output(root, entry["run"])
        found = results(out)
        if found is None or found.get("stopped"):
            (missing if found is None else broken).append(entry["run"])
            continue
        val = found.get("val_loss") or {}  # the evaluation after the last step (mixflow train writes it)
        if not val:
            raise ConfigError(f"{out}/mixflow_results.json: no validation loss; the proxies need val_size > 0")
        rows.append(
            [entry["run"], *(entry[c] for c in columns), *(f"{val[d]:.6g}" if d in val else "" for d in domains)]
        )
    for names, why in (
        (missing, "have not finished"),
        (broken, "stopped early (diverged; see their mixflow_results.json)"),
    ):
        if names:
            logger.warning(
                "search collect: %d runs %s and are left out (%s%s)",
                len(names),
                why,
                ", ".join(names[:8]),
                ", ..." if len(names) > 8 else "",
            )
    if not rows:
        raise ConfigError(f"{root}: no finished run to collect; run them first (mixflow search run {root})")
    tmp = root / "runs.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *columns, *(f"metric/{d}" for d in domains)])
        writer.writerows(rows)
    tmp.replace(root / "runs.csv")
    logger.info("search collect: %d runs in %s", len(rows), root / "runs.csv")
    return root / "runs.csv"
