"""Markers the layout implies: every test under tests/bench/ is a ``bench`` test (``make test-fast``
and ``pytest -m "not bench"`` leave them out); ``slow`` and ``distributed`` are set on the tests themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "bench"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BENCH in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.bench)
