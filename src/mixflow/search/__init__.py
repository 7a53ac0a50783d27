"""Mixture search from swarms of proxy runs (``mixflow search``): tables of runs, regressions from
mixture to loss, and the constrained mixture a regression predicts best."""
