"""Algorithms layer: one file per paper, registered by name (see :mod:`mixflow.algorithms.registry`)."""

from mixflow.algorithms.base import AlgorithmParams, DomainAlgorithm, Mode, SampleWeighter, param
from mixflow.algorithms.registry import (
    available_algorithms,
    available_weighters,
    build_algorithm,
    build_weighter,
    describe_params,
    register_algorithm,
    register_weighter,
)

# Importing a module registers what it defines.
from mixflow.algorithms import static as _static  # noqa: F401,E402

__all__ = [
    "AlgorithmParams",
    "DomainAlgorithm",
    "Mode",
    "SampleWeighter",
    "available_algorithms",
    "available_weighters",
    "build_algorithm",
    "build_weighter",
    "describe_params",
    "param",
    "register_algorithm",
    "register_weighter",
]
