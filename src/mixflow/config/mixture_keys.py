"""The ``mixflow train`` keys of a fixed mixture: what ``mixflow search propose``, ``mixflow arena``
and ``mixflow export`` hand back as YAML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def static_mixture_keys(mixture: Mapping[str, float]) -> dict[str, Any]:
    """``dataset`` in the mixture's order and its proportions, unrounded (so repetition caps hold
    exactly); ``init_mixture_proportions`` is also a DoReMi pipeline's starting point."""
    return {
        "dataset": ",".join(mixture),
        "train_type": "static",
        "mixture_sample_rule": "mixture",
        "init_mixture_proportions": [float(w) for w in mixture.values()],
    }
