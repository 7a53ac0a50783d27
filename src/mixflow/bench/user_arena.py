"""``mixflow arena CONFIG.yaml``: the arena on the user's own domains, tokenizer and (proxy-sized) model.

The config is a ``mixflow train`` config. Its domains, tokenizer, model and optimisation keys are
kept; the arena owns the rest (the mixture and algorithm keys, steps, evaluation, outputs). It
writes ``DIR/arena.json`` in the benchmark schema plus ``"recommendation": {"mixture", "method",
"why"}``, ``DIR/arena.md``, the plots, and ``DIR/recommendation.yaml`` (keys for ``mixflow train``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixflow.algorithms.params import suggest
from mixflow.bench.arena import METHODS, Arena, arena_recommendation_yaml, method_spec
from mixflow.bench.arena_compare import run_arena
from mixflow.bench.arena_compute import eval_every
from mixflow.bench.arena_data import split_domains, train_tokens
from mixflow.bench.arena_plots import curves_plot, weights_plot
from mixflow.bench.arena_runs import accelerators, spec_problems, usable_cores
from mixflow.bench.arena_scores import TARGET
from mixflow.bench.base import commit
from mixflow.bench.runner import write_result
from mixflow.config.load import load_config
from mixflow.config.schema import RunConfig
from mixflow.data.sources import DomainSource
from mixflow.errors import ConfigError
from mixflow.recipes.inputs import domain_sources

logger = logging.getLogger(__name__)

#: TrainingArguments keys of the user's config the arena keeps (how their model is optimised).
KEPT_TRAINING_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "optim",
    "bf16",
    "fp16",
    "use_cpu",
    "per_device_eval_batch_size",
)


def arena_base(run: RunConfig, steps: int, work: Path) -> dict[str, Any]:
    """The shared keys of every arena run, from the user's validated config."""
    base: dict[str, Any] = {k: run.training[k] for k in KEPT_TRAINING_KEYS if run.training.get(k) is not None}
    base.setdefault("per_device_train_batch_size", 8)
    if run.model.model_name_or_path is not None:
        base["model_name_or_path"] = str(Path(run.model.model_name_or_path).resolve())
        base["train_from_scratch"] = run.model.train_from_scratch
    if run.model.model_config is not None:
        base["model_config"] = dict(run.model.model_config)
    if run.data.tokenizer is not None:
        base["tokenizer"] = (
            run.data.tokenizer if run.data.tokenizer == "byte" else str(Path(run.data.tokenizer).resolve())
        )
    base.update(
        {
            "cutoff_len": run.data.cutoff_len,
            "val_size": run.data.val_size if run.data.val_size else 0.05,
            "tokenized_dir": str(work / "tokenized"),
            "max_steps": steps,
            "logging_steps": max(1, steps // 10),
            "eval_strategy": "steps",
            "eval_steps": eval_every(steps),
            "save_strategy": "no",
            "report_to": "none",
            "data_seed": 0,
            "dataloader_num_workers": 0,
            "disable_tqdm": True,
            "overwrite_output_dir": True,
        }
    )
    return base


def run_user_arena(
    config: str | Path,
    overrides: Mapping[str, Any] | None = None,
    methods: list[str] | None = None,
    seeds: int = 3,
    steps: int | None = None,
    quick: bool = False,
    out: str | Path = "build/arena",
    jobs: int | None = None,
    swarm: int | None = None,
    clean: list[str] | None = None,
    max_documents: int | None = None,
) -> dict[str, Any]:
    """Run the arena on the config's domains; returns the recommendation (also in ``out/arena.json``)."""
    run = load_config(config, overrides, check_outputs=False)  # every config error before any work
    sources, clean = _checked(run, methods, clean, seeds=seeds, steps=steps, jobs=jobs, swarm=swarm)
    names = [s.name for s in sources]
    out_dir = Path(out)
    work = out_dir / "work"
    jobs = jobs or usable_cores()
    steps = steps or (
        int(run.training["max_steps"]) if (run.training.get("max_steps") or -1) > 0 else (60 if quick else 300)
    )
    swarm = swarm or (8 if quick else 24)
    code = commit()
    start = time.perf_counter()
    arena = _user_arena(run, sources, clean, work, steps, seeds, jobs, swarm, methods, max_documents)
    if methods is None:  # the default list: leave out, said, what cannot run on these domains and steps
        arena.methods = runnable_methods(arena)
    result, summary, runs = run_arena(arena)
    result.plots = _plots(out_dir, runs, clean, names)
    rec = summary["recommendation"]
    cmd = f"mixflow arena {config} --seeds {seeds} --steps {steps} --out {out_dir}" + (" --quick" if quick else "")
    write_result(
        out_dir,
        "arena",
        f"on {', '.join(names)}: which mixture and which method give the lowest {TARGET} "
        f"(mean test loss over {', '.join(clean)})",
        str(config),
        result,
        seeds,
        quick,
        time.perf_counter() - start,
        code,
        cmd,
        extra={"recommendation": rec},
    )
    (out_dir / "recommendation.yaml").write_text(arena_recommendation_yaml(arena, rec), encoding="utf-8")
    return rec


def _checked(
    run: RunConfig, methods: list[str] | None, clean: list[str] | None, **counts: int | None
) -> tuple[list[DomainSource], list[str]]:
    """(the config's domains, the clean ones): raises one ConfigError naming every problem of the
    methods, task, domains, clean domains and ``counts`` (seeds, steps, jobs, swarm)."""
    errors = [
        f"methods: unknown {m!r}; expected some of {sorted(METHODS)}{suggest(m, METHODS)}"
        for m in methods or []
        if m not in METHODS
    ]
    if run.data.task != "causal_lm":
        errors.append(f"task: the arena compares language-model mixtures, got {run.data.task!r}")
    sources = domain_sources(run)
    names = [s.name for s in sources]
    errors += [
        f"domain {s.name!r}: instruction data; the arena reads plain-text domains only"
        for s in sources
        if s.formatting is not None
    ]
    if len(sources) < 2:
        errors.append(f"dataset: the arena needs at least 2 domains, got {len(sources)}")
    clean = clean or names
    errors += [f"clean: {d!r} is not a domain of the config ({', '.join(names)})" for d in clean if d not in names]
    for key, value in counts.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < (2 if key == "seeds" else 1)
        ):
            errors.append(f"{key}: expected an integer ≥ {2 if key == 'seeds' else 1}, got {value!r}")
    if errors:
        raise ConfigError("\n".join(errors))
    return sources, clean


def _user_arena(
    run: RunConfig,
    sources: list[DomainSource],
    clean: list[str],
    work: Path,
    steps: int,
    seeds: int,
    jobs: int,
    swarm: int,
    methods: list[str] | None,
    max_documents: int | None,
) -> Arena:
    """The arena on the config's domains, split into train, validation and test files under ``work``."""
    names = [s.name for s in sources]
    logger.info(
        "arena: splitting %d domains into train, validation and test files under %s", len(sources), work / "split"
    )
    split = split_domains(sources, work / "split", max_documents=max_documents)
    base = arena_base(run, steps, work)
    return Arena(
        train_dir=split.train,
        test_dir=split.test,
        val_dir=split.val,
        domains=names,
        clean=clean,
        tokens=train_tokens(base, split.train, names),
        base=base,
        work=work / "runs",
        seeds=seeds,
        jobs=jobs,
        devices=0 if base.get("use_cpu") else accelerators(),
        swarm=swarm,
        methods=methods or list(METHODS),
        log=logging.getLogger("mixflow.progress.arena").info,
    )


def runnable_methods(arena: Arena) -> list[str]:
    """The arena's methods whose documented defaults can run on its domains, batch and steps (e.g.
    Aioli's LearnParams rounds need sweeps × K × sweep_steps steps, which many domains outgrow); each
    one left out is one warning line with its reason. Asked for by name (``--methods``), a method that
    cannot run is an error instead."""
    kept = []
    for method in arena.methods:
        problems = spec_problems([method_spec(arena, method, 0)])
        if problems:
            logger.warning("arena: left out, its defaults cannot run here: %s (--methods chooses)", "; ".join(problems))
        else:
            kept.append(method)
    return kept


def _plots(out_dir: Path, runs: dict[str, list[dict[str, Any]]], clean: list[str], names: list[str]) -> list[str]:
    """Draws the validation curves and the weights into ``out_dir``; the names of the plots drawn."""
    plots = [
        p
        for p in (
            curves_plot(out_dir / "arena-curves.png", runs, clean),
            weights_plot(out_dir / "arena-weights.png", runs, names),
        )
        if p is not None
    ]
    return [p.name for p in plots]
