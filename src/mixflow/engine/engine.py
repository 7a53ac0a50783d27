"""The step engine: one object that ties the sampler, the algorithms and the training step together.

Per micro-batch it turns logits into per-sample losses, records per-domain statistics and returns
the weighted loss (:mod:`mixflow.loss.objective` does the arithmetic); after each optimizer step
it all-reduces the statistics over data-parallel ranks, runs the algorithm's update when the
schedule says so, hands new sampling weights to the sampler and appends a line to the weights
log. Weights an algorithm changes between updates (``observe``) or decides ahead of the step
they apply to (``planned_sampling``, a schedule) take the same road. Integrations (Hugging Face
Trainer, a plain PyTorch loop) only call
:meth:`StepEngine.training_loss`, :meth:`StepEngine.end_step` and the state methods.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mixflow.algorithms.base import DomainAlgorithm, InvalidWeights, SampleWeighter
from mixflow.algorithms.statistics import DomainStats
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.checkpoint import STATE_VERSION, check_compatible, read_state, write_state
from mixflow.engine.epochs import DomainEpochs
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.normalization import DomainTokens, Normalization, RowTargetTokens
from mixflow.engine.records import WeightsLog, step_metrics
from mixflow.engine.sample_weights import SampleWeightStats, global_sample_weights
from mixflow.engine.schedule import UpdateSchedule
from mixflow.engine.updater import WeightsRoute, guarded_update
from mixflow.errors import ResumeError
from mixflow.loss.objective import DomainVectors, coefficients, step_loss, weighted_loss
from mixflow.loss.per_sample import SampleLosses, sample_losses
from mixflow.providers.base import BatchContext, ProviderContext, StatisticProvider, UpdateContext, build_providers
from mixflow.utils import distributed

logger = logging.getLogger(__name__)


class StepEngine:
    """Sampler + domain algorithm + optional sample weighter, wired to the loss and the logs."""

    def __init__(
        self,
        sampler: MixtureSampler,
        algorithm: DomainAlgorithm,
        weighter: SampleWeighter | None = None,
        schedule: UpdateSchedule | None = None,
        log_dir: str | Path | None = None,
        providers: Sequence[StatisticProvider] | None = None,
        provider_context: ProviderContext | None = None,
        shift_labels: bool = True,
        chunk_rows: int | None = None,
        objective_normalization: Normalization = "domain",
        row_target_tokens: RowTargetTokens | None = None,
        plan_horizon: int | None = None,
        max_steps: int | None = None,
        tokens_per_step: int | None = None,
    ) -> None:
        if sampler.num_domains != algorithm.num_domains:
            raise ValueError(
                f"domains: the sampler has {sampler.num_domains} domains but the algorithm has {algorithm.num_domains}"
            )
        self.sampler = sampler
        self.algorithm = algorithm
        self.weighter, self.plan_horizon = weighter, plan_horizon  # horizon: weights of step s apply at batch s + it
        # the sample weights since the last metrics call, and since the last weights-log line
        self._weight_stats = (
            SampleWeightStats(len(algorithm.domain_names)),
            SampleWeightStats(len(algorithm.domain_names)),
        )
        self.schedule = schedule or UpdateSchedule()
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.weights_log = WeightsLog(log_dir, algorithm, weighter, self._weight_stats[1])
        self.route = WeightsRoute(algorithm, sampler, self.weights_log, plan_horizon, max_steps)
        self.epochs = DomainEpochs(sampler, algorithm.domain_names)
        specs = algorithm.provider_specs(algorithm.params)
        context = replace(provider_context, batch_size=sampler.batch_size) if provider_context is not None else None
        self.providers = list(providers) if providers is not None else build_providers(specs, context)
        self._update_time_stats = any(
            type(p).update_statistics is not StatisticProvider.update_statistics for p in self.providers
        )
        self.shift_labels = shift_labels
        self.chunk_rows = chunk_rows
        # Importance mode: each domain's token sum over its own tokens (domain) or over all (token).
        self._domain_tokens = DomainTokens(sampler, objective_normalization, row_target_tokens)
        self.domain_names = list(algorithm.domain_names)
        k = self.num_domains = len(self.domain_names)
        self._step_stats, self._window_stats, self._metric_stats = (DomainStats.zeros(k) for _ in range(3))
        self.last_step, self.skipped_updates = 0, 0
        #: (the step's reduced statistics, whether its update applied) when it ran before the loss.
        self._updated_in_step: tuple[DomainStats, bool] | None = None
        #: Consecutive optimizer steps whose training loss was not finite (a diverging run).
        self.nonfinite_steps = 0
        self.algorithm.bind(sampler.batch_size, max_steps, tokens_per_step, self.route.lead)
        # The sampler starts from the algorithm's initial p (e.g. init_mixture_proportions), and
        # takes the planned p of the steps drawn before the first end_step.
        self.sampler.set_weights(self.algorithm.sampling_weights)
        self.route.plan_ahead(0)

    @property
    def log_path(self) -> Path | None:
        """``<log_dir>/<algorithm>_weights.jsonl``, ``<algorithm>+<weighter>_weights.jsonl`` with a weighter."""
        return self.weights_log.path

    # ---- per micro-batch ----------------------------------------------------------------
    def attach_model(self, model: Any) -> None:
        """Hand the model to the providers before the first forward (optional; a provider that hooks
        into the forward, e.g. ``grad_stats`` on a sharded output head, then sees the first batch)."""
        for provider in self.providers:
            provider.attach(model)

    def before_forward(self, batch: MicroBatch) -> None:
        """Offer a training micro-batch to the providers before its forward (optional; DoReMi's
        reference forward costs less there, with no training graph holding memory)."""
        for provider in self.providers if self.updates_remaining and torch.is_grad_enabled() else ():
            provider.before_forward(batch.inputs, batch.labels, self.shift_labels)

    def training_loss(self, logits: torch.Tensor, batch: MicroBatch) -> torch.Tensor:
        """Weighted loss of one micro-batch from its logits; records its per-domain statistics for the
        step. ``batch.labels`` is required here (the per-sample losses come from logits and labels)."""
        if batch.labels is None:
            raise ValueError("batch: expected 'labels' (mixflow computes the loss from the logits and the labels)")
        losses = sample_losses(logits, batch.labels, shift=self.shift_labels, chunk_rows=self.chunk_rows)
        return self.training_loss_from_samples(losses, batch)

    def training_loss_from_samples(self, losses: SampleLosses, batch: MicroBatch) -> torch.Tensor:
        """:meth:`training_loss` for per-sample losses computed elsewhere (a regression's squared
        residuals, a custom loss): records the statistics and returns Σ_j c_j ℓ_j / N."""
        domain_ids = batch.domain_ids.to(losses.token_loss_sum.device).long()
        index = self.last_step if batch.batch_index is None else batch.batch_index  # optimizer step index + 1
        self._record(losses, domain_ids, batch, index)
        if self._whole_step_update_due(domain_ids.numel(), index + 1):
            self._update_within_step(index + 1)
        s = self._sample_weights(losses, domain_ids, batch)
        vectors = self._vectors(losses, domain_ids, batch)
        loss, _ = step_loss(losses, domain_ids, self.algorithm.mode, vectors, s, batch.num_items_in_batch)
        return loss

    @property
    def updates_remaining(self) -> bool:
        """Whether the schedule still allows an update (``update_times`` not used up)."""
        times = self.schedule.update_times
        return times < 0 or self.algorithm.num_updates + self.skipped_updates < times

    @property
    def update_pending(self) -> bool:
        """Whether the optimizer step now in progress will end with a scheduled update."""
        return self._is_update(self.last_step + 1)

    def _is_update(self, step: int) -> bool:
        """Whether step ``step`` ends with an update: the algorithm's own calendar where it keeps one
        (``update_due``), else the run's schedule (warmup_step, update_step, update_times)."""
        own = self.algorithm.update_due(step)
        return (
            own if own is not None else self.schedule.is_update(step, self.algorithm.num_updates + self.skipped_updates)
        )

    def coefficients(self, losses: SampleLosses, batch: MicroBatch) -> torch.Tensor | None:
        """c_j = (domain part) · s_j for this rank's samples; None when all are 1."""
        domain_ids = batch.domain_ids.to(losses.token_loss_sum.device).long()
        s = self._sample_weights(losses, domain_ids, batch)
        return coefficients(
            domain_ids,
            self.algorithm.mode,
            self._vectors(losses, domain_ids, replace(batch, num_items_in_batch=None)),
            s,
        )

    def _vectors(self, losses: SampleLosses, domain_ids: torch.Tensor, batch: MicroBatch) -> DomainVectors:
        """(p, w, π) as float64 tensors on the losses' device. In importance mode p is what the
        weights q_d / p_d divide by: each domain's share of the step's target tokens under
        ``objective_normalization: domain`` (:mod:`mixflow.engine.normalization`), the plan the batch
        was drawn with under ``token`` (the sampler's current p for a batch built by hand, without an
        index)."""
        p = self.sampler.weights
        if self.algorithm.mode == "importance":
            if self._domain_tokens.normalization == "domain":
                p = self._domain_tokens.shares(
                    domain_ids, losses.token_count, batch.num_items_in_batch, batch.batch_index
                )
            elif batch.batch_index is not None:
                p = self.sampler.planned_weights(batch.batch_index)
        device = losses.token_loss_sum.device
        return DomainVectors(
            *(
                torch.as_tensor(v, dtype=torch.float64, device=device)
                for v in (p, self.algorithm.loss_weights, self.algorithm.prior)
            )
        )

    def _sample_weights(self, losses: SampleLosses, domain_ids: torch.Tensor, batch: MicroBatch) -> torch.Tensor | None:
        """s for this rank's samples (None without a weighter)."""
        if self.weighter is None:
            return None
        step = self.last_step if batch.batch_index is None else batch.batch_index
        return global_sample_weights(self.weighter, losses, domain_ids, step, batch.sample_ids, self._weight_stats)

    def _record(self, losses: SampleLosses, domain_ids: torch.Tensor, batch: MicroBatch, batch_index: int) -> None:
        stats = DomainStats.from_samples(domain_ids, losses.token_loss_sum, losses.token_count, self.num_domains)
        # Extra statistics only feed updates; once update_times is used up none will come, so the
        # providers' extra forwards and backwards would be wasted.
        if self.providers and self.updates_remaining:
            ctx = BatchContext(
                batch.model,
                batch.inputs,
                batch.labels,
                losses,
                domain_ids,
                self.num_domains,
                batch_index,
                self.update_pending,
            )
            for provider in self.providers:
                for key, value in provider.batch_statistics(ctx).items():
                    stats.extras[key] = value.detach().to(torch.float64)
        self._step_stats.add_(stats)

    def _whole_step_update_due(self, rows: int, step: int) -> bool:
        """Whether step ``step`` (1-based) updates before its loss: the algorithm asks for it, the update
        is due, and this micro-batch is all of the rank's rows of the step (no gradient accumulation)."""
        return (
            self.algorithm.update_before_loss
            and not self._update_time_stats  # those run at end_step
            and self._updated_in_step is None
            # a rank's rows per step: the sampler shards the batch itself, or (the Trainer) accelerate does
            and rows == self.sampler.batch_size // max(self.sampler.world_size, distributed.world_size())
            and self._is_update(step)
        )

    def _update_within_step(self, step: int) -> None:
        """Reduce the step's statistics and update now, so its loss uses the new weights (end_step
        then finishes the step without reducing again)."""
        reduced = self._reduce_step()
        self._window_stats.add_(reduced)
        self._metric_stats.add_(reduced)
        window, self._window_stats = self._window_stats, DomainStats.zeros(self.num_domains)
        self._updated_in_step = (reduced, self._update(window, step))

    def _reduce_step(self) -> DomainStats:
        """This step's statistics summed over data-parallel ranks (and the step's sums reset)."""
        flat, layout = self._step_stats.pack()
        reduced = self._step_stats.unpack_(distributed.all_reduce_sum(flat), layout)
        self._step_stats = DomainStats.zeros(self.num_domains)
        return reduced

    def eval_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Plain token-mean loss (evaluation is never weighted)."""
        with torch.no_grad():
            return weighted_loss(sample_losses(logits, labels, self.shift_labels, self.chunk_rows), None, None)

    # ---- per optimizer step -------------------------------------------------------------
    def end_step(self, step: int, model: Any = None) -> bool:
        """Call after optimizer step ``step`` (1-based) on every rank. Returns whether weights were updated.

        ``model`` reaches providers that compute statistics at update time (held-out losses).
        """
        in_step, self._updated_in_step = self._updated_in_step, None
        if in_step is not None:  # the step's update already ran before its loss
            self._finish_step(in_step[0], step, pending=False)
            return in_step[1]
        pending = self._is_update(step)
        if pending:
            done = self.algorithm.num_updates + self.skipped_updates
            ctx = UpdateContext(model, step, self.num_domains, distributed.rank(), distributed.world_size(), done)
            extra = DomainStats.zeros(self.num_domains)
            for provider in self.providers:
                for key, value in provider.update_statistics(ctx).items():
                    extra.extras[key] = value.detach().to(torch.float64)
            self._step_stats.add_(extra)
        reduced = self._reduce_step()
        self._window_stats.add_(reduced)
        self._metric_stats.add_(reduced)
        return self._finish_step(reduced, step, pending)

    def _finish_step(self, reduced: DomainStats, step: int, pending: bool) -> bool:
        """Count non-finite steps, advance the sampler, plan the steps ahead, then observe the step's
        statistics and run the update when ``pending`` (p either returns wins over a planned p)."""
        self.route.started()
        self.last_step = step
        present = reduced.present
        finite = bool(torch.isfinite(reduced.token_loss_sum[present]).all()) if bool(present.any()) else True
        self.nonfinite_steps = 0 if finite else self.nonfinite_steps + 1
        self.sampler.mark_consumed(step)
        self.epochs.after_step(step)
        self.route.plan_ahead(step)  # first: the lines below then say the p of the step they name
        try:
            observed = self.algorithm.apply_observe(reduced, step)
        except InvalidWeights as err:
            logger.warning("step %d: %s; keeping the previous weights", step, err)
            observed = None
        if observed is not None:
            self.route.commit(step, observed.sampling is not None)
        if not pending:
            return False
        window, self._window_stats = self._window_stats, DomainStats.zeros(self.num_domains)
        return self._update(window, step)

    def _update(self, window: DomainStats, step: int) -> bool:
        weights = guarded_update(self.algorithm, window, step)
        if isinstance(weights, str):
            self.skipped_updates += 1
            logger.warning(weights)
            return False
        self.route.commit(step, weights.sampling is not None)
        return True

    def metrics(self, reset: bool = True) -> dict[str, float]:
        """``mix/loss/<domain>`` (token-mean training loss since the last call) and ``mix/weight/<domain>``
        (the p the next step's batch is drawn with: with read-ahead, an update's or a plan's new p
        shows from the step it is drawn with, not before)."""
        next_p = self.sampler.scheduled_weights(self.last_step)  # batch index of step last_step + 1
        out = step_metrics(self.domain_names, self._metric_stats, self.algorithm, next_p)
        out.update(self._weight_stats[0].metrics(self.domain_names))
        out.update(self.epochs.metrics(self.last_step))
        if reset:
            self._metric_stats = DomainStats.zeros(self.num_domains)
            self._weight_stats[0].reset()
        return out

    # ---- checkpoint state ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly after the last completed step: the sampler's
        position at that step's boundary, the algorithm's state, the statistics accumulated since
        the last update, counters. Call it between optimizer steps."""
        if self._step_stats.token_count.sum() > 0 or self._updated_in_step is not None:
            raise RuntimeError("StepEngine.state_dict: called in the middle of an optimizer step")
        return {
            "version": STATE_VERSION,
            "domain_names": self.domain_names,
            "algorithm_name": self.algorithm.name,
            "step": self.last_step,
            "skipped_updates": self.skipped_updates,
            "nonfinite_steps": self.nonfinite_steps,
            "sampler": self.sampler.state_dict(self.last_step),
            "algorithm": self.algorithm.state_dict(),
            "weighter": self.weighter.state_dict() if self.weighter is not None else None,
            "window_stats": self._window_stats.state_dict(),
            "metric_stats": self._metric_stats.state_dict(),
            "epochs": self.epochs.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` whole, or not at all: on any mismatch the engine is left as it was."""
        before = self.state_dict()
        try:
            self._load_state(state)
        except (ValueError, KeyError, TypeError):
            self._load_state(before)
            raise

    def _load_state(self, state: Mapping[str, Any]) -> None:
        check_compatible(state, self.domain_names, self.algorithm.name)
        self.sampler.load_state_dict(state["sampler"])
        self.algorithm.load_state_dict(state["algorithm"])
        if (state["weighter"] is None) != (self.weighter is None):
            raise ResumeError("mixflow state: the checkpoint and this run disagree on whether a weighter is used")
        if self.weighter is not None:
            self.weighter.load_state_dict(state["weighter"])
        self._window_stats.load_state_dict(state["window_stats"])
        self._metric_stats.load_state_dict(state["metric_stats"])
        self.last_step = int(state["step"])
        self.skipped_updates = int(state["skipped_updates"])
        self.nonfinite_steps = int(state.get("nonfinite_steps", 0))
        self.route.restored(self.last_step)
        self.epochs.load_state_dict(state.get("epochs", {}))

    def save(self, checkpoint_dir: str | Path) -> Path:
        """Write the state atomically to ``<checkpoint_dir>/mixflow_state.json`` (call on one rank)."""
        return write_state(checkpoint_dir, self.state_dict())

    def load(self, checkpoint_dir: str | Path, rewrite_log: bool = True) -> None:
        """Restore from a checkpoint directory. ``rewrite_log``: also :meth:`resume_log` now; a loop
        that still has checks to pass before the resume is sure (the Trainer's own loading) passes
        False and calls :meth:`resume_log` once they passed, so a failed resume rewrites nothing."""
        self.load_state_dict(read_state(checkpoint_dir))
        if rewrite_log:
            self.resume_log()

    def resume_log(self) -> None:
        """Move the weights-log lines of updates after the restored step to the superseded log (the
        resumed run writes them again) and rewrite the summary for the restored state."""
        self.weights_log.supersede(self.last_step)
        self.weights_log.write_summary(self.last_step, force=True)  # the restored state, not a superseded later one
