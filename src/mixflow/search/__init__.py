"""Mixture search from swarms of proxy runs (``mixflow search``): plan a swarm, run it, collect its
table, fit a regression from mixture to loss, and propose the mixture it predicts best.

The Python API is the commands' own functions::

    from mixflow.search import plan_swarm, run_swarm, collect, fit_table, write_fit, propose

    plan_swarm("proxy.yaml", runs=64, out="build/swarm")
    run_swarm("build/swarm", jobs=2)
    table = collect("build/swarm")
    write_fit(fit_table(table, "mean(metric/*)"), "build/swarm/fit")
    proposal = propose("build/swarm/fit", tokens_per_run=25e9, max_epochs=4, domain_tokens={...})
"""

from mixflow.search.collect import collect
from mixflow.search.fit import fit_table, load_fit, predict_table, write_fit
from mixflow.search.plan import plan_swarm
from mixflow.search.proposal import propose, write_proposal
from mixflow.search.run import run_swarm
from mixflow.search.tables import SwarmTable, load_table

__all__ = [
    "SwarmTable",
    "collect",
    "fit_table",
    "load_fit",
    "load_table",
    "plan_swarm",
    "predict_table",
    "propose",
    "run_swarm",
    "write_fit",
    "write_proposal",
]
