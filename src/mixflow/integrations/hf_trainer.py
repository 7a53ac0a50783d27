"""Hugging Face Trainer integration.

:class:`MixflowTrainer` overrides only what mixing needs: the train sampler (the step engine's
:class:`~mixflow.data.sampler.MixtureSampler`), ``compute_loss`` (per-sample losses from the one
training forward, weighted by the step engine) and ``log`` (per-domain metrics). A
:class:`MixflowCallback` runs the step engine's step-end bookkeeping; ``save_model`` writes the
engine's state into every checkpoint. The training loop itself is the Trainer's.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from mixflow.data.keys import MIXFLOW_KEYS
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.errors import ConfigError, ResumeError
from mixflow.integrations.checkpoints import (
    checkpoint_step,
    newest_complete_checkpoint,
    rotate_complete_checkpoints,
)
from mixflow.utils import distributed
from mixflow.utils.distributed import is_sharded_tensor
from mixflow.utils.progress import LogProgress

logger = logging.getLogger(__name__)


class DomainProgressCallback(ProgressCallback):
    """The Trainer's progress bars, with each per-domain evaluation bar labelled with its domain
    (the evaluation set of one domain is a one-domain :class:`MixtureDataset`)."""

    def on_prediction_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        eval_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        first = self.prediction_bar is None
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)
        names = getattr(getattr(eval_dataloader, "dataset", None), "domain_names", None)
        if first and self.prediction_bar is not None and names and len(names) == 1:
            self.prediction_bar.set_description(f"eval {names[0]}")


class LogProgressCallback(TrainerCallback):
    """Instead of progress bars when stderr is not a terminal (a cluster log, nohup, CI): one log line
    every few seconds with the step, its share of ``max_steps`` and the speed (:mod:`mixflow.utils.progress`)."""

    def __init__(self) -> None:
        self.bar: LogProgress | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.bar = LogProgress(total=state.max_steps, desc="train", unit="steps")
        self.bar.n = float(state.global_step)  # a resumed run starts where its checkpoint was

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MixflowCallback(TrainerCallback):
    """Runs :meth:`StepEngine.end_step` after every optimizer step and saves the step engine's state with each checkpoint."""

    def __init__(self, engine: StepEngine, max_nonfinite_steps: int = 10, save_total_limit: int | None = None) -> None:
        self.engine = engine
        self.save_total_limit = save_total_limit
        self.resuming = False
        self.max_nonfinite_steps = max_nonfinite_steps
        #: Why training stopped early (a diverged run), or None.
        self.stopped: str | None = None
        #: The last step whose loss was finite.
        self.last_finite_step = 0
        #: Every step whose loss (or updated weights) was not finite, and the first of them.
        self.nonfinite_total = 0
        self.first_nonfinite_step: int | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        # The Trainer has loaded the checkpoint's model, optimizer and scheduler by now: the resume
        # is sure to proceed, so the weights log may be rewritten.
        if self.resuming:
            self.engine.resume_log()
            self.resuming = False
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        # world rank 0 only: it writes the engine's state, so only its checkpoints can be judged complete
        # (with save_on_each_node the other nodes keep theirs)
        if state.is_world_process_zero:
            best = {os.path.normpath(state.best_model_checkpoint)} if state.best_model_checkpoint else set()
            rotate_complete_checkpoints(str(args.output_dir), self.save_total_limit, best)
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.engine.end_step(state.global_step, model=kwargs.get("model"))
        if control.should_save and not self.engine.nonfinite_steps and not weights_are_finite(kwargs.get("model")):
            # a finite loss, then a non-finite gradient: the step's update broke the weights; this
            # checkpoint would be the newest (and with save_total_limit the only) one
            self.engine.nonfinite_steps += 1
            logger.warning(
                "step %d: the model holds non-finite weights after its update (a non-finite gradient); "
                "this checkpoint is not saved",
                state.global_step,
            )
        bad = self.engine.nonfinite_steps
        if not bad:
            self.last_finite_step = state.global_step
            return control
        self.nonfinite_total += 1
        if self.first_nonfinite_step is None:
            self.first_nonfinite_step = state.global_step
        control.should_save = False  # a checkpoint of a diverging model would replace a good one
        if self.max_nonfinite_steps and bad >= self.max_nonfinite_steps:
            self.stopped = (
                f"training diverged: {bad} consecutive steps with a non-finite loss (steps "
                f"{state.global_step - bad + 1}-{state.global_step}); the last finite step was {self.last_finite_step}"
            )
            logger.error("%s", self.stopped)
            control.should_training_stop = True
        return control


def read_ahead(workers: int | None, prefetch_factor: int | None) -> int:
    """Batches past the current one that are planned before a step ends: accelerate's own one, plus
    each DataLoader worker's prefetch (``prefetch_factor``, 2 when unset)."""
    workers = int(workers or 0)
    return 1 + (workers * int(prefetch_factor or 2) if workers > 0 else 0)


def weights_are_finite(model: Any) -> bool:
    """Whether every parameter of ``model`` is finite (on every rank: shards differ under FSDP)."""
    if model is None:
        return True
    bad = 0.0
    for p in model.parameters():
        local = p.to_local() if is_sharded_tensor(p) else p
        bad += float((~torch.isfinite(local.detach())).sum())
    return float(distributed.all_reduce_sum(torch.tensor([bad], dtype=torch.float64))[0]) == 0.0


class MixflowTrainer(Trainer):
    """A :class:`transformers.Trainer` that trains on a domain mixture driven by a :class:`StepEngine`.

    The train dataset must yield the domain index of each row under ``domain_ids`` (see
    :class:`~mixflow.data.dataset.MixtureDataset`); the ids travel with every batch and are removed
    before the model's forward. The step engine's sampler must be built with the *global* batch size
    ``per_device_train_batch_size × world_size × gradient_accumulation_steps`` and rank 0 / world
    size 1: it yields the global stream, which accelerate shards across ranks so that every rank
    gets its own slice of the same global batch.
    """

    def __init__(self, *args: Any, engine: StepEngine, max_nonfinite_steps: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine
        a = self.args
        expected = a.per_device_train_batch_size * a.world_size * a.gradient_accumulation_steps
        if engine.sampler.batch_size != expected:
            raise ConfigError(
                f"sampler batch_size: expected per_device_train_batch_size × world_size × "
                f"gradient_accumulation_steps = {expected}, got {engine.sampler.batch_size}"
            )
        if engine.sampler.world_size != 1:
            raise ConfigError("sampler world_size: expected 1 (accelerate shards the global stream across ranks)")
        ahead = read_ahead(a.dataloader_num_workers, a.dataloader_prefetch_factor)
        if engine.plan_horizon is not None and engine.plan_horizon < ahead:
            raise ConfigError(
                f"mixture_plan_horizon: the DataLoader reads {ahead} batches ahead (1 + dataloader_num_workers "
                f"{a.dataloader_num_workers} × prefetch {a.dataloader_prefetch_factor or 2}), past the horizon "
                f"{engine.plan_horizon} at which new weights apply; set mixture_plan_horizon: {ahead} or more (the same "
                "value gives the same weight trajectory for any number of workers)"
            )
        if a.max_steps is None or a.max_steps <= 0:
            raise ConfigError(
                "max_steps: expected a positive number of optimizer steps (a mixture stream has no epochs)"
            )
        if not a.ignore_data_skip:
            # The sampler restores its own position from the checkpoint; letting the Trainer also
            # replay the skipped batches would skip them twice.
            a.ignore_data_skip = True
            logger.info("ignore_data_skip set to true (the mixture sampler restores its own position)")
        # Rotation counts complete checkpoints only (the Trainer's own orders by mtime and counts a
        # half-written or half-deleted one, then removes the complete checkpoint): the callback rotates.
        self.save_total_limit, a.save_total_limit = a.save_total_limit, None
        engine.attach_model(self.model)  # forward hooks survive accelerate's wrapping (fully_shard is in place)
        self.callback = MixflowCallback(engine, max_nonfinite_steps, self.save_total_limit)
        self.add_callback(self.callback)
        if self.pop_callback(ProgressCallback) is not None:  # the same bars, evaluation ones labelled,
            # or log lines where nobody watches a terminal
            self.add_callback(DomainProgressCallback if sys.stderr.isatty() else LogProgressCallback)

    # ---- data -------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler:
        return self.engine.sampler

    def _set_signature_columns_if_needed(self) -> None:
        # `remove_unused_columns` keeps only the model's forward arguments; the domain ids must
        # survive it to reach compute_loss (which removes them before the forward).
        super()._set_signature_columns_if_needed()
        assert self._signature_columns is not None, "the Trainer sets the signature columns above"
        for key in MIXFLOW_KEYS:
            if key not in self._signature_columns:
                self._signature_columns.append(key)

    # ---- loss -------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs = dict(inputs)
        if "labels" not in inputs:
            raise ValueError("batch: expected 'labels' (mixflow computes the loss from the logits and the labels)")
        if not model.training:  # evaluation: a plain token-mean loss, never weighted
            labels = inputs.pop("labels")
            outputs = model(**{k: v for k, v in inputs.items() if k not in MIXFLOW_KEYS})
            loss = self.engine.eval_loss(_logits(outputs), labels)
            return (loss, outputs) if return_outputs else loss
        # Mirror the model's own loss normalisation so that uniform mixing is the plain Trainer:
        # normalised by `num_items_in_batch` when the Trainer passes it, else a micro-batch mean.
        if not self.model_accepts_loss_kwargs:
            num_items_in_batch = None
        batch = MicroBatch.take(inputs, self.state.global_step, model, num_items_in_batch)
        self.engine.before_forward(batch)
        outputs = model(**batch.inputs)
        loss = self.engine.training_loss(_logits(outputs), batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts all ranks' tokens while DDP averages gradients over ranks.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    # ---- checkpoints, logs and resume ----------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The model, and inside a checkpoint the engine's state too: both are written before the
        Trainer's optimizer state and ``trainer_state.json`` (the last file of a complete checkpoint)
        and before rotation removes older checkpoints, so a kill at any point of a save leaves a
        complete checkpoint to resume from."""
        super().save_model(output_dir, _internal_call=_internal_call)
        is_checkpoint = output_dir is not None and os.path.basename(os.path.normpath(output_dir)).startswith(
            PREFIX_CHECKPOINT_DIR
        )
        if _internal_call and is_checkpoint and output_dir is not None and self.is_world_process_zero():
            # on_step_end ran first: the engine's state is at the boundary of batch `global_step`
            if self.engine.last_step != self.state.global_step:
                raise RuntimeError(
                    f"checkpoint at step {self.state.global_step}: the engine ended step {self.engine.last_step}"
                )
            self.engine.save(output_dir)

    # ---- logs and resume ----------------------------------------------------------------
    #: Consecutive training logs at the uniform distribution's loss with a zero gradient, and the step
    #: a collapse was first reported at (None: never).
    _flat_logs: int = 0
    collapsed_at: int | None = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log, not an evaluation one
            logs = {**logs, **self.engine.metrics()}
            self._watch_collapse(float(logs["loss"]), logs.get("grad_norm"))
        super().log(logs, start_time)

    def _watch_collapse(self, loss: float, grad_norm: float | None) -> None:
        """Warn once when the model sits at the uniform distribution (loss ln V, no gradient) for
        COLLAPSE_LOGS logs in a row: a run that finishes rc 0 having learnt nothing (e.g. after a huge
        learning rate) is said so."""
        vocab = getattr(getattr(self.model, "config", None), "vocab_size", None)
        if not vocab or grad_norm is None:
            return
        flat = abs(loss - math.log(vocab)) <= 0.01 * math.log(vocab) and float(grad_norm) < 1e-8
        self._flat_logs = self._flat_logs + 1 if flat else 0
        if self._flat_logs == COLLAPSE_LOGS and self.collapsed_at is None:
            self.collapsed_at = self.state.global_step
            logger.warning(
                "step %d: the model has collapsed to the uniform distribution (loss %.4f ≈ ln V = %.4f, "
                "gradient norm 0 over %d logs); it learns nothing from here (learning rate too high?)",
                self.state.global_step,
                loss,
                math.log(vocab),
                COLLAPSE_LOGS,
            )

    #: The optimizer step the last ``train`` call resumed from (0: a fresh run).
    resumed_from_step: int = 0
    #: The checkpoint's step when the last ``train`` call found the run already complete (else None).
    already_complete: int | None = None

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        self.resumed_from_step = 0
        self.already_complete = None
        if resume_from_checkpoint is True:
            resume_from_checkpoint = newest_complete_checkpoint(str(self.args.output_dir))
        if resume_from_checkpoint:
            assert self.model is not None, "the Trainer is built with the model"
            check_model_shapes(self.model, resume_from_checkpoint)
            self.engine.load(resume_from_checkpoint, rewrite_log=False)
            step = checkpoint_step(resume_from_checkpoint)
            if step >= self.args.max_steps:
                # The Trainer would enter its loop and take one more step before it checks max_steps:
                # a finished run resumes to "already complete" and changes nothing.
                self.already_complete = step
                logger.warning(
                    "resume_from_checkpoint: %s is at step %d of max_steps %d: the run is already "
                    "complete; nothing is trained or written",
                    resume_from_checkpoint,
                    step,
                    self.args.max_steps,
                )
                return TrainOutput(step, float("nan"), {})
            self.callback.resuming = True
            self.resumed_from_step = self.engine.last_step
            logger.info("restored the engine state from %s (step %d)", resume_from_checkpoint, self.engine.last_step)
        return super().train(resume_from_checkpoint, *args, **kwargs)


def check_model_shapes(model: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """One error line when the checkpoint's weights do not fit the model (e.g. another model_config),
    before anything of the run is touched."""
    path = os.path.join(checkpoint, "model.safetensors")
    if not os.path.isfile(path):
        return  # sharded or other formats: the Trainer's own loading checks them
    from safetensors import safe_open

    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    with safe_open(path, framework="pt") as f:
        saved_keys = set(f.keys())
        # a tied head is one tensor in the file; other differences mean another architecture
        extra, missing = sorted(saved_keys - set(own)), sorted(set(own) - saved_keys - {"lm_head.weight"})
        if extra or missing:
            raise ResumeError(
                f"resume_from_checkpoint: {checkpoint} holds another model than this run's (only in the checkpoint: "
                f"{', '.join(extra[:3]) or '-'}{' ...' if len(extra) > 3 else ''}; only in this run: "
                f"{', '.join(missing[:3]) or '-'}{' ...' if len(missing) > 3 else ''}): the model config changed since "
                "it was saved (num_hidden_layers, tie_word_embeddings, ...)"
            )
        for key in f.keys():
            saved = tuple(f.get_slice(key).get_shape())
            if key in own and own[key] != saved:
                raise ResumeError(
                    f"resume_from_checkpoint: {checkpoint} holds {key} of shape {saved}, this run's model has "
                    f"{own[key]} (the model config differs from the run that saved it)"
                )


#: Training logs in a row at the uniform loss with a zero gradient before a collapse is reported.
COLLAPSE_LOGS = 5


def _logits(outputs: Any) -> torch.Tensor:
    """The logits of a model's outputs (a ModelOutput / dict, or a tuple with the logits first)."""
    return outputs["logits"] if isinstance(outputs, dict) else outputs[0]
