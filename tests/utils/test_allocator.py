"""Freed memory kept in the process: a buffer allocated again is not faulted in again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROBE_BYTES, PROBE_PAGES

_PROBE = """
import sys
from mixflow.utils.allocator import keep_freed_memory
from tests.helpers import reused_buffer_faults
applied = keep_freed_memory() if sys.argv[1] == "keep" else 0
print(applied, reused_buffer_faults())
"""


def _probe(mode: str) -> tuple[int, int]:
    root = Path(__file__).resolve().parents[2]  # where `tests.helpers` imports from
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True, cwd=root, timeout=300
    )
    threshold, faults = out.stdout.split()
    return int(threshold), int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_a_buffer_allocated_again_is_not_faulted_in_again():
    _, untouched = _probe("default")
    if untouched <= PROBE_PAGES // 100:
        pytest.skip(f"this system faults few pages of a reused 48 MiB buffer anyway ({untouched})")
    threshold, kept = _probe("keep")
    if threshold < PROBE_BYTES:
        pytest.skip(f"this C library's mmap threshold stays below the probe's buffer ({threshold} bytes)")
    assert kept <= PROBE_PAGES // 100 < untouched
