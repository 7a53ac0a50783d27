"""``mixflow search run``: the planned proxies on this machine, ``jobs`` at a time, each in a fresh
process with one torch thread (on CPU) — resumable: a finished run is skipped, an interrupted one
resumes from its last complete checkpoint (the planned configs say ``resume_from_checkpoint: auto``).
On a cluster, launch ``runs/*.yaml`` with your scheduler instead (docs/search.md)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from mixflow.config.errors import ConfigError
from mixflow.errors import MixflowError
from mixflow.search.collect import finished, planned_runs, run_output, stopped

logger = logging.getLogger(__name__)


def train_one(config: str, threads: int) -> str:
    """``mixflow train CONFIG`` in this (worker) process; returns the config's path (module level: it pickles)."""
    import torch

    from mixflow.config.load import load_config
    from mixflow.recipes.train import run_training

    if threads > 0:
        torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("mixflow").setLevel(logging.WARNING)
    run_training(load_config(config), progress=False)
    return config


def run_swarm(folder: str | Path, jobs: int = 1, threads: int = 1) -> dict[str, int]:
    """Train every planned run that has not finished; ``{"done": ..., "skipped": ...}``. The first
    failure stops the runs not started yet and names the run and its config."""
    root = Path(folder)
    if jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs}")
    runs = planned_runs(root)
    todo = [r["run"] for r in runs if not finished(run_output(root, r["run"]))]
    broken = [r["run"] for r in runs if stopped(run_output(root, r["run"]))]
    if broken:  # retraining would diverge the same way: say so, never hide it
        logger.warning(
            "search run: %d runs stopped early (diverged) and are not retrained: %s",
            len(broken),
            ", ".join(broken[:8]) + (", ..." if len(broken) > 8 else ""),
        )
    logger.info(
        "search run: %d of %d runs to train (%d finished), %d at a time",
        len(todo),
        len(runs),
        len(runs) - len(todo),
        jobs,
    )
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_one, str(root / "runs" / f"{name}.yaml"), threads): name for name in todo}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                name = futures[future]
                try:
                    future.result()
                except Exception as err:
                    raise MixflowError(
                        f"search run: run {name} failed ({root / 'runs' / f'{name}.yaml'}): "
                        f"{str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}"
                        "; finished runs are kept (the runs already started were let finish), rerun to continue"
                    ) from err
                logger.info("search run: %d/%d done (run %s)", done, len(todo), name)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return {"done": len(todo), "skipped": len(runs) - len(todo)}
