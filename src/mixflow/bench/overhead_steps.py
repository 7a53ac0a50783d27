"""The ``overhead`` benchmark's step timing: a ``MixflowTrainer`` and a plain ``transformers.Trainer``
each hold their own copy of the same model (the demo's 4-layer, 128-wide Llama, untied head) and
train on the same batches, one step each in turn (A B A B ...), timing CPU time per step: the
Trainer's own ``training_step`` (forward, loss, backward), the optimizer step, and for mixflow the
engine's step end; the plain step is also timed with the algorithm's inherent extra work (DoReMi's
reference forward, FGLS/ERMA's held-out pass).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: (component, params, the example's update_step, the baseline's extra work)
ALGORITHMS: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "static": ("static", {}, 25, ""),
    "loss weighter": ("loss", {}, 25, ""),
    "odm": ("odm", {}, 1, ""),
    "doremi": ("doremi", {}, 5, "reference"),
    "fgls": ("fgls", {}, 10, "heldout"),
    "erma": ("erma", {}, 10, "heldout"),
    "pike": ("pike", {}, 10, ""),
    "va": ("va", {}, 10, ""),
}
# B = 12: PiKE and VA keep min_samples = 2 rows of each of the K = 4 domains and still have room to move
K, SEQ, PER_DEVICE = 4, 128, 12


def _model(vocab: int, seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _data(vocab: int, rows: int, k: int = K) -> tuple[Any, dict[str, Any]]:
    """(train dataset, held-out datasets per domain) of random tokens, ``k`` domains."""
    from mixflow.data.dataset import MixtureDataset
    from mixflow.data.packing import TokenizedDomain
    from mixflow.data.rows import as_token_rows

    rng = np.random.default_rng(0)
    domains = [
        TokenizedDomain(
            f"d{d}",
            train=as_token_rows(rng.integers(1, vocab, size=(rows, SEQ)).astype(np.int32)),
            val=as_token_rows(rng.integers(1, vocab, size=(32, SEQ)).astype(np.int32)),
        )
        for d in range(k)
    ]
    val = MixtureDataset(domains, split="val")
    return MixtureDataset(domains), {d.name: val.single_domain(i) for i, d in enumerate(domains)}


def _training_args(workdir: Path) -> Any:
    """The ``TrainingArguments`` every trainer of a :class:`Pair` shares (CPU, no saving, no reports)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=PER_DEVICE,
        max_steps=10**6,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-3,
        disable_tqdm=True,
    )


class Pair:
    """A plain Trainer and a MixflowTrainer on copies of one model, stepping on the same batches."""

    def __init__(
        self,
        algorithm: str,
        update_step: int,
        vocab: int,
        workdir: Path,
        k: int = K,
        spec: tuple[str, dict[str, Any]] | None = None,
        log: bool = False,
    ) -> None:
        """``spec``: (component, params) instead of ``ALGORITHMS[algorithm]``'s; ``log``: the engine
        writes its weights log (and summary) into ``workdir``, as a run does."""
        from transformers import Trainer

        from mixflow.data.dataset import DomainCollator
        from mixflow.integrations.hf_trainer import MixflowTrainer

        name, params, _, self.extra = ALGORITHMS[algorithm] if spec is None else (*spec, 0, "")
        self.k = k
        self.train, self.heldout = _data(vocab, 256 if k <= 16 else 64, k)
        self.collator = DomainCollator(0)
        names = self.train.domain_names
        args = _training_args(workdir)
        self.reference = None
        if name == "doremi":
            self.reference = _model(vocab, seed=1)
            self.reference.save_pretrained(workdir / "reference")
            params = {"reference_model_path": str(workdir / "reference")}
        sampler, self.engine = self._mixflow_engine(name, names, params, update_step, workdir / "log" if log else None)
        self.update_step = update_step
        self.plain = Trainer(model=_model(vocab, 0), args=args, train_dataset=self.train, data_collator=self.collator)
        self.mix = MixflowTrainer(
            model=_model(vocab, 0), args=args, train_dataset=self.train, data_collator=self.collator, engine=self.engine
        )
        # PiKE and VA are also timed against mixflow's own static path: what their statistics cost
        self.static = self.static_engine = None
        if name in ("pike", "va"):
            self.static, self.static_engine, self.static_plan = self._static_path(names, vocab, args, update_step)
        self._prepare()
        self.batches = iter(
            torch.utils.data.DataLoader(self.train, batch_size=PER_DEVICE, sampler=sampler, collate_fn=self.collator)
        )

    def _mixflow_engine(
        self, name: str, names: Sequence[str], params: dict[str, Any], update_step: int, log_dir: Path | None
    ) -> tuple[Any, Any]:
        """(the sampler, the engine) of the mixflow side: ``name``'s algorithm (or the loss weighter)."""
        from mixflow.algorithms.registry import build_algorithm, build_weighter
        from mixflow.data.sampler import MixtureSampler
        from mixflow.engine.engine import StepEngine
        from mixflow.engine.schedule import UpdateSchedule
        from mixflow.providers.base import ProviderContext

        weighter = build_weighter(name, names, params) if name == "loss" else None
        algo = build_algorithm(
            "static" if name == "loss" else name, names, {} if name == "loss" else params, batch_size=PER_DEVICE
        )
        sampler = MixtureSampler(self.train.domain_sizes, algo.sampling_weights, PER_DEVICE, seed=0)
        context = ProviderContext(list(names), heldout=self.heldout, collator=self.collator, eval_batch_size=32)
        engine = StepEngine(
            sampler,
            algo,
            weighter,
            UpdateSchedule(update_step=update_step),
            provider_context=context,
            log_dir=log_dir,
        )
        return sampler, engine

    def _static_path(self, names: Sequence[str], vocab: int, args: Any, update_step: int) -> tuple[Any, Any, Any]:
        """(trainer, engine, batch plan) of mixflow's own static path, on another copy of the model."""
        from mixflow.algorithms.registry import build_algorithm
        from mixflow.data.sampler import MixtureSampler
        from mixflow.engine.engine import StepEngine
        from mixflow.engine.schedule import UpdateSchedule
        from mixflow.integrations.hf_trainer import MixflowTrainer

        s_algo = build_algorithm("static", names, {}, batch_size=PER_DEVICE)
        s_sampler = MixtureSampler(self.train.domain_sizes, s_algo.sampling_weights, PER_DEVICE, seed=0)
        static_engine = StepEngine(s_sampler, s_algo, None, UpdateSchedule(update_step=update_step))
        static = MixflowTrainer(
            model=_model(vocab, 0),
            args=args,
            train_dataset=self.train,
            data_collator=self.collator,
            engine=static_engine,
        )
        return static, static_engine, s_sampler.iter_batches()

    def _prepare(self) -> None:
        """Gives every trainer its optimizer and puts its model in training mode (a reference in eval mode)."""
        for trainer in (self.plain, self.mix, self.static):
            if trainer is None:
                continue
            trainer.create_optimizer()
            assert trainer.model is not None, "every trainer here is built with a model"
            trainer.model.train()
        if self.extra == "reference":
            assert self.reference is not None, "the reference extra is DoReMi's, which loads its reference model"
            self.reference.eval()

    def step(self, g: int) -> tuple[float, float, float, float | None]:
        """CPU seconds of (plain, plain + inherent extra, mixflow, mixflow static or None) for global batch ``g``."""
        from mixflow.data.keys import MIXFLOW_KEYS

        batch = next(self.batches)
        plain_inputs = {k: v for k, v in batch.items() if k not in MIXFLOW_KEYS}
        items = int((batch["labels"][:, 1:] != -100).sum())
        t0 = time.process_time()
        self._train_step(self.plain, plain_inputs, items)
        t1 = time.process_time()
        self._extra(plain_inputs, g)
        t2 = time.process_time()
        self.mix.state.global_step = g
        self._train_step(self.mix, batch, items)
        self.engine.end_step(g + 1, model=self.mix.model)
        t3 = time.process_time()
        if self.static is None or self.static_engine is None:
            return t1 - t0, t2 - t0, t3 - t2, None
        next(self.static_plan)  # the static engine plans the batch it is handed (the same rows)
        t4 = time.process_time()
        self.static.state.global_step = g
        self._train_step(self.static, batch, items)
        self.static_engine.end_step(g + 1, model=self.static.model)
        return t1 - t0, t2 - t0, t3 - t2, time.process_time() - t4

    @staticmethod
    def _train_step(trainer: Any, inputs: dict[str, Any], items: int) -> None:
        trainer.training_step(trainer.model, dict(inputs), torch.tensor(items))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    def _extra(self, inputs: dict[str, Any], g: int) -> None:
        """The inherent cost an algorithm adds to the plain step: a reference forward, a held-out pass."""
        if self.extra == "reference":
            assert self.reference is not None, "the reference extra is DoReMi's, which loads its reference model"
            with torch.no_grad():
                self.reference(**{k: v for k, v in inputs.items() if k != "labels"})
        elif self.extra == "heldout" and (g + 1) % self.update_step == 0:
            from mixflow.providers.base import UpdateContext
            from mixflow.providers.heldout_loss import HeldoutLoss

            # the algorithm's own held-out pass (its window of rows_per_update rows), on the plain model
            mine = next(p for p in self.engine.providers if isinstance(p, HeldoutLoss))
            provider = HeldoutLoss(mine.datasets, mine.collator, mine.batch_size, mine.task, mine.rows_per_update)
            provider.update_statistics(
                UpdateContext(self.plain.model, g + 1, self.k, update_index=(g + 1) // self.update_step - 1)
            )


def step_ratios(
    algorithm: str, update_step: int, vocab: int, pairs: int, warmup: int = 2, **options: Any
) -> dict[str, list[float]]:
    """Per-step ratios mixflow / plain and mixflow / (plain + inherent cost), interleaved (``options``:
    :class:`Pair`'s domain count, component and weights log)."""
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(algorithm, update_step, vocab, Path(tmp), **options)
        plain, baseline, mix, static = [], [], [], []
        for g in range(warmup + pairs):
            a, b, c, d = pair.step(g)
            if g >= warmup:
                plain.append(a)
                baseline.append(b)
                mix.append(c)
                if d is not None:
                    static.append(d)
    # ratios of sums over update windows: an update step's cost is shared by its window
    window = max(1, update_step)
    chunks = [slice(i, i + window) for i in range(0, len(mix) - window + 1, window)] or [slice(0, len(mix))]
    out = {
        "vs plain": [sum(mix[c]) / sum(plain[c]) for c in chunks],
        "vs plain + inherent": [sum(mix[c]) / sum(baseline[c]) for c in chunks],
    }
    if static:
        out["vs mixflow static"] = [sum(mix[c]) / sum(static[c]) for c in chunks]
    return out
