"""``mixflow export``: the weights a run learned, read back from its folder, as a mixture to hand to
another trainer (:mod:`mixflow.recipes.export_formats` writes them).

What is exported are the weights the run's algorithm learns, its weights log's ``domain_weights``: p
for sampling rules (static, ODM, PiKE, a schedule, ...), w for loss-weight rules (DoReMi's α, FGLS,
ERMA), the weights a larger run then samples by. Which weights:

- the **final** ones (default): the last the run decided (its results' ``final_sampling_weights``
  for a sampling rule), those a continued run would go on with;
- ``step``: the latest decided at step N or before (a weights-log line's ``step``);
- ``average``: DoReMi's ᾱ (the mean of α over its updates, from its summary) where the run has it,
  else the mean over the run's steps of the weights in force at each step;
- a run of the ``schedule`` algorithm, without ``step`` or ``average``: one mixture per **stage**,
  each the mean over its steps of the weights in force (a stage that moved p, linearly or by an
  algorithm, says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.engine.records import find_weights_log
from mixflow.errors import DataError
from mixflow.recipes.run_record import read_domains
from mixflow.utils.jsonlog import read_json, read_jsonl


@dataclass(frozen=True)
class Stage:
    """One stage of a scheduled run, as it ran."""

    first_step: int
    last_step: int
    weights: dict[str, float]
    """The mean over the stage's steps of the weights in force."""
    moved: bool
    """Whether the weights changed within the stage (a linear move, an algorithm)."""
    what: str
    """``proportions``, ``learned`` or the algorithm that ran the stage."""


@dataclass(frozen=True)
class RunWeights:
    """Weights taken out of a run folder, with where they came from."""

    algorithm: str
    weights: dict[str, float]
    origin: str
    """One line saying which weights these are (final, a step, an average) and of what run."""
    stages: list[Stage] = field(default_factory=list)
    """A schedule's stages (empty for any other run, or when a step or the average was asked for)."""
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each domain's record in ``mixflow_domains.json`` (its paths and format); empty for a run
    without that file."""


@dataclass(frozen=True)
class History:
    """A run's weights log, read back."""

    algorithm: str
    names: list[str]
    decided: list[tuple[int, np.ndarray]]
    """(step the weights were decided at, weights) in log order; step 0: the initial weights."""
    changes: list[tuple[int, np.ndarray]]
    """(first step the weights apply to, weights), by that step; the initial weights from step 1."""
    last: int
    """The run's last step (its results', else its last logged step)."""
    finished: bool
    domains: dict[str, dict[str, Any]]
    """The recorded domains by name (``mixflow_domains.json``); empty without that file."""


def read_history(run_dir: Path) -> History:
    """The weights log of the run in ``run_dir`` with its initial weights (``mixflow_domains.json``;
    a run without that file takes its first logged weights as the initial ones)."""
    log = find_weights_log(run_dir)
    lines = list(read_jsonl(log))
    if not lines:
        raise DataError(f"{log}: no weights logged yet; nothing to export")
    names = list(lines[-1]["domain_names"])
    decided = [(int(r["step"]), np.asarray(r["domain_weights"], float)) for r in lines]
    changes = sorted(((int(r.get("from_step", r["step"])), w) for r, (_, w) in zip(lines, decided)), key=lambda c: c[0])
    recorded = read_domains(run_dir)
    initial = np.asarray(recorded["initial_weights"], float) if recorded is not None else changes[0][1]
    results = run_dir / "mixflow_results.json"
    finished = results.is_file()
    last = int(read_json(results, "a mixflow results file")["steps"]) if finished else max(s for s, _ in decided)
    domains = {d["name"]: d for d in recorded["domains"]} if recorded is not None else {}
    algorithm = log.name[: -len("_weights.jsonl")]
    return History(algorithm, names, [(0, initial), *decided], [(1, initial), *changes], last, finished, domains)


def mean_weights(changes: list[tuple[int, np.ndarray]], first: int, last: int) -> tuple[np.ndarray, bool]:
    """(mean over steps first..last of the weights in force at each step, whether they changed there).

    ``changes`` starts with the run's initial weights at step 1 (``mixflow_domains.json``); for a run
    without that file, the first logged line's weights stand for the steps before it."""
    bounds = [c[0] for c in changes[1:]] + [last + 1]
    # (weights, the steps of first..last they were in force)
    held = [(w, min(last, end - 1) - max(first, start) + 1) for (start, w), end in zip(changes, bounds)]
    held = [(w, n) for w, n in held if n > 0]
    moved = any(not np.array_equal(w, held[0][0]) for w, _ in held[1:])
    if not moved:  # returned as logged, not as a sum divided back (no rounding)
        return held[0][0].copy(), False
    return np.sum([w * n for w, n in held], axis=0) / (last - first + 1), True


def run_weights(run_dir: str | Path, step: int | None = None, average: bool = False) -> RunWeights:
    """The final weights of the run in ``run_dir`` (the last it decided), those decided by ``step``,
    or the average over the run."""
    folder = Path(run_dir)
    h = read_history(folder)
    if step is not None:
        if not 1 <= step <= h.last:
            raise DataError(f"--step: expected a step from 1 to {h.last} (the run's last step), got {step}")
        at = max(s for s, _ in h.decided if s <= step)
        origin = (
            f"{h.algorithm} weights decided by step {step} (logged at step {at})"
            if at
            else f"{h.algorithm} initial weights"
        )
        return RunWeights(h.algorithm, _named(h, decided_by(h.decided, step)), origin, domains=h.domains)
    if average:
        summary = folder / f"{h.algorithm}_summary.json"
        own = read_json(summary, "a summary file").get("average") if summary.is_file() else None
        if own is not None:  # DoReMi's ᾱ: the mean of α over its updates (Xie et al. 2023, Algorithm 1)
            weights = _named(h, np.asarray(own, float))
            return RunWeights(h.algorithm, weights, f"{h.algorithm}'s average weights (ᾱ)", domains=h.domains)
        mean, _ = mean_weights(h.changes, 1, h.last)
        origin = f"{h.algorithm} weights averaged over steps 1–{h.last}"
        return RunWeights(h.algorithm, _named(h, mean), origin, domains=h.domains)
    state = "finished" if h.finished else "not finished (no mixflow_results.json): its last logged step"
    origin = f"{h.algorithm} final weights (step {h.last}; the run is {state})"
    return RunWeights(h.algorithm, _named(h, decided_by(h.decided, h.last)), origin, _stages(folder, h), h.domains)


def decided_by(decided: list[tuple[int, np.ndarray]], step: int) -> np.ndarray:
    """The latest weights decided at ``step`` or before (the initial ones before any)."""
    return [w for s, w in decided if s <= step][-1]


def _named(h: History, weights: np.ndarray) -> dict[str, float]:
    return dict(zip(h.names, map(float, weights)))


def _stages(folder: Path, h: History) -> list[Stage]:
    """A schedule's stages from its summary (empty for any other algorithm): each stage's mean over
    its steps of the weights in force."""
    summary = folder / f"{h.algorithm}_summary.json"
    if h.algorithm != "schedule" or not summary.is_file():
        return []
    stages = read_json(summary, "a schedule summary")["stages"]
    out = []
    for i, stage in enumerate(stages):
        first = int(stage["from_step"])
        end = min(int(stages[i + 1]["from_step"]) - 1 if i + 1 < len(stages) else h.last, h.last)
        if first > h.last:
            break  # a stage the run never reached
        mean, moved = mean_weights(h.changes, first, end)
        what = stage.get("algorithm") or ("learned" if stage.get("learned") else "proportions")
        out.append(Stage(first, end, _named(h, mean), moved, what))
    return out
