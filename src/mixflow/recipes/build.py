"""Build what a :class:`~mixflow.config.RunConfig` describes: data, tokenizer, step engine, model.

This is the run builder: everything an algorithm needs from disk (a checker cache, held-out
rows) is loaded here and handed over, so the algorithms layer never touches a file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm, SampleWeighter
from mixflow.algorithms.registry import build_algorithm, build_weighter
from mixflow.config.checks import per_domain_epochs
from mixflow.config.components import global_batch_size
from mixflow.config.schema import RunConfig
from mixflow.data.dataset import MixtureDataset
from mixflow.data.packing import TokenizedDomain, split_indices
from mixflow.data.pretokenized import read_pretokenized
from mixflow.data.proportions import resolve_proportions
from mixflow.data.sampler import MixtureSampler
from mixflow.data.sources import DomainSource, sources_from_dataset_info
from mixflow.data.tokenized import CacheEntry, cache_domain
from mixflow.data.tokenizer import ByteTokenizer
from mixflow.engine.engine import StepEngine
from mixflow.engine.schedule import UpdateSchedule
from mixflow.errors import ConfigError, DataError
from mixflow.providers.base import ProviderContext, provider_needs
from mixflow.recipes.adapters import with_lora
from mixflow.recipes.inputs import choose_tokenizer, domain_sources, split_seed, tokenized_dir
from mixflow.recipes.models import scratch_config
from mixflow.recipes.weights_cache import read_weights_cache

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenized domains, as datasets, plus the tokenizer that made them."""

    tokenizer: Any
    domains: list[TokenizedDomain]
    train: MixtureDataset
    val: dict[str, MixtureDataset]
    """Each domain's held-out rows: what the algorithms read."""
    evaluation: dict[str, MixtureDataset]
    """What the Trainer evaluates: the held-out rows and ``eval_dataset``'s sets."""


def cache_domains(
    run: RunConfig,
    progress: bool = True,
    overwrite_cache: bool | None = None,
    verify: bool = False,
    sources: list[DomainSource] | None = None,
) -> list[CacheEntry]:
    """Every domain's tokenization cache entry (or ``sources``', e.g. the evaluation sets), built
    where it is missing or stale (see :mod:`mixflow.data.tokenized`). ``overwrite_cache`` (default:
    the config's) rebuilds matching entries; ``verify`` also checks each file's content hash against
    the entry's."""
    if run.data.task == "classification":
        raise ConfigError(
            "task: classification examples are tokenized in memory by each run; "
            "the tokenization cache is for causal_lm domains"
        )
    tokenizer = choose_tokenizer(run)
    cache = tokenized_dir(run)
    overwrite = run.data.overwrite_cache if overwrite_cache is None else overwrite_cache
    entries = []
    for source in sources if sources is not None else domain_sources(run):
        packing = run.data.packing if run.data.packing is not None else source.formatting is None
        if source.token_format is not None:  # already tokenized: read in place, nothing cached
            entries.append(pretokenized_entry(run, source, tokenizer, packing))
            continue
        entry = cache_domain(
            source,
            tokenizer,
            cache,
            run.data.cutoff_len,
            packing=packing,
            max_documents=run.data.max_samples,
            workers=run.data.preprocessing_num_workers or 1,
            overwrite=overwrite,
            verify=verify,
            progress=progress,
        )
        if entry.reused:
            logger.info(
                "tokenized %s: reusing %s (%d rows; the sources are unchanged)",
                source.name,
                entry.directory,
                len(entry.rows),
            )
        entries.append(entry)
    return entries


def pretokenized_entry(run: RunConfig, source: DomainSource, tokenizer: Any, packing: bool) -> CacheEntry:
    """A pre-tokenized domain as a cache entry (its rows read in place); the tokenizer it was made
    with must be declared (its vocabulary bounds the ids, its EOS ends a numpy stream's documents)."""
    if run.data.tokenizer is None and isinstance(tokenizer, ByteTokenizer):
        raise ConfigError(
            f"tokenizer: domain {source.name!r} is already tokenized ({source.token_format}); set "
            "tokenizer: to the tokenizer it was tokenized with (or use a model directory that has it)"
        )
    domain = read_pretokenized(
        source, run.data.cutoff_len, packing, int(tokenizer.vocab_size), getattr(tokenizer, "eos_token_id", None)
    )
    logger.info(
        "%s: %s read in place (%s): %d rows, %d tokens",
        source.name,
        domain.source,
        source.token_format,
        len(domain.rows),
        domain.num_tokens,
    )
    meta = {"num_tokens": domain.num_tokens, "num_documents": domain.documents, "format": source.token_format}
    return CacheEntry(Path(domain.source), domain.rows, meta, reused=True)


def prepare_data(run: RunConfig, progress: bool = True, overwrite_cache: bool | None = None) -> PreparedData:
    """Every domain's rows, read from the tokenization cache (:func:`cache_domains`),
    split into training and held-out rows per domain."""
    seed = split_seed(run)
    val_size: float | int = run.data.val_size if run.data.val_size < 1 else int(run.data.val_size)
    domains = []
    pairs = list(zip(domain_sources(run), cache_domains(run, progress, overwrite_cache)))
    empty = [
        f"cutoff_len: domain {s.name!r} has {e.meta['num_tokens']} tokens, which make no row of cutoff_len "
        f"{run.data.cutoff_len} (packed rows are whole blocks); expected a smaller cutoff_len or more data"
        for s, e in pairs
        if len(e.rows) == 0
    ]
    if empty:
        raise DataError("\n".join(empty))
    for source, entry in pairs:
        train_index, val_index = split_indices(source.name, len(entry.rows), val_size, seed)
        domains.append(TokenizedDomain(source.name, entry.rows.take(train_index), entry.rows.take(val_index)))
    train = MixtureDataset(domains, split="train")
    val: dict[str, MixtureDataset] = {}
    if any(d.num_val for d in domains):
        full_val = MixtureDataset(domains, split="val")
        val = {d.name: full_val.single_domain(i) for i, d in enumerate(domains) if d.num_val}
    return PreparedData(choose_tokenizer(run), domains, train, val, {**val, **evaluation_sets(run, progress)})


def evaluation_sets(run: RunConfig, progress: bool = True) -> dict[str, MixtureDataset]:
    """``eval_dataset``'s sets, tokenized like the domains (every row is evaluated)."""
    if not run.data.eval_dataset:
        return {}
    sources = sources_from_dataset_info(run.data.dataset_dir, list(run.data.eval_dataset))
    out = {}
    for source, entry in zip(sources, cache_domains(run, progress, sources=sources)):
        if len(entry.rows) == 0:
            raise DataError(f"eval_dataset: {source.name!r} makes no row of cutoff_len {run.data.cutoff_len}")
        out[source.name] = MixtureDataset(
            [TokenizedDomain(source.name, entry.rows, entry.rows.take(np.zeros(0, dtype=np.int64)))]
        )
    return out


def build_engine(
    run: RunConfig,
    train: MixtureDataset,
    batch_size: int,
    seed: int,
    heldout: dict[str, MixtureDataset] | None = None,
    collator: Any = None,
    max_steps: int | None = None,
) -> StepEngine:
    """Sampler, algorithm and weighter as configured (their params were built at load), at their
    initial weights. ``heldout`` and ``collator`` reach statistic providers that evaluate held-out
    losses; ``max_steps`` (and B × cutoff_len tokens a step) reach algorithms that plan by the run's
    length (a schedule's fractions and tokens)."""
    m = run.mixing
    assert run.algorithm is not None, "a RunConfig comes from load_config, which resolves the algorithm"
    init = _initial_proportions(run, train, batch_size, max_steps)
    names = list(train.domain_names)
    algorithm = build_algorithm(
        run.algorithm.name, names, run.algorithm.params, init_weights=init, prior=m.domain_prior
    )
    _check_heldout_rows(algorithm, names, heldout)
    weighter = None
    if run.weighter is not None:
        weighter = build_weighter(run.weighter.name, names, run.weighter.params)
        load_weighter_inputs(weighter)
    sampler = MixtureSampler(
        train.domain_sizes,
        algorithm.sampling_weights,
        batch_size,
        seed=seed,
        on_exhausted=m.on_exhausted,
        max_epochs=per_domain_epochs(m.max_epochs, names),
    )
    schedule = UpdateSchedule(m.warmup_step, m.update_step, m.update_times)
    context = ProviderContext(
        domain_names=names,
        heldout=heldout or {},
        collator=collator,
        eval_batch_size=int(run.training.get("per_device_eval_batch_size", 8)),
        task=run.data.task,
    )
    return StepEngine(
        sampler,
        algorithm,
        weighter,
        schedule,
        log_dir=run.training["output_dir"],
        provider_context=context,
        shift_labels=run.data.task != "classification",  # a classifier's labels are not shifted
        objective_normalization=m.objective_normalization,
        row_target_tokens=train.target_tokens,
        plan_horizon=m.mixture_plan_horizon,
        max_steps=max_steps,
        tokens_per_step=batch_size * run.data.cutoff_len,
    )


def _initial_proportions(run: RunConfig, train: MixtureDataset, batch_size: int, max_steps: int | None) -> Any:
    """p₀ by the configured rule (init_mixture_proportions, natural, temperature, unimax's budget)."""
    m = run.mixing
    return resolve_proportions(
        m.mixture_sample_rule,
        train.domain_sizes,
        m.init_mixture_proportions,
        temperature=m.mixture_temperature,
        budget=None if max_steps is None else float(max_steps * batch_size),
        max_epochs=m.unimax_max_epochs,
    )


def _check_heldout_rows(
    algorithm: DomainAlgorithm, names: list[str], heldout: dict[str, MixtureDataset] | None
) -> None:
    """One error naming every domain with fewer held-out rows than the algorithm's providers need."""
    need = max([provider_needs(s.name).heldout_rows for s in algorithm.provider_specs(algorithm.params)], default=0)
    if not need:
        return
    # e.g. a variance needs two rows: with fewer the algorithm would keep its initial weights unseen
    short = [
        f"{n} ({len(heldout[n]) if heldout and n in heldout else 0})"
        for n in names
        if not heldout or n not in heldout or len(heldout[n]) < need
    ]
    if short:
        raise ConfigError(
            f"val_size: {algorithm.name} needs at least {need} held-out rows per domain; these "
            f"domains have fewer: {', '.join(short)}; raise val_size"
        )


def build_model(run: RunConfig, tokenizer: Any) -> Any:
    """The model: a local pretrained directory, its config with fresh weights (``train_from_scratch``)
    or a from-scratch ``model_config``; nothing is downloaded."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = run.model.model_name_or_path
    if path is not None and run.model.train_from_scratch:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
    elif path is not None:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    else:
        model = AutoModelForCausalLM.from_config(scratch_config(run.model.model_config or {}, tokenizer))
    if run.data.packed_attention == "document":
        # transformers builds the per-document mask from restarting position ids only without a KV
        # cache (training needs none)
        model.config.use_cache = False
    return with_lora(model, run.model) if run.model.finetuning_type == "lora" else model


def training_arguments(run: RunConfig) -> Any:
    """TrainingArguments from the config. Made before the data is read: under torchrun it sets up
    the process group, so one process can build the tokenization cache while the others wait."""
    from transformers import TrainingArguments

    t = dict(run.training)
    t.pop("resume_from_checkpoint", None)
    return TrainingArguments(**t)


def derive_max_steps(args: Any, run: RunConfig, num_train_rows: int) -> None:
    """``max_steps`` from ``num_train_epochs`` when unset (a mixture stream has no epochs of its own)."""
    if args.max_steps is None or args.max_steps <= 0:
        steps = math.ceil(
            args.num_train_epochs * num_train_rows / global_batch_size(run.training, world_size=args.world_size)
        )
        args.max_steps = max(1, steps)
        logger.info("max_steps not set: %d steps = num_train_epochs × train rows / global batch", args.max_steps)


#: How each kind of input file a weighter declares (``SampleWeighter.input_files``) is read.
INPUT_READERS: dict[str, Callable[[str], Any]] = {"weights_cache": read_weights_cache}


def load_weighter_inputs(weighter: SampleWeighter) -> None:
    """Hand a weighter what it declares it reads from disk (IMP/DIMP: the checker cache's tables)."""
    files = weighter.input_files()
    unknown = sorted(set(files) - set(INPUT_READERS))
    if unknown:
        raise ValueError(f"{weighter.name}: no reader for input file kind(s) {unknown}; known: {sorted(INPUT_READERS)}")
    if files:
        weighter.load_inputs({kind: INPUT_READERS[kind](path) for kind, path in files.items()})
