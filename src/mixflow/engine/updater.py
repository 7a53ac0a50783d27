"""Weight changes on their way from an algorithm to the run (docs/design.md, "One training step").

An update passes the guards: statistics that are not finite skip it; weights that are not finite
and non-negative (or a p that sums to 0) are rejected and the algorithm's whole state is restored.
Then every change — an update's, one ``observe`` returned, or a p planned ahead — takes one road
(:class:`WeightsRoute`): p to the sampler from the batch it applies to, a line to the weights log,
the algorithm's summary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.records import WeightsLog


def valid_weights(p: np.ndarray, w: np.ndarray) -> bool:
    """Whether p can be sampled from and w weighted with: finite, non-negative, p with a positive sum."""
    return bool(np.all(np.isfinite(p)) and np.all(p >= 0) and p.sum() > 0 and np.all(np.isfinite(w)) and np.all(w >= 0))


def guarded_update(algorithm: DomainAlgorithm, window: DomainStats, step: int) -> Weights | str:
    """Run ``algorithm``'s update on ``window``: the weights it returned, applied; or why it was
    skipped (the algorithm then holds exactly the state it had before)."""
    present = window.present
    values = [window.token_loss_sum[present], *(v[present] for v in window.extras.values())]
    if not all(bool(torch.isfinite(v).all()) for v in values):
        return f"step {step}: non-finite loss statistics; skipping the {algorithm.name} update"
    before = algorithm.state_dict()
    weights = algorithm.apply_update(window, step)
    if not valid_weights(algorithm.sampling_weights, algorithm.loss_weights):
        algorithm.load_state_dict(before)
        return f"step {step}: {algorithm.name} produced invalid weights; keeping the previous ones"
    return weights


class WeightsRoute:
    """Where the weights an algorithm took go, and the p it plans for the steps ahead.

    Weights taken at the end of step s are drawn with from step s + ``lead`` (1 + the plan horizon:
    the batches read ahead are drawn already); a p planned for step t is drawn with from exactly t.
    """

    def __init__(
        self,
        algorithm: DomainAlgorithm,
        sampler: MixtureSampler,
        log: WeightsLog,
        plan_horizon: int | None,
        max_steps: int | None,
    ) -> None:
        self.algorithm, self.sampler, self.log = algorithm, sampler, log
        self.plan_horizon, self.max_steps = plan_horizon, max_steps
        self.lead = 1 + (plan_horizon or 0)
        self.planned_until = 0
        #: lines of the p planned before the first step; written by the first step of a fresh run
        #: (a resumed run's log has them already)
        self._unlogged: list[dict[str, Any]] | None = []

    def commit(self, step: int, sampling: bool, from_step: int | None = None) -> None:
        """Weights the algorithm took at the end of step ``step`` (0: before training): p to the
        sampler (``sampling``), a weights-log line saying from which step p is drawn (``from_step``
        for a planned p, else ``step + lead``) and the summary."""
        if sampling:
            self.sampler.set_weights(
                self.algorithm.sampling_weights, None if self.plan_horizon is None else step + self.plan_horizon
            )
        record = self.log.record(step, from_step if from_step is not None else step + self.lead)
        if self._unlogged is not None:
            self._unlogged.append(record)
        else:
            self.log.write(record)
        self.log.write_summary(step)

    def plan_ahead(self, step: int) -> None:
        """After step ``step``: the algorithm's planned p of every step up to ``step + lead`` (the
        batches that may be drawn before the next step ends), each from exactly its step."""
        last = step + self.lead if self.max_steps is None else min(step + self.lead, self.max_steps)
        for t in range(self.planned_until + 1, last + 1):
            before = self.sampler.weights
            p = self.algorithm.take_planned(t)
            if p is not None:
                self.sampler.set_weights(p, t - 1)
                if not np.array_equal(before, self.sampler.weights):  # a line only when p changes
                    self.commit(step, False, from_step=t)
        self.planned_until = max(self.planned_until, last)

    def started(self) -> None:
        """A step ended: the lines planned before it are written (once)."""
        for record in self._unlogged or ():
            self.log.write(record)
        self._unlogged = None

    def restored(self, last_step: int) -> None:
        """The engine resumed after ``last_step``: what was planned up to ``last_step + lead`` is in the
        sampler's restored state and in the log already."""
        self.planned_until, self._unlogged = last_step + self.lead, None
