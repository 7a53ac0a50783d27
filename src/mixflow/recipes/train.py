"""Train what a :class:`~mixflow.config.RunConfig` describes (``mixflow train``)."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.registry import lookup
from mixflow.config.checks import previous_run_files
from mixflow.config.components import global_batch_size
from mixflow.config.schema import RunConfig
from mixflow.data.classification import ClassificationCollator
from mixflow.data.dataset import DomainCollator
from mixflow.data.tokenizer import ByteTokenizer
from mixflow.engine.engine import StepEngine
from mixflow.errors import ConfigError, MixflowError
from mixflow.providers.base import provider_needs
from mixflow.recipes.build import build_engine, build_model, derive_max_steps, prepare_data, training_arguments
from mixflow.recipes.classification import (
    accuracy_metrics,
    build_classifier,
    format_classification_table,
    prepare_classification_data,
)
from mixflow.recipes.inputs import domain_sources
from mixflow.recipes.run_record import write_domains
from mixflow.recipes.weights_cache import verify_weights_cache
from mixflow.utils import distributed
from mixflow.utils.jsonlog import read_json, write_json_atomic

logger = logging.getLogger(__name__)


def _final_metrics(
    trainer: Any, engine: StepEngine, training_loss: float, eval_sets: dict[str, Any], classification: bool
) -> dict[str, Any]:
    """The run's results: steps, the whole run's training loss, evaluation, final p, epochs, health."""
    metrics: dict[str, Any] = {"steps": trainer.state.global_step}
    metrics.update(
        whole_run_train_loss(
            trainer.state.log_history, trainer.resumed_from_step, training_loss, trainer.state.global_step
        )
    )
    if eval_sets:
        evaluation = _last_step_evaluation(trainer, eval_sets) or trainer.evaluate()
        metrics.update(_evaluation(evaluation, eval_sets, classification))
    metrics.update(
        final_sampling_weights=dict(zip(engine.domain_names, engine.algorithm.sampling_weights.tolist())),
        **engine.epochs.results(trainer.state.global_step),
    )
    metrics.update(health_report(trainer))
    return metrics


def run_training(run: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Train as configured; returns the final metrics (also written to ``<output_dir>/mixflow_results.json``)."""
    from transformers import set_seed

    from mixflow.integrations.hf_trainer import MixflowTrainer

    problem = distributed.launcher_problem()
    if problem is not None:  # before anything is read, built or written
        raise ConfigError(problem)
    classification = run.data.task == "classification"
    args = _arguments(run, progress)
    # The main process reads (and, where needed, builds) the tokenization cache first; the others then
    # read the same files. Only it honours overwrite_cache, so the entry is rebuilt once per launch.
    with args.main_process_first(local=False, desc="tokenization cache"):
        data, collator = _prepare(run, progress, overwrite_cache=run.data.overwrite_cache and args.process_index == 0)
    # only once the data has read without an error: a failed run leaves the previous one in place
    if run.safety.overwrite_output_dir and not run.training.get("resume_from_checkpoint"):
        move_previous_run(Path(run.training["output_dir"]))
    _preflight(run, data.tokenizer)
    derive_max_steps(args, run, len(data.train))
    batch = global_batch_size(run.training, world_size=args.world_size)
    engine = build_engine(run, data.train, batch, args.seed, data.val, collator, max_steps=args.max_steps)
    if distributed.is_main_process():
        logger.info("%s", run_summary(run, data.domains, args, engine, data.tokenizer))
        write_domains(args.output_dir, domain_sources(run), data.domains, engine.algorithm.domain_weights.tolist())
    # A from-scratch model's initial weights must not depend on the process: seed before building it,
    # as the Trainer does only later (the same seed the Trainer uses).
    set_seed(args.seed)
    model = (
        build_classifier(run, data.tokenizer, data.vocabulary) if classification else build_model(run, data.tokenizer)
    )
    eval_sets = data.evaluation  # the held-out rows and eval_dataset's sets (data.val: the algorithms')
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
        engine=engine,
        max_nonfinite_steps=run.safety.max_nonfinite_steps,
        **extra,
    )
    result = trainer.train(resume_from_checkpoint=run.training.get("resume_from_checkpoint"))
    if trainer.already_complete is not None:  # nothing trained: the finished run's own results, untouched
        previous = Path(args.output_dir) / "mixflow_results.json"
        earlier = read_json(previous) if previous.is_file() else {"steps": trainer.already_complete}
        return {**earlier, "already_complete": True}
    _stop_if_broken(trainer, args.output_dir)
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json with the whole log history, for `mixflow plot`
    if trainer.is_world_process_zero() and hasattr(data.tokenizer, "save_pretrained"):
        data.tokenizer.save_pretrained(args.output_dir)
    metrics = _final_metrics(trainer, engine, result.training_loss, eval_sets, classification)
    if trainer.is_world_process_zero():
        write_json_atomic(Path(args.output_dir) / "mixflow_results.json", metrics)
    return metrics


def _preflight(run: RunConfig, tokenizer: Any) -> None:
    """The providers' checks against the data before any model loads (e.g. a reference model must
    read the proxy's token ids)."""
    if run.algorithm is not None:
        for spec in lookup(run.algorithm.name, "algorithm", "component_name").provider_specs(run.algorithm.params):
            if (preflight := provider_needs(spec.name).preflight) is not None:
                preflight(spec.params, tokenizer)


def _arguments(run: RunConfig, progress: bool) -> Any:
    """The TrainingArguments, with ``progress=False`` (--quiet) silencing the Trainer's bars too, and no
    transformers bars (saving shards) where nobody watches a terminal."""
    args = training_arguments(run)
    if not progress:
        args.disable_tqdm = True
    if not progress or not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return args


def health_report(trainer: Any) -> dict[str, Any]:
    """What went wrong without stopping the run, said in the results (and the log) rather than hidden
    in a mean: non-finite steps (the Trainer's train_loss leaves them out) and a collapse."""
    out: dict[str, Any] = {}
    callback = trainer.callback
    if callback.nonfinite_total:
        out.update(nonfinite_steps=callback.nonfinite_total, first_nonfinite_step=callback.first_nonfinite_step)
        out["train_loss_note"] = (
            f"{callback.nonfinite_total} step(s) had a non-finite loss, the first at step "
            f"{callback.first_nonfinite_step}; train_loss averages the finite ones only"
        )
        logger.warning("%s", out["train_loss_note"])
    if trainer.collapsed_at is not None:
        out["collapsed_at_step"] = trainer.collapsed_at
    return out


def _stop_if_broken(trainer: Any, output_dir: str) -> None:
    """A diverged run, or one whose final weights are not finite, stops here: no final model, the
    reason in ``mixflow_results.json`` and in the error."""
    from mixflow.integrations.hf_trainer import weights_are_finite

    if not trainer.callback.stopped and not weights_are_finite(trainer.model):
        trainer.callback.stopped = (
            f"training ended with non-finite weights (a non-finite gradient at step "
            f"{trainer.state.global_step} or before); the final model is not saved"
        )
    if trainer.callback.stopped:
        _write_stopped(trainer, output_dir)
        raise MixflowError(trainer.callback.stopped + f"; its checkpoints are in {output_dir}")


def whole_run_train_loss(
    log_history: list[dict[str, Any]], resumed_from: int, resumed_loss: float, final_step: int
) -> dict[str, Any]:
    """``train_loss`` of the whole run. The Trainer's own value after a resume averages the resumed
    part only; the steps before it come from the logged losses the checkpoint kept (each the mean
    over the steps since the previous log), so the whole run's mean is exact when the resume step
    is a logging step, and otherwise the unlogged steps before it count at the last logged mean
    (``train_loss_note`` says so)."""
    if resumed_from <= 0:
        return {"train_loss": resumed_loss}
    out: dict[str, Any] = {"train_loss_resumed_part": resumed_loss, "resumed_from_step": resumed_from}
    total, covered, last = 0.0, 0, 0.0
    for entry in log_history:
        step = int(entry.get("step", 0))
        if "loss" in entry and covered < step <= resumed_from:
            last = float(entry["loss"])
            total += last * (step - covered)
            covered = step
    if covered < resumed_from:
        out["train_loss_note"] = (
            f"steps {covered + 1}–{resumed_from} were not logged before the checkpoint; "
            "they count at the last logged loss"
        )
        total += last * (resumed_from - covered)
    out["train_loss"] = (total + resumed_loss * (final_step - resumed_from)) / max(final_step, 1)
    return out


def _tokens(rows: Any) -> int:
    return int(rows.num_tokens)  # TokenRows: from the index, without reading the tokens


def tokenizer_line(run: RunConfig, tokenizer: Any) -> str:
    """Which tokenizer the run reads its data with, and for instruction data which template."""
    name = run.data.tokenizer or (run.model.model_name_or_path if not isinstance(tokenizer, ByteTokenizer) else "byte")
    line = f"  tokenizer: {name} ({tokenizer.vocab_size} tokens)"
    if any(source.formatting is not None for source in domain_sources(run)):
        template = getattr(getattr(tokenizer, "tokenizer", None), "chat_template", None)
        line += "; instruction data rendered with " + (
            "the tokenizer's chat template" if template else "the plain template (System:/User:/Assistant:)"
        )
    return line


def run_summary(run: RunConfig, domains: list[Any], args: Any, engine: Any, tokenizer: Any = None) -> str:
    """What the run is about to do, in a few lines: the data per domain, the batch arithmetic, the
    algorithm and its schedule, the files it writes. Printed before training (a launcher that
    started one process instead of several shows here as world size 1)."""
    lines = ["run summary:", f"  {'domain':<14} {'train rows':>10} {'train tokens':>13} {'held-out rows':>13}"]
    for d in domains:
        lines.append(f"  {d.name:<14} {d.num_train:>10} {_tokens(d.train):>13} {d.num_val:>13}")
    if tokenizer is not None:
        lines.append(tokenizer_line(run, tokenizer))
    world, accum = args.world_size, args.gradient_accumulation_steps
    lines.append(
        f"  world size {world}, per-device batch {args.per_device_train_batch_size}, gradient accumulation "
        f"{accum}: global batch {engine.sampler.batch_size}; {args.max_steps} steps"
    )
    algo, schedule = engine.algorithm, engine.schedule
    params = ", ".join(f"{k}={v}" for k, v in vars(algo.params).items() if v is not None)
    described = algo.describe()
    lines.append(
        f"  algorithm {algo.name} ({algo.mode} mode)" + (":" if described else f": {params}" if params else "")
    )
    lines += [f"    {line}" for line in described or ()]
    first_p = engine.sampler.scheduled_weights(engine.last_step)  # the batch the first step trains on
    lines.append(
        f"  sampling weights at step {engine.last_step + 1}: "
        + ", ".join(f"{n} {w:.4f}" for n, w in zip(engine.domain_names, first_p))
    )
    lines.append(epochs_line(engine, first_p, args.max_steps))
    if engine.weighter is not None:
        wparams = ", ".join(f"{k}={v}" for k, v in vars(engine.weighter.params).items())
        lines.append(f"  sample weighter {engine.weighter.name}: {wparams}")
    first = schedule.first_update()
    updates = first is not None and first <= args.max_steps
    plans = type(algo).planned_sampling is not DomainAlgorithm.planned_sampling  # e.g. a schedule's stages
    still = (
        ""
        if updates
        else f"; none before max_steps {args.max_steps}" + ("" if plans else ": the weights stay as above")
    )
    if type(algo).update_due is not DomainAlgorithm.update_due:
        updates, still = True, ""
        lines.append(f"  updates: on {algo.name}'s own calendar (warmup_step and update_step do not apply)")
    else:
        lines.append(
            f"  updates: warmup_step {schedule.warmup_step}, update_step {schedule.update_step}, "
            f"update_times {schedule.update_times}{still}"
        )
    writes = [str(engine.log_path)] if (updates or plans) and engine.log_path is not None else []
    if str(getattr(args.save_strategy, "value", args.save_strategy)) != "no":
        writes.append(f"checkpoints (every {args.save_steps} steps and at the end)")
    writes.append("mixflow_results.json")
    lines.append(f"  writes {', '.join(writes)} in {args.output_dir}")
    return "\n".join(lines)


def epochs_line(engine: Any, p: Any, max_steps: int) -> str:
    """The epochs of each domain over the run if p stayed as it is, and the max_epochs caps."""
    rows = engine.sampler.batch_size * max_steps
    sizes, caps = engine.sampler.domain_sizes, engine.sampler.row_caps
    line = f"  epochs over {max_steps} steps at this p: " + ", ".join(
        f"{n} {w * rows / size:.3g}" for n, w, size in zip(engine.domain_names, p, sizes)
    )
    if caps is not None:
        line += "; max_epochs: " + ", ".join(
            f"{n} {cap / size:.3g}" for n, cap, size in zip(engine.domain_names, caps, sizes) if cap < 2**60
        )
    return line


def move_previous_run(out: Path) -> Path | None:
    """Move everything of a previous run in ``out`` (not earlier ``previous-*`` folders) into
    ``out/previous-<n>``; nothing is deleted. Only the main process moves; the others wait."""
    if not previous_run_files(out):
        return None
    target = None
    if distributed.is_main_process():
        n = 1 + max(
            [int(p.name.split("-")[1]) for p in out.glob("previous-*") if p.name.split("-")[1].isdigit()] or [0]
        )
        target = out / f"previous-{n}"
        target.mkdir()
        for entry in sorted(out.iterdir()):
            if entry != target and not entry.name.startswith("previous-"):
                entry.rename(target / entry.name)
        logger.warning("overwrite_output_dir: moved the previous run in %s to %s", out, target)
    distributed.barrier()
    return target


def _write_stopped(trainer: Any, output_dir: str) -> None:
    """``mixflow_results.json`` of a run that stopped early: why, where, and no final model."""
    if trainer.is_world_process_zero():
        trainer.save_state()
        write_json_atomic(
            Path(output_dir) / "mixflow_results.json",
            {
                "stopped": trainer.callback.stopped,
                "steps": trainer.state.global_step,
                "last_finite_step": trainer.callback.last_finite_step,
            },
        )


def _prepare(run: RunConfig, progress: bool, overwrite_cache: bool) -> tuple[Any, Any]:
    """(tokenized data, collator) for the run's task."""
    data: Any  # PreparedData or ClassificationData: the same fields where this reads them
    if run.data.task == "classification":  # labelled rows, loss and accuracy per evaluated set
        verify_weights_cache(run)  # a stale IMP/DIMP cache is an error before any data is tokenized
        data = prepare_classification_data(run, progress=progress)
    else:
        data = prepare_data(run, progress=progress, overwrite_cache=overwrite_cache)
    pad = data.tokenizer.pad_token_id if data.tokenizer.pad_token_id is not None else data.tokenizer.eos_token_id
    eos = data.tokenizer.eos_token_id if run.data.packed_attention == "document" else None
    collator = ClassificationCollator(pad) if run.data.task == "classification" else DomainCollator(pad, eos)
    return data, collator


def _last_step_evaluation(trainer: Any, eval_sets: dict[str, Any]) -> dict[str, float] | None:
    """The evaluation the Trainer logged at the run's last step, when it evaluated every set there
    (a step-wise evaluation strategy ends with one): the same model, so evaluating again would only
    repeat it. None when it did not, or when the Trainer reloads its best checkpoint at the end."""
    if getattr(trainer.args, "load_best_model_at_end", False):
        return None
    step = trainer.state.global_step
    logged: dict[str, float] = {}
    for entry in trainer.state.log_history:
        if entry.get("step") == step:
            logged.update({k: v for k, v in entry.items() if k.startswith("eval_")})
    return logged if all(f"eval_{name}_loss" in logged for name in eval_sets) else None


def _evaluation(evaluation: dict[str, float], eval_sets: dict[str, Any], classification: bool) -> dict[str, Any]:
    """``val_loss`` (and ``val_accuracy``) per evaluated set from the Trainer's evaluation."""
    out = {
        "val_loss": {name: evaluation[f"eval_{name}_loss"] for name in eval_sets if f"eval_{name}_loss" in evaluation}
    }
    if classification:
        out["val_accuracy"] = {
            name: evaluation[f"eval_{name}_accuracy"] for name in eval_sets if f"eval_{name}_accuracy" in evaluation
        }
    return out


def format_table(metrics: dict[str, Any]) -> str:
    """A per-domain table of validation loss and final sampling weight."""
    if "val_accuracy" in metrics:  # classification: loss and accuracy per evaluated set
        return format_classification_table(metrics)
    weights = metrics.get("final_sampling_weights", {})
    val = metrics.get("val_loss", {})
    epochs, left = metrics.get("epochs", {}), metrics.get("left_the_mixture", {})
    names = list(weights) or list(val)
    width = max([len("domain"), *(len(n) for n in names)])
    lines = [f"{'domain':<{width}}  {'val loss':>9}  {'val ppl':>9}  {'weight':>7}  {'epochs':>7}"]
    for name in names:
        loss = val.get(name)
        loss_s = f"{loss:9.4f}" if loss is not None else f"{'-':>9}"
        ppl_s = f"{math.exp(min(loss, 50)):9.2f}" if loss is not None else f"{'-':>9}"
        seen = f"{epochs[name]:7.3f}" if name in epochs else f"{'-':>7}"
        note = f"  (max_epochs reached at step {left[name]})" if name in left else ""
        lines.append(f"{name:<{width}}  {loss_s}  {ppl_s}  {weights.get(name, float('nan')):7.4f}  {seen}{note}")
    return "\n".join(lines)
