"""``mixflow bench``: does each algorithm do what its paper says, and what does mixing cost?

One module per benchmark, registered with :func:`~mixflow.bench.base.register_benchmark` and found
by discovery (see README.md here); :mod:`mixflow.bench.runner` writes the results.
"""
