"""What the step engine reports: the weights-log line and the Trainer metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.statistics import DomainStats


def weights_log_record(step: int, domain_names: Sequence[str], algorithm: DomainAlgorithm) -> dict[str, Any]:
    """The weights-log line: the seed's DoReMi format plus sampling and loss weights."""
    return {
        "step": step,
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
        "domain_names": list(domain_names),
        "domain_weights": algorithm.domain_weights.tolist(),
        "perdomain_scores": algorithm.scores.tolist(),
        "sampling_weights": algorithm.sampling_weights.tolist(),
        "loss_weights": algorithm.loss_weights.tolist(),
    }


def step_metrics(domain_names: Sequence[str], stats: DomainStats, algorithm: DomainAlgorithm) -> dict[str, float]:
    """``mix/loss/<domain>`` (token-mean training loss of ``stats``), ``mix/weight/<domain>`` (p) and,
    when w is not all ones, ``mix/loss_weight/<domain>``."""
    out: dict[str, float] = {}
    for name, loss in zip(domain_names, stats.mean_token_loss.tolist()):
        if not math.isnan(loss):
            out[f"mix/loss/{name}"] = float(loss)
    for name, p in zip(domain_names, algorithm.sampling_weights.tolist()):
        out[f"mix/weight/{name}"] = float(p)
    w = algorithm.loss_weights
    if not np.all(w == 1):
        for name, value in zip(domain_names, w.tolist()):
            out[f"mix/loss_weight/{name}"] = float(value)
    return out
