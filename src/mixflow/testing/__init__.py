"""Helpers for testing code that uses mixflow (also used by mixflow's own test suite)."""

from mixflow.testing.distributed import run_distributed

__all__ = ["run_distributed"]
