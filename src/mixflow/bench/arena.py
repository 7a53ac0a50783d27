"""The arena: every mixing method against the simple mixtures and the best static one, on one set of
domains, paired by seed — the engine behind ``mixflow bench run lm-arena`` and ``mixflow arena``.

1. The documents of each domain are split once into train, validation and *test* files; every
   method trains on the train files (FGLS, ERMA and DoReMi hold their ``val_size`` rows out of them),
   the swarm chooses the best static mixture on the validation documents, and every run is scored
   on the test documents, which nothing ever trains, tunes or chooses on.
2. Baselines: ``uniform``, ``natural`` (in proportion to the domains' sizes), ``temperature``
   (τ = 3), ``unimax`` (uniform under a one-epoch cap, Chung et al. 2023), and ``best static``: a
   swarm of proxy runs (the simple mixtures, Dirichlet draws, and the mixture ``mixflow search``'s
   log-linear mixing law proposes from them: RegMix, Liu et al. 2024, arXiv 2407.01492, §3), the
   member with the lowest measured loss on the validation documents re-run on every scoring seed. The swarm is
   cached by the data and the setting.
3. Every method with its documented defaults; DoReMi's three steps with the reference's and proxy's
   steps counted.
4. Each method against ``best static`` (target loss, paired 95% intervals), the fraction of the
   natural → best-static gap it closes (Fieller's interval over the seeds' paired differences), the steps it needs to reach
   the best baseline's final validation loss (censored "> T" when never reached), and a
   recommendation (:mod:`mixflow.bench.arena_compare`, which runs every method and scores the runs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.bench.arena_recommend import recommendation_yaml
from mixflow.bench.arena_runs import SWARM, RunSpec, run_specs
from mixflow.data.proportions import unimax_proportions
from mixflow.search.propose import Constraints, simulate
from mixflow.search.regression import build_model
from mixflow.utils.jsonlog import write_json_atomic

#: The simple mixtures every method must beat (their sampling rule, or a computed mixture).
BASELINES = ("uniform", "natural", "temperature", "unimax")
#: method: the ``mixflow train`` keys that make it, on top of the shared ones.
METHODS: dict[str, dict[str, Any]] = {
    "odm": {"component": {"name": "odm"}, "update_step": 1},
    "pike": {"component": {"name": "pike"}, "update_step": 10},
    "balanced_pike": {"component": {"name": "balanced_pike"}, "update_step": 10},
    "fgls": {"component": {"name": "fgls"}, "update_step": 10},
    "erma": {"component": {"name": "erma"}, "update_step": 10},
    "va": {"component": {"name": "va"}, "update_step": 10},
    "erma + va": {"component": {"name": "va", "params": {"loss_weights_from": {"name": "erma"}}}, "update_step": 10},
    "loss reweighting": {
        "train_type": "dynamic_weight",
        "mixture_sample_rule": "uniform",
        "component": {"name": "loss"},
    },
    "doremi": {},  # its own three-step pipeline
    "ado": {},  # its released schedule scaled to the run (method_keys)
    "aioli": {"component": {"name": "aioli"}},  # its released rounds: 4 of 200 steps in 800
}
#: The swarm's best members by one seed, and how many seeds each is then measured on (full size).
TOP_REPLICATED, REPLICATES = 3, 3
#: The same mean over the clean domains on the validation split (what the swarm selects on).
VAL_TARGET = "validation target loss"
#: The best static mixture trained for DoReMi's total steps (reference, proxy and target).
EQUAL_COMPUTE = "best static (DoReMi's total steps)"
TEMPERATURE, UNIMAX_EPOCHS = 3.0, 1.0


@dataclass
class Arena:
    """What one arena compares, on which data, at which size."""

    train_dir: Path
    """A dataset directory (``dataset_info.json``) with the train files."""
    test_dir: Path
    """The test documents of every domain: they score every run."""
    val_dir: Path
    """The validation documents of every domain: they choose the best static mixture."""
    domains: list[str]
    clean: list[str]
    """The domains whose mean test loss is the target."""
    tokens: dict[str, int]
    """Train tokens per domain (natural proportions, UniMax's caps)."""
    base: dict[str, Any]
    """The shared ``mixflow train`` keys (model, tokenizer, batch, learning rate, steps, val_size)."""
    work: Path
    seeds: int
    jobs: int
    swarm: int
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    log: Callable[..., None] = print
    replicate: tuple[int, int] = (TOP_REPLICATED, REPLICATES)
    """The swarm's best members by one seed, and how many seeds each is then measured on."""
    devices: int = 0
    """CUDA devices, one run on each (the runs' config must not say ``use_cpu``); 0: ``jobs`` CPU runs."""
    _digest: str = ""

    @property
    def steps(self) -> int:
        return int(self.base["max_steps"])

    def budget_tokens(self) -> float:
        batch = int(self.base["per_device_train_batch_size"]) * int(self.base.get("gradient_accumulation_steps", 1))
        return float(self.steps * batch * int(self.base["cutoff_len"]))

    def mixture(self, name: str) -> list[float]:
        """A baseline's sampling proportions."""
        n = np.array([self.tokens[d] for d in self.domains], dtype=np.float64)
        if name == "uniform":
            p = np.ones_like(n)
        elif name == "natural":
            p = n
        elif name == "temperature":
            p = n ** (1.0 / TEMPERATURE)
        elif name == "unimax":
            p = unimax_proportions([int(x) for x in n], self.budget_tokens(), UNIMAX_EPOCHS)
        else:
            raise ValueError(f"arena: unknown baseline {name!r}")
        return (p / p.sum()).tolist()

    def static_config(self, out: Path, seed: int, mixture: list[float], data_seed: int | None = None) -> dict[str, Any]:
        """A static run. A scoring seed seeds the model *and* the data (the sampler's stream, the
        held-out split): a seed is a replicate of everything that is random, shared by every method
        at that seed, so the comparisons stay paired."""
        return {
            **self.base,
            "dataset": ",".join(self.domains),
            "dataset_dir": str(self.train_dir),
            "train_type": "static",
            "mixture_sample_rule": "mixture",
            "init_mixture_proportions": mixture,
            "output_dir": str(out),
            "seed": seed,
            "data_seed": seed if data_seed is None else data_seed,
        }

    def spec(
        self, method: str, seed: int, config: dict[str, Any], kind: str = "train", extra: dict[str, Any] | None = None
    ) -> RunSpec:
        if not self._digest:
            self._digest = _data_digest(self)
        return RunSpec(
            method,
            seed,
            config,
            str(self.test_dir),
            str(self.val_dir),
            tuple(self.domains),
            tuple(self.clean),
            kind,
            extra or {},
            self._digest,
        )


DOREMI_KEYS = {"reference": {"mixture_sample_rule": "uniform"}, "doremi": {}}


def method_keys(arena: Arena, method: str) -> dict[str, Any]:
    """The keys that make ``method`` in the arena (on top of the shared ones)."""
    if method == "doremi":
        return {**DOREMI_KEYS, "proxy": {"warmup_step": max(2, arena.steps // 20), "update_step": 5}}
    if method == "ado":  # released: fits every 1000 of 60 000 steps, from 1000, the first 1000 ignored
        every = max(1, arena.steps // 60)
        return {
            "component": {"name": "ado", "params": {"fit_every": every, "start_step": every, "ignore_steps": every}},
            "mixture_sample_rule": "stratified",
            "update_step": 1,
        }
    return dict(METHODS[method])


def arena_recommendation_yaml(arena: Arena, rec: dict[str, Any]) -> str:
    """:func:`recommendation_yaml` with the keys the recommended method was measured with."""
    return recommendation_yaml(
        arena.domains, rec, method_keys(arena, rec["method"]) if rec["method"] != "static" else {}
    )


def method_spec(arena: Arena, method: str, seed: int) -> RunSpec:
    """The run of one (non-baseline) method at one seed, with its documented defaults."""
    out = arena.work / f"seed{seed}" / slug(method)
    shared = {
        **arena.base,
        "dataset": ",".join(arena.domains),
        "dataset_dir": str(arena.train_dir),
        "seed": seed,
        "data_seed": seed,
    }
    if method == "doremi":
        return arena.spec(method, seed, {**shared, "output_dir": str(out), **method_keys(arena, method)}, kind="doremi")
    return arena.spec(
        method, seed, {**shared, "train_type": "dynamic_mix", **method_keys(arena, method), "output_dir": str(out)}
    )


BEST_STATIC = "best static"


def best_static_source(best: dict[str, Any]) -> str:
    """The runs that stand for the best static mixture: a baseline's own when the swarm chose a
    baseline (the same mixture and seeds, so the same runs: never trained twice), else "best static"'s."""
    return best["chosen"] if best["chosen"] in BASELINES else BEST_STATIC


def as_best_static(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``results`` (the runs of :func:`best_static_source`) labelled as the best static mixture's."""
    return [{**r, "method": BEST_STATIC} for r in results]


def slug(name: str) -> str:
    """A method's run folder name (letters and digits kept, the rest "_")."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def search_best_static(arena: Arena) -> dict[str, Any]:
    """The swarm (cached): its members' mixtures and validation target losses, and the chosen mixture.

    Members: the simple mixtures (so the best static is never worse than they are on validation) and
    ``arena.swarm`` Dirichlet draws; then ``mixflow search``'s log-linear mixing law fitted on them
    proposes one more (RegMix's simulation), which is run too. The best static mixture is *measured*
    best: the members lowest on the validation documents are run on more seeds, and the lowest mean
    wins (a regression fitted on a dozen runs can propose a poor mixture, measured once 0.35 nats
    worse than temperature sampling, and then it is not chosen).
    """
    key = _swarm_key(arena)
    cache = arena.work / f"swarm-{key}.json"
    if cache.is_file():
        arena.log("arena: best static mixture from the cached swarm %s", cache)
        return json.loads(cache.read_text(encoding="utf-8"))
    k = len(arena.domains)
    natural = np.array(arena.mixture("natural"))
    named = _first_members(arena, natural)
    arena.log("arena: searching the best static mixture with a swarm of %d proxy runs", len(named) + 1)
    results = _swarm_runs(arena, named)
    x = np.array([r["extra"]["mixture"] for r in results])
    # chosen on the validation documents: the test documents score, they never choose
    y = np.array([r[VAL_TARGET] for r in results])
    if not np.all(np.isfinite(y)):
        raise ValueError("arena: a swarm run has no final validation loss (the arena evaluates at the last step)")
    law = build_model("loglinear").fit(x, y)
    proposal, _ = simulate(law.predict, k, Constraints(), natural, candidates=20_000, top_k=16, seed=12345)
    results += _swarm_runs(arena, {"loglinear proposal": proposal}, first=len(named))
    names = [*named, "loglinear proposal"]
    best, means, again = _replicate_best(arena, names, results)
    found = {
        "key": key,
        "members": _member_records(names, results, means, again),
        "mixture": results[best]["extra"]["mixture"],
        "chosen": names[best],
        "runs": len(results) + len(again),
        "steps": int(sum(r["steps"] for r in results + again)),
        "seconds": float(sum(r["seconds"] for r in results + again)),
    }
    arena.log(
        "arena: best static mixture: %s (validation target %.4f over %d seeds)",
        names[best],
        means[best],
        arena.replicate[1],
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, found)
    return found


def _swarm_key(arena: Arena) -> str:
    """The swarm cache's key: a digest of everything that decides the swarm's runs and its choice."""
    return hashlib.sha256(
        json.dumps(
            {
                "base": arena.base,
                "domains": arena.domains,
                "clean": arena.clean,
                "tokens": arena.tokens,
                "swarm": arena.swarm,
                "data": _data_digest(arena),
                "members": "baselines + dirichlet + loglinear proposal",
                "replicated": list(arena.replicate),
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]


def _first_members(arena: Arena, natural: np.ndarray) -> dict[str, np.ndarray]:
    """The swarm's members before the proposal: the simple mixtures and ``arena.swarm`` Dirichlet draws."""
    rng = np.random.default_rng(12345)
    k = len(arena.domains)
    # half spread over the whole simplex, half around the natural mixture (where most of the mass is)
    named = {b: np.array(arena.mixture(b)) for b in BASELINES}
    named.update(
        {
            f"member {i}": rng.dirichlet(np.ones(k)) if i % 2 == 0 else rng.dirichlet(natural * k * 2 + 0.2)
            for i in range(arena.swarm)
        }
    )
    return named


def _member_records(
    names: list[str], results: list[dict[str, Any]], means: dict[int, float], again: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every swarm run's name, mixture and validation target (the replicated ones' mean too)."""
    members = [
        {
            "name": n,
            "mixture": r["extra"]["mixture"],
            VAL_TARGET: float(r[VAL_TARGET]),
            **({"replicated mean": means[i]} if i in means else {}),
        }
        for i, (n, r) in enumerate(zip(names, results))
    ]
    members += [
        {"name": r["extra"]["name"], "mixture": r["extra"]["mixture"], VAL_TARGET: float(r[VAL_TARGET])} for r in again
    ]
    return members


def _replicate_best(
    arena: Arena, names: list[str], results: list[dict[str, Any]]
) -> tuple[int, dict[int, float], list[dict[str, Any]]]:
    """(the chosen member, the mean validation target of each replicated one, the extra runs).

    One seed per member is a noisy choice: a run's seed sd is about the gap between good mixtures,
    so the lowest of ~17 single runs is partly luck. The best few are run on more seeds and the
    lowest mean is chosen."""
    values = [r[VAL_TARGET] for r in results]
    n_top, seeds = arena.replicate
    top = [int(i) for i in np.argsort(values)[:n_top]]
    again = _swarm_runs(
        arena,
        {f"{names[i]} (seed {j})": np.array(results[i]["extra"]["mixture"]) for i in top for j in range(1, seeds)},
        first=len(names),
    )
    per = seeds - 1
    means = {
        i: float(np.mean([values[i], *(r[VAL_TARGET] for r in again[t * per : (t + 1) * per])]))
        for t, i in enumerate(top)
    }
    return min(means, key=means.__getitem__), means, again


def _swarm_runs(arena: Arena, mixtures: dict[str, np.ndarray], first: int = 0) -> list[dict[str, Any]]:
    # the swarm's seeds are apart from the scoring seeds; each member's seeds the model and the data
    specs = [
        arena.spec(
            SWARM,
            10_000 + first + i,
            arena.static_config(
                arena.work / "swarm" / f"member{first + i}", 10_000 + first + i, (m / m.sum()).tolist()
            ),
            extra={"mixture": (m / m.sum()).tolist(), "name": name},
        )
        for i, (name, m) in enumerate(mixtures.items())
    ]
    return run_specs(specs, arena.jobs, arena.log, arena.devices)


def _data_digest(arena: Arena) -> str:
    digest = hashlib.sha256()
    for d in arena.domains:
        for folder in (arena.train_dir, arena.val_dir, arena.test_dir):
            path = folder / f"{d}.jsonl"
            digest.update(path.read_bytes() if path.is_file() else d.encode())
    return digest.hexdigest()
