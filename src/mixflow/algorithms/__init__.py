"""Algorithms layer: pure math, one file per paper, registered by name.

Nothing here imports the rest of mixflow, touches files or runs autograd. A module of this package
that registers a class (``@register_algorithm`` / ``@register_weighter``) is found by
:func:`~mixflow.algorithms.registry.discover` without any import line; see README.md here.
"""

from mixflow.algorithms.base import DomainAlgorithm, Mode, ProviderSpec, SampleWeighter
from mixflow.algorithms.params import AlgorithmParams, ValidationContext, describe_params, param, required_param
from mixflow.algorithms.registry import (
    available_algorithms,
    available_weighters,
    build_algorithm,
    build_weighter,
    register_algorithm,
    register_weighter,
)
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights

__all__ = [
    "AlgorithmParams",
    "DomainAlgorithm",
    "DomainStats",
    "Mode",
    "ProviderSpec",
    "SampleWeighter",
    "ValidationContext",
    "Weights",
    "available_algorithms",
    "available_weighters",
    "build_algorithm",
    "build_weighter",
    "describe_params",
    "param",
    "register_algorithm",
    "register_weighter",
    "required_param",
]
