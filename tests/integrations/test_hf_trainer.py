"""The Hugging Face Trainer integration: equivalence with the plain Trainer, metrics, resume, 2 ranks."""

import json
import os

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainerCallback

from mixflow.algorithms.registry import build_algorithm
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.schedule import UpdateSchedule
from mixflow.integrations.hf_trainer import MixflowTrainer
from mixflow.testing import run_distributed
from tests.helpers import tiny_domains, tiny_llama, tiny_training_args


def _engine(train, args, algorithm="static", log_dir=None, update_step=2):
    batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    names = train.domain_names
    algo = build_algorithm(algorithm, names, {}, init_weights=np.ones(len(names)) / len(names))
    sampler = MixtureSampler(train.domain_sizes, algo.sampling_weights, batch, seed=3)
    return StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=update_step), log_dir=log_dir)


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, indices):
        self.indices = list(indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class _PlainTrainer(Trainer):
    def __init__(self, *a, indices, **k):
        super().__init__(*a, **k)
        self._indices = indices

    def _get_train_sampler(self, train_dataset=None):
        return _ListSampler(self._indices)


class _GradRecorder(TrainerCallback):
    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        self.grads.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters() if p.grad is not None]))


def test_uniform_static_mixing_equals_plain_trainer_with_grad_accumulation(tmp_path):
    domains = tiny_domains(packed=False)  # variable lengths: padding and -100 labels are exercised
    train = MixtureDataset(domains)
    collator = DomainCollator(pad_token_id=0)
    args = tiny_training_args(tmp_path / "mix")
    engine = _engine(train, args)
    # The exact index stream the mixflow run will consume, from an identical sampler.
    twin = MixtureSampler(train.domain_sizes, engine.sampler.weights, engine.sampler.batch_size, seed=3)
    stream = iter(twin)
    indices = [next(stream) for _ in range(args.max_steps * engine.sampler.batch_size)]

    rec_mix, rec_plain = _GradRecorder(), _GradRecorder()
    model_mix = tiny_llama(seed=1)
    t_mix = MixflowTrainer(
        model=model_mix, args=args, train_dataset=train, data_collator=collator, engine=engine, callbacks=[rec_mix]
    )
    t_mix.train()
    model_plain = tiny_llama(seed=1)

    def plain_collator(features):  # the plain Trainer never sees domain ids
        batch = collator(features)
        del batch["domain_ids"]
        return batch

    t_plain = _PlainTrainer(
        model=model_plain,
        args=tiny_training_args(tmp_path / "plain", remove_unused_columns=False),
        train_dataset=train,
        data_collator=plain_collator,
        indices=indices,
        callbacks=[rec_plain],
    )
    t_plain.train()

    assert len(rec_mix.grads) == len(rec_plain.grads) == args.max_steps
    for g_mix, g_plain in zip(rec_mix.grads, rec_plain.grads):
        assert torch.allclose(g_mix, g_plain, rtol=1e-5, atol=1e-7)
    losses_mix = [h["loss"] for h in t_mix.state.log_history if "loss" in h]
    losses_plain = [h["loss"] for h in t_plain.state.log_history if "loss" in h]
    assert np.allclose(losses_mix, losses_plain, rtol=1e-5)
    for p, q in zip(model_mix.parameters(), model_plain.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_per_domain_metrics_reach_the_log_history(tmp_path):
    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path, max_steps=2)
    engine = _engine(train, args, log_dir=tmp_path, update_step=1)
    trainer = MixflowTrainer(
        model=tiny_llama(), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=engine
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for name in train.domain_names:
        assert all(f"mix/weight/{name}" in h for h in logs)
        assert any(f"mix/loss/{name}" in h for h in logs)
    lines = (tmp_path / "static_weights.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]


def test_domain_ids_survive_remove_unused_columns(tmp_path):
    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path, max_steps=1, remove_unused_columns=True)
    trainer = MixflowTrainer(
        model=tiny_llama(), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=_engine(train, args)
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert "domain_ids" in batch and batch["domain_ids"].shape == (4,)


def test_wrong_sampler_batch_size_is_an_error(tmp_path):
    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path)
    engine = _engine(train, tiny_training_args(tmp_path, gradient_accumulation_steps=1))
    with pytest.raises(ValueError, match="sampler batch_size: expected"):
        MixflowTrainer(
            model=tiny_llama(), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=engine
        )


class _BatchRecorder(TrainerCallback):
    """Records the rows each optimizer step trained on (through the trainer's compute_loss)."""


class _RecordingTrainer(MixflowTrainer):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen.append((self.state.global_step, inputs["input_ids"].tolist()))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def _train_run(out, max_steps, resume=None, save_steps=3, world_size=1):
    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(
        out,
        max_steps=max_steps,
        save_strategy="steps",
        save_steps=save_steps,
        gradient_accumulation_steps=1,
        per_device_train_batch_size=4 // world_size,
    )
    engine = _engine(train, args, algorithm="test_follow_loss", log_dir=out, update_step=2)
    trainer = _RecordingTrainer(
        model=tiny_llama(seed=5), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=engine
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, engine


def test_resume_reproduces_batches_and_weight_trajectory(tmp_path):
    import tests.helpers  # noqa: F401  (registers test_follow_loss)

    full, full_engine = _train_run(tmp_path / "full", max_steps=6)
    _train_run(tmp_path / "cut", max_steps=3)
    resumed, resumed_engine = _train_run(tmp_path / "cut", max_steps=6, resume=str(tmp_path / "cut" / "checkpoint-3"))

    after = [b for b in full.seen if b[0] >= 3]
    assert resumed.seen == after
    assert np.allclose(full_engine.algorithm.sampling_weights, resumed_engine.algorithm.sampling_weights)
    full_log = [json.loads(x) for x in (tmp_path / "full" / "test_follow_loss_weights.jsonl").read_text().splitlines()]
    cut_log = [json.loads(x) for x in (tmp_path / "cut" / "test_follow_loss_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in cut_log] == [r["step"] for r in full_log] == [2, 4, 6]
    for a, b in zip(full_log, cut_log):
        assert np.allclose(a["sampling_weights"], b["sampling_weights"])
    # the weights did move, so the comparison above is not trivially true
    assert not np.allclose(full_log[-1]["sampling_weights"], np.ones(3) / 3)


def test_resume_from_a_non_mixflow_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.raises(FileNotFoundError, match="mixflow_state.json"):
        _train_run(tmp_path, max_steps=2, resume=str(tmp_path / "checkpoint-1"))


def _two_rank_run(rank, world_size, out):
    import tests.helpers  # noqa: F401

    full, engine = _train_run(os.path.join(out, "full"), max_steps=4, world_size=world_size, save_steps=2)
    rows = [r for _, batch in full.seen for r in batch]
    torch.save(
        {"rows": rows, "weights": engine.algorithm.sampling_weights.tolist(), "steps": [s for s, _ in full.seen]},
        os.path.join(out, f"rank{rank}.pt"),
    )
    torch.distributed.barrier()
    resumed, resumed_engine = _train_run(
        os.path.join(out, "full"),
        max_steps=4,
        world_size=world_size,
        save_steps=2,
        resume=os.path.join(out, "full", "checkpoint-2"),
    )
    assert resumed.seen == [b for b in full.seen if b[0] >= 2]
    assert np.allclose(resumed_engine.algorithm.sampling_weights, engine.algorithm.sampling_weights)


@pytest.mark.distributed
def test_two_ranks_hold_identical_weights_and_disjoint_slices(tmp_path):
    import tests.helpers  # noqa: F401

    run_distributed(_two_rank_run, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["steps"] == r1["steps"]
    assert np.allclose(r0["weights"], r1["weights"])
    assert not np.allclose(r0["weights"], np.ones(3) / 3)
    # Per step, the two ranks' rows are disjoint slices of one global batch: together they equal the
    # global batch a single-process sampler plans.
    train = MixtureDataset(tiny_domains())
    single = MixtureSampler(train.domain_sizes, np.ones(3) / 3, 4, seed=3)
    first = next(single.iter_batches()).tolist()
    as_rows = {tuple(train[i]["input_ids"].tolist()) for i in first}
    step0 = [tuple(r) for r in r0["rows"][:2]] + [tuple(r) for r in r1["rows"][:2]]
    assert set(step0) == as_rows


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(tmp_path):
    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path, max_steps=20, save_strategy="steps", save_steps=1, save_total_limit=None)
    model = tiny_llama()
    calls = {"n": 0}

    def poison(module, inputs, output):  # from the 3rd optimizer step on (2 micro-batches each), NaN logits
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 4 else output

    model.lm_head.register_forward_hook(poison)
    trainer = MixflowTrainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DomainCollator(0),
        engine=_engine(train, args),
        max_nonfinite_steps=3,
    )
    trainer.train()
    assert trainer.state.global_step == 5  # steps 3, 4, 5 were non-finite: stop after the third
    assert trainer.callback.last_finite_step == 2
    assert "3 consecutive steps with a non-finite loss (steps 3-5)" in trainer.callback.stopped
    kept = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert kept == ["checkpoint-1", "checkpoint-2"]  # no checkpoint of the diverged model
    from mixflow.recipes.train import health_report

    report = health_report(trainer)  # what the results file says about it, not a silent mean
    assert report["nonfinite_steps"] == 3 and report["first_nonfinite_step"] == 3
    assert "train_loss averages the finite ones only" in report["train_loss_note"]


def test_a_non_finite_gradient_under_a_finite_loss_never_replaces_a_good_checkpoint(tmp_path, caplog):
    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path, max_steps=20, save_strategy="steps", save_steps=1, save_total_limit=1)
    model = tiny_llama()
    calls = {"n": 0}

    def poison(grad):  # the 3rd optimizer step's gradient (2 micro-batches each) is NaN; its loss was finite
        calls["n"] += 1
        return grad * float("nan") if calls["n"] in (5, 6) else grad

    model.lm_head.weight.register_hook(poison)
    trainer = MixflowTrainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DomainCollator(0),
        engine=_engine(train, args),
        max_nonfinite_steps=3,
    )
    with caplog.at_level("WARNING", logger="mixflow"):
        trainer.train()
    assert "step 3: the model holds non-finite weights after its update" in caplog.text
    assert trainer.callback.stopped and trainer.state.global_step == 5  # step 3's weights, then two NaN losses
    kept = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert kept == ["checkpoint-2"]  # the finite one survives rotation
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "checkpoint-2" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_without_a_terminal_progress_is_log_lines_not_bars(tmp_path, caplog, capsys):
    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path, max_steps=4, disable_tqdm=False)  # pytest's stderr is not a terminal
    trainer = MixflowTrainer(
        model=tiny_llama(), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=_engine(train, args)
    )
    with caplog.at_level("INFO", logger="mixflow.progress"):
        trainer.train()
    assert "train: 4/4 steps (100%)" in caplog.text
    assert "it/s]" not in capsys.readouterr().err  # no tqdm bar was drawn


def test_a_collapsed_model_is_reported_once(tmp_path, caplog):
    import math

    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path, max_steps=4)
    trainer = MixflowTrainer(
        model=tiny_llama(), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=_engine(train, args)
    )
    uniform = math.log(trainer.model.config.vocab_size)
    with caplog.at_level("WARNING", logger="mixflow"):
        trainer.log({"loss": uniform, "grad_norm": 0.0})  # then a log that learns again: the count restarts
        trainer.log({"loss": uniform - 1.0, "grad_norm": 0.5})
        for _ in range(6):
            trainer.log({"loss": uniform + 1e-4, "grad_norm": 0.0})
    assert caplog.text.count("collapsed to the uniform distribution") == 1 and trainer.collapsed_at == 0


def _fake_checkpoint(out, step, complete=True, state="{}"):
    path = out / f"checkpoint-{step}"
    path.mkdir()
    (path / "mixflow_state.json").write_text("{}")
    if complete:
        (path / "trainer_state.json").write_text(state)
    return path


def test_rotation_counts_complete_checkpoints_only_and_removes_broken_ones_first(tmp_path, monkeypatch):
    from mixflow.integrations import checkpoints as module

    for step, complete, state in ((1, True, "{}"), (2, False, ""), (3, True, "{}"), (4, True, ""), (10, True, "{}")):
        _fake_checkpoint(tmp_path, step, complete, state)
    # a half-written checkpoint-2, an empty trainer_state.json in checkpoint-4: neither counts, both go first
    removed = module.rotate_complete_checkpoints(str(tmp_path), 2, protected={str(tmp_path / "checkpoint-1")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-10", "checkpoint-3"]
    assert [os.path.basename(p) for p in removed] == ["checkpoint-2", "checkpoint-4"]
    # a kill in the middle of a deletion leaves no half-deleted checkpoint-*: the next rotation finishes it
    _fake_checkpoint(tmp_path, 11)

    def killed(path, *args, **kwargs):
        raise _Killed

    monkeypatch.setattr(module.shutil, "rmtree", killed)
    with pytest.raises(_Killed):
        module.rotate_complete_checkpoints(str(tmp_path), 1)
    assert module.newest_complete_checkpoint(str(tmp_path)).endswith("checkpoint-11")
    assert not (tmp_path / "checkpoint-1").exists() and (tmp_path / ".deleting-checkpoint-1").is_dir()
    monkeypatch.undo()
    module.rotate_complete_checkpoints(str(tmp_path), 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-11"]


class _Killed(BaseException):
    """Stands for the process being killed (not an Exception, so nothing catches it)."""


@pytest.mark.parametrize("point", ["engine state", "optimizer", "trainer state", "rotation"])
def test_a_kill_at_any_point_of_a_save_leaves_a_complete_checkpoint_to_resume(tmp_path, monkeypatch, point):
    import transformers.trainer as hf_trainer_module
    from transformers import Trainer, TrainerState

    from mixflow.integrations.hf_trainer import newest_complete_checkpoint

    train = MixtureDataset(tiny_domains())
    args = tiny_training_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=1, save_total_limit=1)

    def kill_at_step_3(original):
        def wrapper(*a, **k):
            if engine.last_step == 3:  # during the save of step 3's checkpoint
                raise _Killed(point)
            return original(*a, **k)

        return wrapper

    engine = _engine(train, args, log_dir=tmp_path)
    targets = {
        "engine state": (StepEngine, "save"),
        "optimizer": (Trainer, "_save_optimizer_and_scheduler"),
        "trainer state": (TrainerState, "save_to_json"),
        "rotation": (hf_trainer_module, "rotate_checkpoints"),
    }
    owner, name = targets[point]
    with monkeypatch.context() as m:
        m.setattr(owner, name, kill_at_step_3(getattr(owner, name)))
        trainer = MixflowTrainer(
            model=tiny_llama(), args=args, train_dataset=train, data_collator=DomainCollator(0), engine=engine
        )
        with pytest.raises(_Killed):
            trainer.train()
    expected = "checkpoint-3" if point == "rotation" else "checkpoint-2"  # rotation runs only after a whole save
    assert newest_complete_checkpoint(str(tmp_path)).endswith(expected)
    resumed = MixflowTrainer(
        model=tiny_llama(),
        args=args,
        train_dataset=train,
        data_collator=DomainCollator(0),
        engine=_engine(train, args, log_dir=tmp_path),
    )
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4 and resumed.engine.last_step == 4


def test_per_domain_evaluation_bars_are_labelled_with_their_domain(tmp_path, monkeypatch):
    import sys

    from transformers.trainer_callback import ProgressCallback

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on a terminal only

    from mixflow.integrations.hf_trainer import DomainProgressCallback

    domains = tiny_domains()
    train = MixtureDataset(domains)
    val = MixtureDataset(domains, split="val")
    evals = {name: val.single_domain(d) for d, name in enumerate(val.domain_names)}
    args = tiny_training_args(tmp_path, max_steps=1, disable_tqdm=False, per_device_eval_batch_size=2)
    trainer = MixflowTrainer(
        model=tiny_llama(),
        args=args,
        train_dataset=train,
        eval_dataset=evals,
        data_collator=DomainCollator(0),
        engine=_engine(train, args),
    )
    bars = [c for c in trainer.callback_handler.callbacks if isinstance(c, ProgressCallback)]
    assert len(bars) == 1 and isinstance(bars[0], DomainProgressCallback)
    seen, callback = [], bars[0]
    step = callback.on_prediction_step

    def record(*a, **k):  # this instance's hook, observed
        step(*a, **k)
        seen.append(callback.prediction_bar.desc.rstrip(": "))

    callback.on_prediction_step = record
    trainer.evaluate()
    assert set(seen) == {f"eval {name}" for name in val.domain_names}
