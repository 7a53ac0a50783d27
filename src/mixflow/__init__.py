"""mixflow: dynamic data mixing and reweighting for language-model training.

The public API (``from mixflow import ...``):

- :class:`MixtureSampler`: deterministic, resumable, rank-aware sampling of a domain mixture;
  :class:`MixtureDataset` and :class:`DomainCollator`: rows of several domains and their batches.
- :class:`StepEngine` with its :class:`UpdateSchedule`: ties a sampler, a domain algorithm and a
  sample weighter to the training step (weighted loss, statistics, updates, logs, checkpoints);
  :class:`MicroBatch`: what a training loop tells it about each micro-batch.
- :func:`build_algorithm` / :func:`build_weighter`, :func:`available_algorithms` /
  :func:`available_weighters`, and the base classes for new algorithms.
- :class:`MixflowTrainer` (the Hugging Face Trainer integration) and :func:`load_config`; both are
  imported on first use, so ``import mixflow`` does not import transformers.
"""

from __future__ import annotations

from typing import Any

from mixflow.algorithms import (
    DomainAlgorithm,
    DomainStats,
    SampleWeighter,
    available_algorithms,
    available_weighters,
    build_algorithm,
    build_weighter,
)
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule

_LAZY = {
    "MixflowTrainer": "mixflow.integrations.hf_trainer",
    "MixflowCallback": "mixflow.integrations.hf_trainer",
    "load_config": "mixflow.config.load",
}


def __getattr__(name: str) -> Any:
    # The Trainer integration needs transformers; importing it only when asked keeps the core light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mixflow' has no attribute {name!r}")


__all__ = [
    "DomainAlgorithm",
    "DomainCollator",
    "DomainStats",
    "MixflowCallback",
    "MicroBatch",
    "MixflowTrainer",
    "MixtureDataset",
    "MixtureSampler",
    "SampleWeighter",
    "StepEngine",
    "UpdateSchedule",
    "available_algorithms",
    "available_weighters",
    "build_algorithm",
    "build_weighter",
    "load_config",
]
__version__ = "0.1.0"
