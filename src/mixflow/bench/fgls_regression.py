"""``fgls-regression``: One-shot FGLS on the paper's two-domain linear regression (arXiv 2511.06913).

Two domains with the same inputs x ~ N(0, I_d) and label noise σ² = (1, 10). The estimation error
‖θ̂ − θ*‖² is reported in units of d/n. Methods: uniform OLS (w = 1), the GLS oracle (w ∝ 1/σ²,
known), and One-shot FGLS (w from the held-out residuals, learned during the run), each full-batch
(gradient descent on the whole training set) and mini-batch (SGD on batches drawn by the real
``MixtureSampler`` and weighted by the real ``StepEngine``, iterate averaging over the second half).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import DomainStats, heldout_stats
from mixflow.bench.base import BenchContext, BenchResult, Row, register_benchmark
from mixflow.bench.heldout import HeldoutLosses
from mixflow.bench.stats import against_value, interval_text
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.loss.objective import weighted_loss
from mixflow.loss.per_sample import SampleLosses

SIGMA2 = (1.0, 10.0)
NAMES = ["low_noise", "high_noise"]


class Problem:
    """One draw of the regression: training and held-out sets per domain."""

    def __init__(self, seed: int, d: int, n: int, m: int) -> None:
        rng = np.random.default_rng(seed)
        self.d, self.n = d, n
        self.theta_star = rng.normal(size=d)

        def draw(rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
            out = []
            for s in SIGMA2:
                x = rng.normal(size=(rows, d))
                out.append((x, x @ self.theta_star + rng.normal(scale=np.sqrt(s), size=rows)))
            return out

        self.train, self.heldout = draw(n), draw(m)

    def error(self, theta: np.ndarray) -> float:
        """‖θ − θ*‖² in units of d/n."""
        return float(np.sum((theta - self.theta_star) ** 2) / (self.d / self.n))

    def residuals(self, theta: np.ndarray) -> list[np.ndarray]:
        return [(x @ theta - y) ** 2 for x, y in self.heldout]


def weighted_least_squares(p: Problem, w: np.ndarray) -> np.ndarray:
    """argmin Σ_i w_i Σ_j (x·θ − y)² in closed form (uniform OLS for w = 1, GLS for w ∝ 1/σ²)."""
    a = sum(wi * x.T @ x for wi, (x, _) in zip(w, p.train))
    b = sum(wi * x.T @ y for wi, (x, y) in zip(w, p.train))
    return np.linalg.solve(a, b)


def fgls_full_batch(p: Problem, steps: int, lr: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on Σ π_i w_i mean_i (x·θ − y)², w updated after every step (defaults)."""
    algo = build_algorithm("fgls", NAMES, {})
    theta = np.zeros(p.d)
    for t in range(steps):
        w = algo.loss_weights
        theta -= lr * sum(0.5 * wi * 2 * x.T @ (x @ theta - y) / p.n for wi, (x, y) in zip(w, p.train))
        window = DomainStats.zeros(2)
        window.extras.update(heldout_stats(p.residuals(theta)))
        algo.apply_update(window, t + 1)
    return theta, algo.loss_weights


def sgd(p: Problem, method: str, steps: int, batch: int, seed: int, lr: float = 0.05) -> tuple[float, np.ndarray]:
    """Mini-batch SGD through MixtureSampler + StepEngine; (error of the averaged iterate, final w)."""
    algo_name = "fgls" if method == "fgls" else "static"
    algo = build_algorithm(algo_name, NAMES, {}, init_weights=[0.5, 0.5])
    theta = torch.zeros(p.d, dtype=torch.float64, requires_grad=True)
    sampler = MixtureSampler([p.n, p.n], algo.sampling_weights, batch, seed=seed)
    providers = [HeldoutLosses(lambda: p.residuals(theta.detach().numpy()))] if method == "fgls" else []
    engine = StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=1), providers=providers)
    fixed = {"uniform": np.ones(2), "oracle": (1 / np.array(SIGMA2)) / np.mean(1 / np.array(SIGMA2))}.get(method)
    # global row r of the sampler is row r of the domains' training sets concatenated in order
    x_all = torch.as_tensor(np.concatenate([x for x, _ in p.train]))
    y_all = torch.as_tensor(np.concatenate([y for _, y in p.train]))
    batches, average = sampler.iter_batches(), torch.zeros(p.d, dtype=torch.float64)
    for step in range(steps):
        rows = torch.as_tensor(next(batches))
        ids = torch.as_tensor(sampler.domain_ids(rows.numpy()))
        residual = (x_all[rows] @ theta - y_all[rows]) ** 2
        losses = SampleLosses(
            residual, torch.ones_like(ids), residual[:, None], torch.ones(len(ids), 1, dtype=torch.bool)
        )
        c = engine.coefficients(losses, MicroBatch(ids, batch_index=step))  # FGLS: q_d / p_d from the engine
        if fixed is not None:
            c = torch.as_tensor(fixed)[ids]
        loss = weighted_loss(losses, c, None)
        (grad,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * grad
            if step >= steps // 2:
                average += theta.detach() / (steps - steps // 2)
        engine.end_step(step + 1)
    w = engine.algorithm.loss_weights if method == "fgls" else fixed
    return p.error(average.numpy()), np.asarray(w)


def _sizes(ctx: BenchContext) -> dict[str, Any]:
    if ctx.tiny:
        return {"d": 10, "n": 200, "m": 100, "draws": 2, "gd_steps": 40, "sgd_steps": 60, "batch": 32}
    if ctx.quick:
        return {"d": 10, "n": 200, "m": 100, "draws": 5, "gd_steps": 200, "sgd_steps": 600, "batch": 32}
    return {"d": 10, "n": 200, "m": 100, "draws": 10, "gd_steps": 200, "sgd_steps": 3000, "batch": 32}


def _measure(ctx: BenchContext, s: dict[str, Any]) -> dict[tuple[str, str], list[float]]:
    """Per seed, the full-batch and mini-batch errors of uniform OLS, the GLS oracle and One-shot FGLS
    (each the mean over ``draws`` data sets), and FGLS's learned w₁/w₂."""
    cols: dict[tuple[str, str], list[float]] = {}

    def add(method: str, metric: str, value: float) -> None:
        cols.setdefault((method, metric), []).append(value)

    for seed in range(ctx.seeds):
        ctx.log("fgls-regression: seed %d/%d", seed + 1, ctx.seeds)
        problems = [Problem(1000 * seed + r, s["d"], s["n"], s["m"]) for r in range(s["draws"])]
        oracle_w = 1 / np.array(SIGMA2)
        add(
            "uniform OLS",
            "full-batch error (d/n)",
            float(np.mean([p.error(weighted_least_squares(p, np.ones(2))) for p in problems])),
        )
        add(
            "GLS oracle",
            "full-batch error (d/n)",
            float(np.mean([p.error(weighted_least_squares(p, oracle_w)) for p in problems])),
        )
        runs = [fgls_full_batch(p, s["gd_steps"]) for p in problems]
        add(
            "One-shot FGLS", "full-batch error (d/n)", float(np.mean([p.error(t) for p, (t, _) in zip(problems, runs)]))
        )
        add("One-shot FGLS", "full-batch w1/w2", float(np.mean([w[0] / w[1] for _, w in runs])))
        for method, label in (("uniform", "uniform OLS"), ("oracle", "GLS oracle"), ("fgls", "One-shot FGLS")):
            out = [sgd(p, method, s["sgd_steps"], s["batch"], seed) for p in problems[:2]]
            add(label, "mini-batch error (d/n)", float(np.mean([e for e, _ in out])))
            if method == "fgls":
                add(label, "mini-batch w1/w2", float(np.mean([w[0] / w[1] for _, w in out])))
    return cols


@register_benchmark(
    "fgls-regression",
    claim="One-shot FGLS ends within 1.2× of the GLS oracle's estimation error and learns w₁/w₂ ≈ 10 (σ² = 1, 10)",
    source="Salmani et al. 2025, arXiv 2511.06913, One-shot FGLS",
)
def run(ctx: BenchContext) -> BenchResult:
    s = _sizes(ctx)
    cols = _measure(ctx, s)
    rows = [Row(m, metric, v) for (m, metric), v in cols.items()]
    result = BenchResult(
        setting={**s, "sigma2": list(SIGMA2), "fgls params": "defaults"}, rows=rows, holds=None, verdict=""
    )
    full = result.compare(
        "One-shot FGLS", "GLS oracle", "full-batch error (d/n)", "lower", scale="ratio", claim_range=(None, 1.2)
    )
    mini = result.compare(
        "One-shot FGLS", "GLS oracle", "mini-batch error (d/n)", "lower", scale="ratio", claim_range=(None, 1.2)
    )
    result.compare("uniform OLS", "GLS oracle", "full-batch error (d/n)", "lower", scale="ratio")
    result.compare("One-shot FGLS", "uniform OLS", "full-batch error (d/n)", "lower", scale="ratio")
    ratio = against_value(
        "One-shot FGLS",
        result.values("One-shot FGLS", "full-batch w1/w2"),
        10.0,
        "full-batch w1/w2",
        "higher",
        claim_range=(-2.0, 2.0),
    )
    result.comparisons.append(ratio)
    result.judge()
    result.verdict = (
        f"FGLS/oracle error {interval_text(full)} full-batch, {interval_text(mini)} mini-batch (claim: the whole interval ≤ 1.2×); "
        f"learned w₁/w₂ = 10 {ratio.interval[0]:+.2f} [{ratio.interval[1]:+.2f}, {ratio.interval[2]:+.2f}] (claim: within ±2 of 10)."
    )
    result.notes.append(
        "each seed's value is the mean over `draws` independent data sets (one draw's error is a skewed, noisy quantity)"
    )
    return result
