"""The worked example of algorithms/README.md runs as printed, in a fresh interpreter (so its
registration stays out of this session's registry): it registers, builds from YAML-like params,
and an update moves p towards the domain with the higher loss."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "src" / "mixflow" / "algorithms" / "README.md"

CHECK = """
import numpy as np, torch
from mixflow.algorithms import DomainStats, available_algorithms, build_algorithm
assert "follow_loss" in available_algorithms()
algo = build_algorithm("follow_loss", ["a", "b"], {"eta": 1.0}, init_weights=[0.5, 0.5])
stats = DomainStats.zeros(2)
stats.token_loss_sum += torch.tensor([20.0, 10.0], dtype=torch.float64)
stats.token_count += torch.tensor([10, 10])
weights = algo.apply_update(stats, step=1)
assert algo.num_updates == 1 and np.allclose(algo.sampling_weights, weights.sampling)
assert algo.sampling_weights[0] > 0.7 and np.allclose(algo.scores, [2.0, 1.0])
try:
    build_algorithm("follow_loss", ["a", "b"], {"eta": 0}, init_weights=[0.5, 0.5])
except ValueError as err:
    assert "eta: expected a number > 0, got 0" in str(err), err
else:
    raise AssertionError("eta = 0 was accepted")
print("ok")
"""


RAMP_CHECK = """
import numpy as np
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.schedule import UpdateSchedule
algo = Ramp(["a", "b"], FollowLossParams(eta=1.0), init_weights=[0.9, 0.1])
sampler = MixtureSampler([100, 100], algo.sampling_weights, 10)
engine = StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=1000), plan_horizon=1, max_steps=20)
drawn = []
for step in range(1, 13):
    batch = next(sampler.iter_batches())
    drawn.append(sampler.planned_weights(step - 1)[0])
    engine.end_step(step)
assert np.allclose(drawn, [0.9 - 0.04 * (s - 1) for s in range(1, 12)] + [0.5]), drawn
print("ok")
"""


def test_the_ramp_example_draws_each_step_with_its_planned_p():
    text = README.read_text(encoding="utf-8")
    follow = re.search(r"## Add your own.*?```python\n(.*?)```", text, re.S).group(1)
    ramp = re.search(r"### When new weights take effect.*?```python\n(.*?)```", text, re.S).group(1)
    out = subprocess.run(
        [sys.executable, "-c", follow + ramp + RAMP_CHECK], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_worked_example_runs_as_printed():
    code = re.search(r"## Add your own.*?```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code + CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
