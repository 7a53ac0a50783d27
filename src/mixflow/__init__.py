"""mixflow: dynamic data mixing and reweighting for language-model training.

The public API:

- :class:`MixtureSampler`: deterministic, resumable, rank-aware sampling of a domain mixture.
- :class:`Mixer`: one object tying a sampler, a domain-level algorithm and a sample weighter to the
  training step (weighted loss, statistics, updates, logs, checkpoint state).
- :func:`build_algorithm` / :func:`build_weighter` and the registries of algorithms.
- :class:`MixflowTrainer` (Hugging Face Trainer integration) is imported lazily from
  :mod:`mixflow.integrations.hf_trainer` so that the core does not need transformers.
"""

from mixflow.algorithms import (
    DomainAlgorithm,
    SampleWeighter,
    available_algorithms,
    available_weighters,
    build_algorithm,
    build_weighter,
)
from mixflow.data.sampler import MixtureSampler
from mixflow.mixer import Mixer, UpdateSchedule
from mixflow.stats import DomainStats

__all__ = [
    "DomainAlgorithm",
    "DomainStats",
    "Mixer",
    "MixtureSampler",
    "SampleWeighter",
    "UpdateSchedule",
    "available_algorithms",
    "available_weighters",
    "build_algorithm",
    "build_weighter",
]
__version__ = "0.1.0"
