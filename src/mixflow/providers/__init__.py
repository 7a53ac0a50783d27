"""Statistic providers: statistics beyond the training loss, produced for the algorithms.

One file per provider, found by :func:`~mixflow.providers.base.discover` (see README.md here).
"""
