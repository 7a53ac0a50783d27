"""Declared parameter ranges: checked once at load, one line naming the key and the range, shown by
``mixflow list``; a value inside its range (or null where allowed) passes untouched."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from mixflow.algorithms.params import AlgorithmParams, bounded, build_params, describe_params
from mixflow.errors import ConfigError


@dataclass
class _Ranged(AlgorithmParams):
    rate: float = bounded(0.5, ge=0, lt=1)
    """a rate"""
    size: float = bounded(1.0, gt=0, finite=True)
    """a size"""
    groups: int = bounded(2, ge=2, why="a variance needs two")
    """groups"""
    cap: float | None = bounded(None, gt=0)
    """a cap, or none"""


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("rate", 1.0, "x.rate: expected a number in [0, 1), got 1.0"),
        ("rate", -0.1, "x.rate: expected a number in [0, 1), got -0.1"),
        ("rate", math.nan, "x.rate: expected a number in [0, 1), got nan"),
        ("size", 0.0, "x.size: expected a finite number > 0, got 0.0"),
        ("size", math.inf, "x.size: expected a finite number > 0, got inf"),
        ("groups", 1, "x.groups: expected an integer >= 2 (a variance needs two), got 1"),
        ("cap", 0.0, "x.cap: expected a number > 0 or null, got 0.0"),
    ],
)
def test_a_value_outside_its_declared_range_is_one_line_naming_the_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        build_params(_Ranged, {key: value}, "x")
    assert str(err.value) == message


def test_values_inside_their_ranges_and_null_where_allowed_pass():
    params = build_params(_Ranged, {"rate": 0.0, "size": 1e9, "groups": 2, "cap": None}, "x")
    assert (params.rate, params.size, params.groups, params.cap) == (0.0, 1e9, 2, None)


def test_mixflow_list_shows_each_range():
    class Algo:
        Params = _Ranged

    shown = {name: what for name, what, _, _ in describe_params(Algo)}
    assert shown == {
        "rate": "a number in [0, 1)",
        "size": "a finite number > 0",
        "groups": "an integer >= 2 (a variance needs two)",
        "cap": "a number > 0 or null",
    }
