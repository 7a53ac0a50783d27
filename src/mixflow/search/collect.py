"""``mixflow search collect``: every finished proxy's final per-domain validation losses in one table
(``runs.csv``: ``run``, the mixture's domain columns, ``metric/<domain>``), the input of ``search fit``."""

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


def validation_curve(out: Path) -> dict[str, Any]:
    """{"steps": [...], "losses": {domain: [...]}} of the Trainer's periodic evaluations (validation
    split), read from ``out/trainer_state.json``; only the steps where every domain was evaluated."""
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    by_step: dict[int, dict[str, float]] = {}
    for entry in state["log_history"]:  # the Trainer logs each evaluated domain as its own key
        for key, value in entry.items():
            if key.startswith("eval_") and key.endswith("_loss") and key != "eval_loss":
                by_step.setdefault(int(entry["step"]), {})[key[len("eval_"):-len("_loss")]] = float(value)
    names = sorted({d for losses in by_step.values() for d in losses})
    steps = sorted(s for s, losses in by_step.items() if len(losses) == len(names))
    return {"steps": steps, "losses": {d: [by_step[s][d] for s in steps] for d in names}}


def run_output(folder: Path, name: str) -> Path:
    """The output folder a planned run's config names."""
    config = yaml.safe_load((folder / "runs" / f"{name}.yaml").read_text(encoding="utf-8"))
    return Path(config["output_dir"])


def finished(out: Path) -> bool:
    """Whether a run ended (``mixflow_results.json`` is written last, atomically, and only then)."""
    return (out / "mixflow_results.json").is_file()


def planned_runs(folder: Path) -> list[dict[str, str]]:
    read_plan(folder)  # a clear error when this is not a plan
    with open(folder / "plan.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def collect(folder: str | Path) -> Path:
    """Write ``folder/runs.csv`` from the finished runs (the final evaluation of each domain); the
    unfinished ones are named in one warning and left out."""
    root = Path(folder)
    plan = read_plan(root)
    domains = list(plan["domains"])
    rows, missing = [], []
    for entry in planned_runs(root):
        out = run_output(root, entry["run"])
        if not finished(out):
            missing.append(entry["run"])
            continue
        curve = validation_curve(out)
        if not curve["steps"]:
            raise ConfigError(f"{out}/trainer_state.json: no evaluation of every domain; the proxies need "
                              "val_size > 0 and an evaluation at the last step (eval_strategy: steps)")
        rows.append([entry["run"], *(entry[d] for d in domains),
                     *(f"{curve['losses'][d][-1]:.6g}" if d in curve["losses"] else "" for d in domains)])
    if missing:
        logger.warning("search collect: %d of %d runs have not finished and are left out (%s%s)", len(missing),
                       len(missing) + len(rows), ", ".join(missing[:8]), ", ..." if len(missing) > 8 else "")
    if not rows:
        raise ConfigError(f"{root}: no finished run to collect; run them first (mixflow search run {root})")
    tmp = root / "runs.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *domains, *(f"metric/{d}" for d in domains)])
        writer.writerows(rows)
    tmp.replace(root / "runs.csv")
    logger.info("search collect: %d runs in %s", len(rows), root / "runs.csv")
    return root / "runs.csv"
