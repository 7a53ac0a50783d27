"""Build everything a :class:`~mixflow.config.RunConfig` describes and train it (``mixflow train``)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from mixflow.algorithms.registry import build_algorithm, build_weighter
from mixflow.config.load import domain_names, resolve_components
from mixflow.config.schema import RunConfig
from mixflow.data.classification import split_seed
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.packing import TokenizedDomain, tokenize_domain
from mixflow.data.proportions import resolve_proportions
from mixflow.data.sampler import MixtureSampler
from mixflow.data.sources import DomainSource, sources_from_dataset_info
from mixflow.data.tokenizer import ByteTokenizer, load_tokenizer
from mixflow.jsonlog import write_json_atomic
from mixflow.mixer import Mixer, UpdateSchedule
from mixflow.models import scratch_config
from mixflow.providers import ProviderContext

logger = logging.getLogger("mixflow")


@dataclass
class PreparedData:
    """Tokenized domains, as datasets, plus the tokenizer that made them."""

    tokenizer: Any
    domains: list[TokenizedDomain]
    train: MixtureDataset
    val: dict[str, MixtureDataset]


def domain_sources(run: RunConfig) -> list[DomainSource]:
    """The configured domains as :class:`DomainSource` objects, in order."""
    if run.data.domains is not None:
        return [DomainSource(name=d.name, path=d.path, text_field=d.text_field) for d in run.data.domains]
    return sources_from_dataset_info(run.data.dataset_dir, domain_names(run))


def choose_tokenizer(run: RunConfig) -> Any:
    """The configured tokenizer; default: the model directory's when it has one, else the byte tokenizer."""
    if run.data.tokenizer is not None:
        return load_tokenizer(run.data.tokenizer)
    path = run.model.model_name_or_path
    if path is not None and any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "mixflow_tokenizer.json")):
        return load_tokenizer(path)
    return ByteTokenizer()


def prepare_data(run: RunConfig, progress: bool = True) -> PreparedData:
    """Read and tokenize every domain; split held-out rows per domain."""
    tokenizer = choose_tokenizer(run)
    seed = split_seed(run)
    val_size: float | int = run.data.val_size if run.data.val_size < 1 else int(run.data.val_size)
    domains = [
        tokenize_domain(
            source,
            tokenizer,
            run.data.cutoff_len,
            packing=run.data.packing,
            val_size=val_size,
            seed=seed,
            max_documents=run.data.max_samples,
            progress=progress,
        )
        for source in domain_sources(run)
    ]
    train = MixtureDataset(domains, split="train")
    val: dict[str, MixtureDataset] = {}
    if any(d.num_val for d in domains):
        full_val = MixtureDataset(domains, split="val")
        val = {d.name: full_val.single_domain(i) for i, d in enumerate(domains) if d.num_val}
    return PreparedData(tokenizer, domains, train, val)


def global_batch_size(training: dict[str, Any], world_size: int) -> int:
    per_device = int(training.get("per_device_train_batch_size", 8))
    return per_device * world_size * int(training.get("gradient_accumulation_steps", 1))


def build_mixer(
    run: RunConfig,
    train: MixtureDataset,
    batch_size: int,
    seed: int,
    heldout: dict[str, MixtureDataset] | None = None,
    collator: Any = None,
) -> Mixer:
    """Sampler, algorithm and weighter as configured, at their initial weights. ``heldout`` and
    ``collator`` reach statistic providers that evaluate held-out losses."""
    m = run.mixing
    algorithm_cfg, weighter_cfg = resolve_components(run)
    init = resolve_proportions(
        m.mixture_sample_rule, train.domain_sizes, m.init_mixture_proportions, temperature=m.mixture_temperature
    )
    names = list(train.domain_names)
    algorithm = build_algorithm(algorithm_cfg.name, names, algorithm_cfg.params, init_weights=init, prior=m.domain_prior)
    weighter = build_weighter(weighter_cfg.name, names, weighter_cfg.params) if weighter_cfg is not None else None
    sampler = MixtureSampler(
        train.domain_sizes, algorithm.sampling_weights, batch_size, seed=seed, on_exhausted=m.on_exhausted
    )
    schedule = UpdateSchedule(m.warmup_step, m.update_step, m.update_times)
    context = ProviderContext(
        domain_names=names,
        heldout=heldout or {},
        collator=collator,
        eval_batch_size=int(run.training.get("per_device_eval_batch_size", 8)),
        task=run.data.task,
    )
    return Mixer(sampler, algorithm, weighter, schedule, log_dir=run.training["output_dir"], provider_context=context,
                 shift_labels=run.data.task != "classification")  # a classifier's labels are not shifted


def build_model(run: RunConfig, tokenizer: Any) -> Any:
    """The model: a local pretrained directory or a from-scratch config (nothing is downloaded)."""
    from transformers import AutoModelForCausalLM

    if run.model.model_name_or_path is not None:
        return AutoModelForCausalLM.from_pretrained(run.model.model_name_or_path, local_files_only=True)
    return AutoModelForCausalLM.from_config(scratch_config(run.model.model_config or {}, tokenizer))


def training_arguments(run: RunConfig, num_train_rows: int) -> Any:
    """TrainingArguments from the config; ``max_steps`` derived from ``num_train_epochs`` when unset
    (a mixture stream has no epochs of its own)."""
    from transformers import TrainingArguments

    t = dict(run.training)
    t.pop("resume_from_checkpoint", None)
    args = TrainingArguments(**t)
    if args.max_steps is None or args.max_steps <= 0:
        steps = math.ceil(args.num_train_epochs * num_train_rows / global_batch_size(t, args.world_size))
        args.max_steps = max(1, steps)
        logger.info("max_steps not set: %d steps = num_train_epochs × train rows / global batch", args.max_steps)
    return args


def run_training(run: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Train as configured; returns the final metrics (also written to ``<output_dir>/mixflow_results.json``)."""
    from mixflow.integrations.hf_trainer import MixflowTrainer

    classification = run.data.task == "classification"
    if classification:  # labelled rows, a sequence classifier, loss and accuracy per evaluated set
        from mixflow.checkers import verify_weights_cache
        from mixflow.data.classification import (
            ClassificationCollator,
            accuracy_metrics,
            build_classifier,
            prepare_classification_data,
        )

        verify_weights_cache(run)  # a stale IMP/DIMP cache is an error before any data is tokenized
        data = prepare_classification_data(run, progress=progress)
    else:
        data = prepare_data(run, progress=progress)
    args = training_arguments(run, len(data.train))
    batch = global_batch_size(run.training, args.world_size)
    pad = data.tokenizer.pad_token_id if data.tokenizer.pad_token_id is not None else data.tokenizer.eos_token_id
    collator = ClassificationCollator(pad) if classification else DomainCollator(pad)
    mixer = build_mixer(run, data.train, batch, seed=args.seed, heldout=data.val, collator=collator)
    # A from-scratch model's initial weights must not depend on the process: seed before building it,
    # as the Trainer does only later (the same seed the Trainer uses).
    from transformers import set_seed

    set_seed(args.seed)
    model = build_classifier(run, data.tokenizer, data.vocabulary) if classification else build_model(run, data.tokenizer)
    eval_sets = data.evaluation if classification else data.val
    extra: dict[str, Any] = {}
    if classification:
        args.prediction_loss_only = False  # accuracy needs the logits
        extra["compute_metrics"] = accuracy_metrics
    trainer = MixflowTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=eval_sets or None,
        data_collator=collator,
        mixer=mixer,
        **extra,
    )
    result = trainer.train(resume_from_checkpoint=run.training.get("resume_from_checkpoint"))
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json with the whole log history, for `mixflow plot`
    if trainer.is_world_process_zero() and hasattr(data.tokenizer, "save_pretrained"):
        data.tokenizer.save_pretrained(args.output_dir)
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "steps": trainer.state.global_step}
    if eval_sets:
        evaluation = trainer.evaluate()
        metrics["val_loss"] = {
            name: evaluation[f"eval_{name}_loss"] for name in eval_sets if f"eval_{name}_loss" in evaluation
        }
        if classification:
            metrics["val_accuracy"] = {
                name: evaluation[f"eval_{name}_accuracy"] for name in eval_sets if f"eval_{name}_accuracy" in evaluation
            }
    metrics["final_sampling_weights"] = dict(zip(mixer.domain_names, mixer.algorithm.sampling_weights.tolist()))
    if trainer.is_world_process_zero():
        write_json_atomic(Path(args.output_dir) / "mixflow_results.json", metrics)
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """A per-domain table of validation loss and final sampling weight."""
    if "val_accuracy" in metrics:  # classification: loss and accuracy per evaluated set
        from mixflow.data.classification import format_classification_table

        return format_classification_table(metrics)
    weights = metrics.get("final_sampling_weights", {})
    val = metrics.get("val_loss", {})
    names = list(weights) or list(val)
    width = max([len("domain"), *(len(n) for n in names)])
    lines = [f"{'domain':<{width}}  {'val loss':>9}  {'val ppl':>9}  {'weight':>7}"]
    for name in names:
        loss = val.get(name)
        loss_s = f"{loss:9.4f}" if loss is not None else f"{'-':>9}"
        ppl_s = f"{math.exp(min(loss, 50)):9.2f}" if loss is not None else f"{'-':>9}"
        lines.append(f"{name:<{width}}  {loss_s}  {ppl_s}  {weights.get(name, float('nan')):7.4f}")
    return "\n".join(lines)


def read_results(output_dir: str | Path) -> dict[str, Any]:
    with open(Path(output_dir) / "mixflow_results.json", encoding="utf-8") as f:
        return json.load(f)


__all__ = ["PreparedData", "build_mixer", "build_model", "prepare_data", "run_training", "format_table"]
