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
from mixflow.algorithms import doremi as _doremi  # noqa: F401,E402
from mixflow.algorithms import fgls as _fgls  # noqa: F401,E402
from mixflow.algorithms import erma as _erma  # noqa: F401,E402
from mixflow.algorithms import va as _va  # noqa: F401,E402
from mixflow.algorithms import loss_reweighting as _loss_reweighting  # noqa: F401,E402
from mixflow.algorithms import imp as _imp  # noqa: F401,E402
from mixflow.algorithms import odm as _odm  # noqa: F401,E402
from mixflow.algorithms import pike as _pike  # noqa: F401,E402

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
