"""Statistic providers: per-batch statistics beyond the training loss (e.g. a reference model's loss).

An algorithm names the providers it needs in ``DomainAlgorithm.providers``; the builder makes them
from the algorithm's params, and the :class:`~mixflow.mixer.Mixer` calls each one on every training
micro-batch. What a provider returns is summed per domain and all-reduced with the other
statistics, then reaches the algorithm as ``DomainStats.extras[name]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch

from mixflow.loss import SampleLosses


@dataclass
class BatchContext:
    """What a provider may look at for one micro-batch."""

    model: Any
    """The model being trained (wrapped as the integration holds it), or None in pure-math tests."""
    inputs: Mapping[str, Any]
    """The model inputs of the batch (without labels and domain ids)."""
    labels: torch.Tensor
    """The labels of the batch, -100 where ignored."""
    losses: SampleLosses
    """The training forward's per-token and per-sample losses."""
    domain_ids: torch.Tensor
    """Domain index of every sample, shape [B]."""
    num_domains: int


class StatisticProvider(ABC):
    """Computes extra per-domain sums for each training micro-batch."""

    name: ClassVar[str]

    @abstractmethod
    def batch_statistics(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        """Per-domain *sums* (leading dimension K) over the batch; keys become ``DomainStats.extras`` keys."""


_PROVIDERS: dict[str, Callable[[Any], StatisticProvider]] = {}


def register_provider(name: str) -> Callable[[Callable[[Any], StatisticProvider]], Callable[[Any], StatisticProvider]]:
    """Register a factory ``params -> StatisticProvider`` under ``name``."""

    def decorate(factory: Callable[[Any], StatisticProvider]) -> Callable[[Any], StatisticProvider]:
        _PROVIDERS[name] = factory
        return factory

    return decorate


def build_providers(names: tuple[str, ...], params: Any) -> list[StatisticProvider]:
    """Instantiate the named providers from an algorithm's params."""
    missing = [n for n in names if n not in _PROVIDERS]
    if missing:
        raise ValueError(f"providers: unknown statistic provider(s) {missing}; registered: {sorted(_PROVIDERS)}")
    return [_PROVIDERS[n](params) for n in names]


def unregister_provider(name: str) -> None:
    _PROVIDERS.pop(name, None)
