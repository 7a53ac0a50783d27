"""``loss-reweighting-regression``: loss-based sample reweighting on redundant data (arXiv 2502.06733).

Linear regression, d = 20: an *informative* domain (fresh x ~ N(0, I), y = xᵀθ* + N(0, 0.5²)) and
a *redundant* one of the same size made of copies of 4 noiseless points, which the model fits
early, so their residuals go to ~0 while they keep filling half of every batch. SGD with batches
of 32 drawn by the real ``MixtureSampler`` (p = ½, ½), the per-sample weights of the ``loss``
weighter (its documented defaults, one strategy per run) through the real ``StepEngine``. The
test error ‖θ − θ*‖² is recorded at every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mixflow.algorithms.registry import build_algorithm, build_weighter
from mixflow.bench.base import BenchContext, BenchResult, Row, register_benchmark
from mixflow.bench.plots import line_plot
from mixflow.bench.stats import interval_text
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.loss.per_sample import SampleLosses

STRATEGIES = ("uniform", "linupper", "quadratic", "extremes")
D, NOISE, BATCH, LR, COPIES_OF = 20, 0.5, 32, 0.02, 4
#: The learning rates every strategy is tuned over (the same grid for each: equal tuning budget).
LR_GRID = (0.01, 0.02, 0.04, 0.08)
#: Seeds of the tuning runs (never used to score).
SELECTION_SEED = 10**6


def make_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y) of both domains concatenated (informative rows first), and θ*."""
    rng = np.random.default_rng(seed)
    theta_star = rng.normal(size=D)
    x_info = rng.normal(size=(n, D))
    y_info = x_info @ theta_star + rng.normal(scale=NOISE, size=n)
    base = rng.normal(size=(COPIES_OF, D))
    x_dup = base[np.arange(n) % COPIES_OF]
    return np.concatenate([x_info, x_dup]), np.concatenate([y_info, x_dup @ theta_star]), theta_star


def train(seed: int, strategy: str, steps: int, n: int, lr: float = LR) -> np.ndarray:
    """Test error after every step of SGD with the given weighting strategy."""
    x, y, theta_star = (torch.as_tensor(a) for a in make_data(seed, n))
    algo = build_algorithm("static", ["informative", "redundant"], {}, init_weights=[0.5, 0.5])
    weighter = build_weighter("loss", algo.domain_names, {"strategy": strategy})
    sampler = MixtureSampler([n, n], algo.sampling_weights, BATCH, seed=seed)
    engine = StepEngine(sampler, algo, weighter=weighter, schedule=UpdateSchedule(update_step=10**9))
    theta = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    batches, errors = sampler.iter_batches(), []
    for step in range(steps):
        rows = torch.as_tensor(next(batches))
        ids = torch.as_tensor(sampler.domain_ids(rows.numpy()))
        residual = (x[rows] @ theta - y[rows]) ** 2
        losses = SampleLosses(
            residual, torch.ones_like(ids), residual[:, None], torch.ones(len(ids), 1, dtype=torch.bool)
        )
        loss = engine.training_loss_from_samples(losses, MicroBatch(ids, batch_index=step))
        (grad,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * grad
        engine.end_step(step + 1)
        errors.append(float(((theta.detach() - theta_star) ** 2).sum()))
    return np.array(errors)


def _sizes(ctx: BenchContext) -> dict[str, Any]:
    if ctx.tiny:
        return {"steps": 60, "n": 512}
    return {"steps": 300 if ctx.quick else 600, "n": 2048}


def log_area(errors: np.ndarray) -> float:
    """The area under the log test-error curve per step (mean log10 error): the whole curve, every
    phase weighted alike; a diverged run is +inf."""
    logs = np.log10(np.maximum(errors, 1e-300))
    return float(np.mean(logs)) if np.all(np.isfinite(logs)) else float("inf")


def tune(strategy: str, seeds: int, steps: int, n: int) -> float:
    """The grid learning rate with the lowest mean log area on the selection seeds."""
    scores = {
        lr: np.mean([log_area(train(SELECTION_SEED + seed, strategy, steps, n, lr)) for seed in range(seeds)])
        for lr in LR_GRID
    }
    return min(scores, key=scores.__getitem__)


def _curves(ctx: BenchContext, s: dict[str, Any], tuned: dict[str, float]) -> dict[str, list[np.ndarray]]:
    """Every strategy's test-error curve on every seed, at its tuned learning rate and at ``LR``."""
    curves: dict[str, list[np.ndarray]] = {}
    for seed in range(ctx.seeds):
        ctx.log("loss-reweighting-regression: seed %d/%d", seed + 1, ctx.seeds)
        for strategy in STRATEGIES:
            curves.setdefault(f"{strategy} (tuned lr)", []).append(
                train(seed, strategy, s["steps"], s["n"], tuned[strategy])
            )
            curves.setdefault(f"{strategy} (lr {LR})", []).append(train(seed, strategy, s["steps"], s["n"], LR))
    return curves


@register_benchmark(
    "loss-reweighting-regression",
    claim="linupper reweighting, each method with its learning rate tuned on the same grid, has a lower area under "
    "the log test-error curve than uniform weighting",
    source="Sow et al. 2025, arXiv 2502.06733, loss-based sample reweighting",
    seeds=10,
)
def run(ctx: BenchContext) -> BenchResult:
    s = _sizes(ctx)
    tuned = {}
    for strategy in STRATEGIES:
        ctx.log("loss-reweighting-regression: tuning %s's learning rate over %s", strategy, list(LR_GRID))
        tuned[strategy] = tune(strategy, ctx.seeds, s["steps"], s["n"])
    curves = _curves(ctx, s, tuned)
    checkpoints = {"T/4": s["steps"] // 4, "T": s["steps"]}
    rows = [Row(method, "log10 test-error area", [log_area(c) for c in runs]) for method, runs in curves.items()]
    rows += [
        Row(method, f"test error at {label} (step {step})", [float(c[step - 1]) for c in runs])
        for method, runs in curves.items()
        for label, step in checkpoints.items()
    ]
    plot = line_plot(
        ctx.out_dir / "loss-reweighting-regression.png",
        {k: np.mean(v, axis=0) for k, v in curves.items()},
        xlabel="step",
        ylabel="test error ‖θ − θ*‖² (mean over seeds)",
        title="loss-based reweighting, redundant data",
        logy=True,
    )
    result = BenchResult(
        setting={
            **s,
            "d": D,
            "label noise sd": NOISE,
            "batch": BATCH,
            "lr grid": list(LR_GRID),
            "tuned lr": tuned,
            "redundant rows": f"copies of {COPIES_OF} noiseless points",
            "weighter": "loss, defaults",
        },
        rows=rows,
        holds=None,
        verdict="",
        plots=[plot.name],
    )
    _judge(result, s, tuned)
    result.notes.append("tuning runs use separate seeds; the area is the mean of log10 ‖θ − θ*‖² over all steps")
    return result


def _judge(result: BenchResult, s: dict[str, Any], tuned: dict[str, float]) -> None:
    """Compares linupper and the other strategies with uniform, tuned and at the same learning rate;
    sets the verdict."""
    area, final = "log10 test-error area", f"test error at T (step {s['steps']})"
    claim = result.compare("linupper (tuned lr)", "uniform (tuned lr)", area, "lower", claim_range=(None, 0.0))
    end = result.compare("linupper (tuned lr)", "uniform (tuned lr)", final, "lower", scale="ratio")
    for strategy in STRATEGIES[2:]:
        result.compare(f"{strategy} (tuned lr)", "uniform (tuned lr)", area, "lower")
    same = result.compare(f"linupper (lr {LR})", f"uniform (lr {LR})", area, "lower")
    result.compare(
        f"linupper (lr {LR})",
        f"uniform (lr {LR})",
        f"test error at T/4 (step {s['steps'] // 4})",
        "lower",
        scale="ratio",
    )
    result.judge()
    result.verdict = (
        f"tuned learning rates {tuned}; linupper − uniform log10 error area {interval_text(claim)} ({claim.verdict}; "
        f"claim: the whole interval below 0), final error {interval_text(end)} ({end.verdict}); at the same lr {LR}: "
        f"area {interval_text(same)} ({same.verdict})."
    )
