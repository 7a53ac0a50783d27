"""The schedule component: p at every step is the schedule's, resume across a boundary continues the
same stream, stages hand over to an algorithm and keep what it learned, bad stages are named."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from mixflow.algorithms.registry import build_algorithm
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.errors import ConfigError
from mixflow.testing import run_distributed

NAMES = ["web", "code", "math"]
P0, P1, P2 = [0.85, 0.12, 0.03], [0.75, 0.15, 0.10], [0.63, 0.24, 0.13]  # SmolLM3's three stages


def _engine(params, horizon=1, batch=20, max_steps=12, update_step=1, log_dir=None, tokens_per_step=None):
    algo = build_algorithm("schedule", NAMES, params, init_weights=np.ones(3) / 3)
    sampler = MixtureSampler([500, 400, 300], algo.sampling_weights, batch, seed=3)
    return StepEngine(
        sampler,
        algo,
        schedule=UpdateSchedule(update_step=update_step),
        plan_horizon=horizon,
        max_steps=max_steps,
        tokens_per_step=tokens_per_step,
        log_dir=log_dir,
    )


def _train(engine, first, last, trace, rank=0, world=1):
    """Steps ``first``..``last`` as a loader that reads ``plan_horizon`` batches ahead (the most the
    engine allows); each step's p and rows as drawn, into ``trace``. With ``world`` ranks each trains
    its share of every global batch (the Trainer's layout)."""
    it = engine.sampler.iter_batches()
    for step in range(first, last + 1):
        while engine.sampler.planned_batches < min(step + engine.plan_horizon, 10**9):
            next(it)
        rows = engine.sampler.planned_rows(step - 1)
        trace[step] = (engine.sampler.planned_weights(step - 1).tolist(), rows.tolist())
        ids = torch.as_tensor(engine.sampler.domain_ids(np.array_split(rows, world)[rank]))
        logits = torch.zeros(len(ids), 4, 5)
        logits[:, :, 0] = ids[:, None].float() * (1.0 + 0.1 * step)  # losses that differ by domain and step
        engine.training_loss(logits, MicroBatch(ids, torch.ones(len(ids), 4, dtype=torch.long), batch_index=step - 1))
        engine.end_step(step)
    return trace


def _expected(step, starts, props, linear=False):
    i = max(j for j, s in enumerate(starts) if s < step)
    p = np.asarray(props[i], dtype=float)
    if linear and i + 1 < len(starts):
        frac = (step - starts[i] - 1) / (starts[i + 1] - starts[i])
        p = (1 - frac) * p + frac * np.asarray(props[i + 1])
    return p / p.sum()


@pytest.mark.parametrize("horizon", [1, 3])
@pytest.mark.parametrize("interpolation", ["step", "linear"])
def test_p_at_every_step_is_the_schedules(interpolation, horizon):
    params = {
        "interpolation": interpolation,
        "stages": [{"at": 0, "proportions": P0}, {"at": 4, "proportions": P1}, {"at": 9, "proportions": P2}],
    }
    trace = _train(_engine(params, horizon=horizon), 1, 12, {})
    for step, (p, _) in trace.items():
        assert np.allclose(p, _expected(step, [0, 4, 9], [P0, P1, P2], interpolation == "linear"), atol=1e-12), step


@pytest.mark.parametrize(
    ("unit", "ats"), [("fraction", [0, 0.25, 0.75]), ("tokens", [0, 3 * 20 * 64, 9 * 20 * 64 - 5])]
)
def test_fractions_and_tokens_become_steps(unit, ats):
    params = {"unit": unit, "stages": [{"at": a, "proportions": p} for a, p in zip(ats, (P0, P1, P2))]}
    engine = _engine(params, tokens_per_step=20 * 64)
    assert engine.algorithm.starts == [0, 3, 9]  # round(0.25·12), ⌈tokens / (B·cutoff_len)⌉
    trace = _train(engine, 1, 12, {})
    assert all(np.allclose(p, _expected(s, [0, 3, 9], [P0, P1, P2])) for s, (p, _) in trace.items())


HANDOVER = {
    "stages": [
        {"at": 0, "proportions": P0},
        {"at": 4, "algorithm": {"name": "odm"}},
        {"at": 8, "proportions": "learned"},
    ]
}


def test_a_stage_hands_over_to_an_algorithm_and_the_next_keeps_what_it_learned(tmp_path):
    engine = _engine(HANDOVER, log_dir=tmp_path)
    trace = _train(engine, 1, 12, {})
    p = {s: np.asarray(v[0]) for s, v in trace.items()}
    assert all(np.allclose(p[s], P0) for s in range(1, 6))  # ODM starts at step 5 from the warm-up p
    assert not np.allclose(p[7], P0)  # its updates move p (each drawn from step s + lead)
    learned = p[8]  # the last p ODM set inside its stage (its update at step 6 lands on step 8)
    assert all(np.allclose(p[s], learned) for s in range(9, 13))  # frozen from step 9
    log = [json.loads(x) for x in (tmp_path / "schedule_weights.jsonl").read_text().splitlines()]
    assert [(r["from_step"], r["stage"]) for r in log] == [
        (s + 2, 0 if s < 3 else 1 if s < 7 else 2) for s in range(1, 13)
    ]  # an update a step
    summary = json.loads((tmp_path / "schedule_summary.json").read_text())
    assert [s["from_step"] for s in summary["stages"]] == [1, 5, 9]
    assert np.allclose(summary["stages"][2]["proportions"], learned)


@pytest.mark.parametrize("stop", [2, 4, 6, 9])
def test_resume_across_a_boundary_equals_the_uninterrupted_run(stop, tmp_path):
    whole = _train(_engine(HANDOVER, horizon=2), 1, 12, {})
    first = _engine(HANDOVER, horizon=2)
    resumed = _train(first, 1, stop, {})
    first.save(tmp_path)
    second = _engine(HANDOVER, horizon=2)
    second.load(tmp_path)
    _train(second, stop + 1, 12, resumed)
    assert resumed == whole


def _ranks(rank, world, out):
    torch.save(_train(_engine(HANDOVER), 1, 12, {}, rank, world), os.path.join(out, f"s{rank}-{world}.pt"))


@pytest.mark.distributed
def test_two_ranks_follow_the_same_schedule_as_one_process(tmp_path):
    run_distributed(_ranks, str(tmp_path))
    _ranks(0, 1, str(tmp_path))
    r0, r1, single = (torch.load(tmp_path / n, weights_only=False) for n in ("s0-2.pt", "s1-2.pt", "s0-1.pt"))
    assert r0 == r1
    assert all(np.allclose(r0[s][0], single[s][0], rtol=1e-12) for s in single)  # the ODM stage included
    assert not np.allclose(single[12][0], P0)


def test_the_weights_log_has_a_line_when_p_changes_not_every_step(tmp_path):
    params = {"stages": [{"at": 0, "proportions": P0}, {"at": 4, "proportions": P1}]}
    _train(_engine(params, update_step=100, log_dir=tmp_path), 1, 12, {})
    log = [json.loads(x) for x in (tmp_path / "schedule_weights.jsonl").read_text().splitlines()]
    assert [(r["step"], r["from_step"], r["stage"]) for r in log] == [(3, 5, 1)]  # decided lead = 2 steps ahead
    assert np.allclose(log[0]["sampling_weights"], P1)


def test_bad_stages_are_named_all_at_once():
    stages = [
        {"at": 1, "proportions": [1, 2]},
        {"at": 1, "algorithm": {"name": "doremi"}},
        {"at": 5, "proportions": "learned", "algorithm": {"name": "odm"}},
        {"at": -2, "proportions": [1, 1, 1]},
        {"at": 7, "algorithm": {"name": "odm", "params": {"alpha": 3}}},
        {"at": 8, "proportion": [1, 1, 1]},
    ]
    with pytest.raises(ConfigError) as err:
        build_algorithm("schedule", NAMES, {"stages": stages})
    lines = str(err.value).splitlines()
    assert any("stages[0].proportions: expected 3 values" in x for x in lines)
    assert any("stages[1].algorithm.name: expected an algorithm whose sampling is the objective" in x for x in lines)
    assert any("stages[2]: expected exactly one of 'proportions' and 'algorithm'" in x for x in lines)
    assert any("stages[3].at: expected a number ≥ 0" in x for x in lines)
    assert any("stages[4].algorithm.params.alpha" in x for x in lines)
    assert any("stages[5].proportion: unknown key" in x for x in lines)
    assert any("stages[0].at: expected 0" in x for x in lines)
    with pytest.raises(ConfigError, match=r"stages\[0\].proportions: 'learned' keeps the p of the stage before"):
        build_algorithm("schedule", NAMES, {"stages": [{"at": 0, "proportions": "learned"}]})
    with pytest.raises(ConfigError, match=r"stages\[1\].at: expected a fraction of max_steps in \[0, 1\)"):
        build_algorithm(
            "schedule",
            NAMES,
            {"unit": "fraction", "stages": [{"at": 0, "proportions": P0}, {"at": 2, "proportions": P1}]},
        )
    with pytest.raises(ConfigError, match=r"stages\[1\].at: 0.01 fraction is step 0"):
        _engine({"unit": "fraction", "stages": [{"at": 0, "proportions": P0}, {"at": 0.01, "proportions": P1}]})


def test_the_summary_is_rewritten_when_it_changes_not_at_every_planned_step(tmp_path, monkeypatch):
    from mixflow.engine import records

    written = []
    original = records.write_json_atomic
    monkeypatch.setattr(
        records, "write_json_atomic", lambda path, data: (written.append(data["stage"]), original(path, data))
    )
    params = {
        "interpolation": "linear",
        "stages": [{"at": 0, "proportions": P0}, {"at": 6, "proportions": P1}, {"at": 9, "proportions": P2}],
    }
    _train(_engine(params, update_step=1000, log_dir=tmp_path), 1, 12, {})
    log = (tmp_path / "schedule_weights.jsonl").read_text().splitlines()
    assert len(log) == 9  # p moved at every step of the two moving stages: a weights-log line each
    assert written == [0, 1, 2]  # the summary only when its stage changed
