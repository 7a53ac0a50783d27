"""An algorithm's update through the guards every weight change passes (docs/design.md, "One
training step"): statistics that are not finite skip it; weights that are not finite and
non-negative (or a p that sums to 0) are rejected and the algorithm's whole state is restored."""

from __future__ import annotations

import numpy as np
import torch

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.statistics import DomainStats


def valid_weights(p: np.ndarray, w: np.ndarray) -> bool:
    """Whether p can be sampled from and w weighted with: finite, non-negative, p with a positive sum."""
    return bool(np.all(np.isfinite(p)) and np.all(p >= 0) and p.sum() > 0 and np.all(np.isfinite(w)) and np.all(w >= 0))


def guarded_update(algorithm: DomainAlgorithm, window: DomainStats, step: int) -> str | None:
    """Run ``algorithm``'s update on ``window``: None when its weights were applied, otherwise why it
    was skipped (the algorithm then holds exactly the state it had before)."""
    present = window.present
    values = [window.token_loss_sum[present], *(v[present] for v in window.extras.values())]
    if not all(bool(torch.isfinite(v).all()) for v in values):
        return f"step {step}: non-finite loss statistics; skipping the {algorithm.name} update"
    before = algorithm.state_dict()
    algorithm.apply_update(window, step)
    if not valid_weights(algorithm.sampling_weights, algorithm.loss_weights):
        algorithm.load_state_dict(before)
        return f"step {step}: {algorithm.name} produced invalid weights; keeping the previous ones"
    return None
