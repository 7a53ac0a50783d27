"""Statistic providers: statistics beyond the training loss (a reference model's loss, gradient
statistics, held-out losses).

An algorithm names the providers it needs (:meth:`DomainAlgorithm.provider_specs`); the step
engine builds them from those params and a :class:`ProviderContext` (held-out data, collator) and
calls them:

- :meth:`StatisticProvider.batch_statistics` on every training micro-batch (it sees the training
  forward's losses, so it can run extra forwards or partial backwards);
- :meth:`StatisticProvider.update_statistics` once on each rank just before a scheduled update
  (e.g. to evaluate held-out losses).

What a provider returns is a per-domain *sum* (leading dimension K). The step engine sums it over
micro-batches and steps and all-reduces it over ranks with the other statistics; the algorithm
reads it as ``DomainStats.extras[key]`` under the names :mod:`mixflow.algorithms.statistics`
declares. Sums, not means, are what make that reduction exact. A new provider is one module in
this package (or a plugin's, entry-point group ``mixflow.providers``) with ``@register_provider``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from mixflow.algorithms.base import ProviderSpec
from mixflow.algorithms.registry import discover_modules
from mixflow.errors import ConfigError
from mixflow.loss.per_sample import SampleLosses


@dataclass
class ProviderContext:
    """What a provider may be built with, besides the algorithm's params."""

    domain_names: list[str]
    """Domain names in order."""
    heldout: Mapping[str, Any] = field(default_factory=dict)
    """Held-out dataset per domain name (rows never trained on), when the run has a split."""
    collator: Callable[[list], dict] | None = None
    """Turns a list of dataset items into a model batch."""
    eval_batch_size: int = 8
    """Batch size for provider-side evaluation."""
    task: str = "causal_lm"
    """``causal_lm`` (labels shifted by one) or ``classification``."""
    batch_size: int | None = None
    """B, the global batch of one optimizer step (the step engine fills it in from its sampler)."""


@dataclass
class BatchContext:
    """What a provider may look at for one training micro-batch."""

    model: Any
    """The model being trained (wrapped as the integration holds it), or None in pure-math tests."""
    inputs: Mapping[str, Any]
    """The model inputs of the batch (without labels and mixflow's keys)."""
    labels: torch.Tensor | None
    """The labels of the batch, -100 where ignored (None where the caller has none)."""
    losses: SampleLosses
    """The training forward's per-token and per-sample losses (with the autograd graph)."""
    domain_ids: torch.Tensor
    """Domain index of every sample, shape [B]."""
    num_domains: int
    batch_index: int = 0
    """Index of the global batch this micro-batch belongs to (0-based: the optimizer step − 1; mixflow
    says ``step`` only for the 1-based optimizer step, as ``end_step`` and :class:`UpdateContext` do)."""
    update_pending: bool = False
    """Whether the optimizer step this micro-batch belongs to ends with a scheduled update."""


@dataclass
class UpdateContext:
    """What a provider may look at just before an update."""

    model: Any
    """The model being trained, or None when the integration did not pass it."""
    step: int
    """The optimizer step that just completed (1-based)."""
    num_domains: int
    rank: int = 0
    world_size: int = 1
    update_index: int = 0
    """Updates (applied or skipped) before this one: a position that survives a resume (e.g. for a
    window that rotates through the held-out rows)."""


class StatisticProvider:
    """Computes extra per-domain sums; override one or both hooks."""

    name: ClassVar[str]

    def attach(self, model: Any) -> None:
        """Called with the model before its first forward where the caller can (the Trainer
        integration does; in your own loop, :meth:`StepEngine.attach_model`), so a provider that
        hooks into the forward sees the first batch too (default: nothing)."""

    def before_forward(self, inputs: Mapping[str, Any], labels: torch.Tensor | None, shift: bool) -> None:
        """Called with a training micro-batch before the model's forward where the caller can
        (default: nothing); :meth:`batch_statistics` for the same batch follows."""

    def batch_statistics(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        """Per-domain sums over one training micro-batch (default: none)."""
        return {}

    def update_statistics(self, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        """Per-domain sums computed on this rank just before an update (default: none)."""
        return {}


#: Entry-point group through which plugin packages add provider modules.
ENTRY_POINT_GROUP = "mixflow.providers"

ProviderFactory = Callable[[Any, ProviderContext | None], StatisticProvider]


@dataclass(frozen=True)
class ProviderNeeds:
    """What a provider needs from the run, declared where it registers, so the config checks and the
    run builder ask the provider instead of knowing it by name."""

    heldout_rows: int = 0
    """Held-out rows each domain must have (``val_size``); 0: none needed."""
    preflight: Callable[[Any, Any], None] | None = None
    """``(params, tokenizer) -> None``: checks run once the tokenizer is loaded and before any model
    loads (raise a one-line ``ConfigError``)."""


_PROVIDERS: dict[str, tuple[ProviderFactory, ProviderNeeds]] = {}


def register_provider(name: str, needs: ProviderNeeds | None = None) -> Callable[[ProviderFactory], ProviderFactory]:
    """Register a factory ``(params, context) -> StatisticProvider`` under ``name``, with what it needs."""

    def decorate(factory: ProviderFactory) -> ProviderFactory:
        _PROVIDERS[name] = (factory, needs or ProviderNeeds())
        return factory

    return decorate


def provider_needs(name: str) -> ProviderNeeds:
    """What the provider registered as ``name`` needs from the run (an unknown name needs nothing:
    :func:`build_providers` names it)."""
    discover()
    return _PROVIDERS[name][1] if name in _PROVIDERS else ProviderNeeds()


def discover() -> None:
    """Import every provider module of mixflow and of installed plugins (idempotent)."""
    discover_modules("mixflow.providers", ENTRY_POINT_GROUP)


def available_providers() -> list[str]:
    """Names of the registered statistic providers."""
    discover()
    return sorted(_PROVIDERS)


def build_providers(specs: Sequence[ProviderSpec], context: ProviderContext | None = None) -> list[StatisticProvider]:
    """Instantiate the providers an algorithm asked for (:meth:`DomainAlgorithm.provider_specs`)."""
    missing = [s.name for s in specs if s.name not in available_providers()]
    if missing:
        raise ConfigError(f"providers: unknown statistic provider(s) {missing}; registered: {available_providers()}")
    return [_PROVIDERS[s.name][0](s.params, context) for s in specs]
