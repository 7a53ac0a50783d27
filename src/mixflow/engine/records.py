"""What the step engine reports: the weights-log line and the Trainer metrics."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm, SampleWeighter
from mixflow.algorithms.statistics import DomainStats
from mixflow.engine.checkpoint import supersede_log_lines
from mixflow.engine.sample_weights import SampleWeightStats
from mixflow.errors import DataError
from mixflow.utils import distributed
from mixflow.utils.jsonlog import append_jsonl, write_json_atomic


def weights_log_record(
    step: int, domain_names: Sequence[str], algorithm: DomainAlgorithm, from_step: int | None = None
) -> dict[str, Any]:
    """The weights-log line of weights decided at the end of step ``step``: the seed's DoReMi format
    plus sampling and loss weights, and with ``from_step`` (the first step drawn with these sampling
    weights) that step and the algorithm's own fields for it (e.g. a schedule's stage)."""
    record = {
        "step": step,
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
        "domain_names": list(domain_names),
        "domain_weights": algorithm.domain_weights.tolist(),
        "perdomain_scores": algorithm.scores.tolist(),
        "sampling_weights": algorithm.sampling_weights.tolist(),
        "loss_weights": algorithm.loss_weights.tolist(),
    }
    if from_step is not None:
        record.update(from_step=from_step, **algorithm.log_fields(from_step))
    return record


class WeightsLog:
    """The run's weights log (``<log_dir>/<algorithm>[+<weighter>]_weights.jsonl``, one line per
    change of the weights) and the algorithm's summary file; only the main process writes."""

    def __init__(
        self,
        log_dir: str | Path | None,
        algorithm: DomainAlgorithm,
        weighter: SampleWeighter | None,
        sample_stats: SampleWeightStats,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.algorithm, self.weighter, self.sample_stats = algorithm, weighter, sample_stats
        self.domain_names = list(algorithm.domain_names)
        self._summary: str | None = None  # the last one written, as text (a summary may hold arrays)

    @property
    def path(self) -> Path | None:
        name = self.algorithm.name + (f"+{self.weighter.name}" if self.weighter is not None else "")
        return None if self.log_dir is None else self.log_dir / f"{name}_weights.jsonl"

    def record(self, step: int, from_step: int | None = None) -> dict[str, Any]:
        """The line for the weights now (with a weighter, what its sample weights did since the previous line)."""
        record = weights_log_record(step, self.domain_names, self.algorithm, from_step)
        if self.weighter is not None:
            record["sample_weights"] = self.sample_stats.summary(self.domain_names)
            self.sample_stats.reset()
        return record

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None and distributed.is_main_process():
            append_jsonl(self.path, record)

    def write_summary(self, step: int, force: bool = False) -> None:
        """``<log_dir>/<algorithm>_summary.json`` from ``algorithm.summary()`` (main process, atomic),
        when it differs from the one last written (a schedule moving p at every step would otherwise
        rewrite and fsync the same stages every step) or when ``force``d (after a resume)."""
        summary = self.algorithm.summary()
        if summary is None or self.log_dir is None or not distributed.is_main_process():
            return
        text = json.dumps(summary, sort_keys=True, default=str)
        if force or text != self._summary:
            write_json_atomic(self.log_dir / f"{self.algorithm.name}_summary.json", {"step": step, **summary})
            self._summary = text

    def supersede(self, step: int) -> None:
        """Lines of changes decided after ``step`` move to the superseded log (a resumed run writes them again)."""
        if self.path is not None and distributed.is_main_process():
            supersede_log_lines(self.path, step)


def step_metrics(
    domain_names: Sequence[str], stats: DomainStats, algorithm: DomainAlgorithm, sampling: np.ndarray
) -> dict[str, float]:
    """``mix/loss/<domain>`` (token-mean training loss of ``stats``), ``mix/weight/<domain>`` (p: the
    ``sampling`` weights the next step's batch is drawn with, which an algorithm that plans ahead or
    a read-ahead loader may have moved past already) and, when w is not all ones, ``mix/loss_weight/<domain>``."""
    out: dict[str, float] = {}
    for name, loss in zip(domain_names, stats.mean_token_loss.tolist()):
        if not math.isnan(loss):
            out[f"mix/loss/{name}"] = float(loss)
    for name, p in zip(domain_names, np.asarray(sampling, dtype=np.float64).tolist()):
        out[f"mix/weight/{name}"] = float(p)
    w = algorithm.loss_weights
    if not np.all(w == 1):
        for name, value in zip(domain_names, w.tolist()):
            out[f"mix/loss_weight/{name}"] = float(value)
    return out


def find_weights_log(run_dir: Path) -> Path:
    """The run's ``<algorithm>_weights.jsonl`` (exactly one is expected)."""
    logs = sorted(p for p in run_dir.glob("*_weights.jsonl") if not p.name.endswith(".superseded.jsonl"))
    if not logs:
        raise FileNotFoundError(f"run_dir: no *_weights.jsonl in {run_dir} (is it a mixflow output_dir?)")
    if len(logs) > 1:
        raise DataError(f"run_dir: several weights logs in {run_dir}: {[p.name for p in logs]}; keep one per run")
    return logs[0]
