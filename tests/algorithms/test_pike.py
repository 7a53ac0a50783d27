"""PiKE and Balanced-PiKE: the properties the paper states ("PiKE"), the paper's Example 2.1, and the
plumbing (grad_stats across ranks, resume, NaN statistics, the HF Trainer)."""

import json
import logging
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mixflow.algorithms.params import build_params
from mixflow.algorithms.pike import BalancedPiKE, PiKE
from mixflow.algorithms.registry import build_algorithm
from mixflow.algorithms.statistics import DomainStats, gradient_moments
from mixflow.algorithms.weights import floor_weights
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.engine.schedule import UpdateSchedule
from mixflow.testing import run_distributed
from tests.helpers import tiny_domains, tiny_llama, tiny_training_args


def grad_stats(norm_sq, sigma2, samples=8, losses=None):
    """Window statistics whose ``grad_stats`` extras give exactly (‖∇L_k‖², σ_k²) = (norm_sq, sigma2)
    through :func:`gradient_moments` (NaN: one group only, i.e. no estimate).

    Two group means m ± δ of b samples each half: ‖m‖² = ‖∇L‖² + σ²/b and ‖δ‖² = σ²/b give
    s² = 2σ²/b, σ̂² = (b/2)·s² = σ² and ‖ĝ‖² − σ̂²/b = ‖∇L‖².
    """
    k = len(norm_sq)
    stats = DomainStats.zeros(k)
    g_sum = torch.zeros(k, 2, dtype=torch.float64)
    sq, groups = torch.zeros(k, dtype=torch.float64), torch.full((k,), 2.0, dtype=torch.float64)
    for i, (a, v) in enumerate(zip(norm_sq, sigma2)):
        if math.isnan(a):
            g_sum[i, 0], sq[i], groups[i] = 1.0, 1.0, 1.0
            continue
        mean, half = math.sqrt(a + v / samples), math.sqrt(v / samples)
        g_sum[i, 0] = 2 * mean
        sq[i] = 2 * (mean**2 + half**2)
    stats.extras.update(
        grad_sum=g_sum,
        grad_sq_sum=sq,
        grad_groups=groups,
        grad_samples=torch.full((k,), float(samples), dtype=torch.float64),
    )
    loss = np.ones(k) if losses is None else np.asarray(losses, dtype=np.float64)
    stats.token_count += 10.0
    stats.token_loss_sum += torch.as_tensor(loss * 10.0)
    return stats


def _pike(k=2, name="pike", batch=16, init=None, **params):
    # Closed-form statistics per window test the one-window rule; smoothing has its own tests.
    params.setdefault("grad_smoothing", 0.0)
    algo = build_algorithm(
        name, [f"t{i}" for i in range(k)], params, init_weights=init if init is not None else np.ones(k) / k
    )
    algo.bind(batch)
    return algo


def test_stats_helper_round_trips_through_gradient_moments():
    norm_sq, sigma2 = gradient_moments(grad_stats([0.5, 2.0, float("nan")], [3.0, 0.25, 1.0]))
    assert np.allclose(norm_sq[:2], [0.5, 2.0]) and np.allclose(sigma2[:2], [3.0, 0.25])
    assert np.isnan(norm_sq[2]) and np.isnan(sigma2[2])


# ---- Properties --------------------------------------------------------------------------------
def test_equal_noise_larger_gradient_norm_gains_weight():
    algo = _pike()
    algo.apply_update(grad_stats([4.0, 1.0], [1.0, 1.0]), step=1)
    w = algo.sampling_weights
    assert np.isclose(w.sum(), 1.0) and w[0] > 0.5 > w[1]
    # one normalised update moves log-weights by O(step_size)
    assert 0.02 < abs(math.log(w[0] / w[1])) < 0.5


def test_equal_gradient_norms_noisier_task_loses_weight():
    algo = _pike()
    algo.apply_update(grad_stats([1.0, 1.0], [1.0, 60.0]), step=1)
    w = algo.sampling_weights
    assert w[1] < 0.5 < w[0]


def test_without_the_noise_term_the_noisy_task_is_chased():
    # Task 1's gradient norm is a little larger but its per-sample gradients are far noisier.
    stats = grad_stats([1.0, 1.2], [0.5, 200.0])
    chasing = _pike(zeta2=0.0)
    chasing.apply_update(stats, step=1)
    careful = _pike()  # default zeta2
    careful.apply_update(stats, step=1)
    assert chasing.sampling_weights[1] > 0.5 > careful.sampling_weights[1]


def test_normalised_update_ignores_the_gradient_scale_and_raw_update_is_the_papers_rule():
    small, large = _pike(), _pike()
    small.apply_update(grad_stats([2.0, 1.0], [4.0, 1.0]), step=1)
    large.apply_update(grad_stats([2e6, 1e6], [4e6, 1e6]), step=1)
    assert np.allclose(small.sampling_weights, large.sampling_weights)

    raw = _pike(normalize=False, zeta1=0.3, zeta2=0.5, batch=8, min_weight=0.0, min_samples=0)
    raw.apply_update(grad_stats([2.0, 1.0], [4.0, 1.0]), step=1)
    delta = 0.3 * np.array([2.0, 1.0]) - 0.5 / (2 * 8) * np.array([4.0, 1.0])
    expected = np.exp(delta) / np.exp(delta).sum()
    assert np.allclose(raw.sampling_weights, expected)
    assert np.allclose(raw.scores, delta)


def test_task_without_estimates_keeps_its_weight():
    algo = _pike(k=3, init=[0.2, 0.3, 0.5])
    algo.apply_update(grad_stats([4.0, 1.0, float("nan")], [1.0, 1.0, 1.0]), step=1)
    w = algo.sampling_weights
    assert np.isclose(w[2], 0.5) and np.isclose(w.sum(), 1.0) and w[0] > 0.2 and np.isnan(algo.scores[2])
    # no task with an estimate at all: nothing moves
    algo.apply_update(grad_stats([float("nan")] * 3, [1.0] * 3), step=2)
    assert np.allclose(algo.sampling_weights, w)


def test_floors_keep_every_task_alive():
    algo = _pike(k=3, batch=40, min_weight=0.05, normalize=False, zeta1=50.0)
    for step in range(1, 6):
        algo.apply_update(grad_stats([1.0, 0.0, 0.0], [0.0, 0.0, 0.0]), step=step)
        w = algo.sampling_weights
        assert np.isclose(w.sum(), 1.0) and np.all(w >= 0.05 - 1e-12)
    assert np.allclose(w, [0.9, 0.05, 0.05])
    # min_samples/B is the larger floor here: 4/40 = 0.1
    algo = _pike(k=3, batch=40, min_samples=4, normalize=False, zeta1=50.0)
    algo.apply_update(grad_stats([1.0, 0.0, 0.0], [0.0, 0.0, 0.0]), step=1)
    assert np.allclose(algo.sampling_weights, [0.8, 0.1, 0.1])
    assert np.allclose(floor_weights(np.array([0.7, 0.3]), 0.5), [0.5, 0.5])


def test_balanced_pike_favours_the_higher_loss_task_relative_to_pike():
    stats = grad_stats([1.0, 1.0, 1.0], [0.5, 0.5, 0.5], losses=[1.0, 2.0, 1.5])
    plain, balanced = _pike(k=3), _pike(k=3, name="balanced_pike")
    plain.apply_update(stats, step=1)
    balanced.apply_update(stats, step=1)
    assert np.allclose(plain.sampling_weights, np.ones(3) / 3)  # equal gradient statistics: no preference
    wb = balanced.sampling_weights
    assert wb[1] > wb[2] > wb[0]
    # with unequal statistics too, the lagging task's share is larger than under PiKE
    stats = grad_stats([2.0, 1.0], [0.5, 0.5], losses=[1.0, 1.6])
    plain, balanced = _pike(), _pike(name="balanced_pike")
    plain.apply_update(stats, step=1)
    balanced.apply_update(stats, step=1)
    assert balanced.sampling_weights[1] > plain.sampling_weights[1]


# ---- Example 2.1 of the paper: two-task quadratic -----------------------------------------------
def _counts(w, batch, credit):
    # the sampler's rule, row-wise: largest-remainder rounding of w·B with the remainder carried
    c = credit + w * batch
    base = np.floor(c)
    left = batch - base.sum(1)
    rank = np.argsort(np.argsort(-(c - base), axis=1, kind="stable"), axis=1)
    base += rank < left[:, None]
    return base, c - base


def _quadratic(sigmas, lr, steps, seeds, batch, w_static=None, rng_seed=0, tail=50, **pike_params):
    """SGD on ℓ_k = ½(θᵀe_k)² + x_kᵀθ, x_k ~ N(0, σ_k² I), θ ∈ R², θ_0 = (1, 1), batches mixing the two
    tasks (b_k samples of task k). Returns (final loss, final w): the loss Σ_k L_k = ½‖θ‖² averaged
    over seeds and over the last ``tail`` steps (the final loss with less noise), w over seeds.

    PiKE gets the exact statistics at θ: ‖∇L_k‖² = θ_k² and σ_k² = d·σ_k² (per-sample gradient
    variance summed over the d = 2 coordinates)."""
    d, sig = 2, np.asarray(sigmas, dtype=np.float64)
    rng = np.random.default_rng(rng_seed)  # the same noise for every mixture compared
    theta = np.ones((seeds, d))
    algos = None if w_static is not None else [_pike(batch=batch, **pike_params) for _ in range(seeds)]
    credit = np.zeros((seeds, 2))
    final = []
    for step in range(1, steps + 1):
        if algos is None:
            w = np.tile([w_static, 1 - w_static], (seeds, 1))
        else:
            w = np.stack([a.sampling_weights for a in algos])
        b, credit = _counts(w, batch, credit)
        # mean over the batch of ∇ℓ = θ_k e_k + x: the b_k noise vectors of task k sum to N(0, b_k σ_k² I)
        noise = np.sqrt(b)[:, :, None] * sig[None, :, None] * rng.standard_normal((seeds, 2, d))
        grad = (b * theta[:, :2] + noise.sum(1)) / batch
        if algos is not None:
            for s, algo in enumerate(algos):
                algo.apply_update(grad_stats(theta[s, :2] ** 2, d * sig**2), step)
        theta -= lr * grad
        if step > steps - tail:
            final.append(np.mean(0.5 * (theta**2).sum(1)))
    return float(np.mean(final)), w.mean(0)


@pytest.mark.parametrize("sigmas", [(0.5, 3.0), (1.0, 4.0), (1.0, 2.0)])
def test_example_2_1_pike_beats_every_static_mixture(sigmas):
    lr, steps, seeds, batch = 0.05, 200, 16, 16
    # ζ2/ζ1 = ηL, the descent-lemma value (L = 1 here): fixed by the setup, the same for every case.
    pike_loss, pike_w = _quadratic(sigmas, lr, steps, seeds, batch, zeta1=1.0, zeta2=lr)
    static = {w: _quadratic(sigmas, lr, steps, seeds, batch, w_static=w)[0] for w in np.arange(1, 10) / 10}
    assert pike_loss < min(static.values()), (pike_loss, static)
    assert pike_w[0] > pike_w[1]  # the quieter task ends with the larger share
    if sigmas[1] >= 3 * sigmas[0]:
        # the σ² term matters: without it PiKE chases the noisy task and ends worse
        chase_loss, chase_w = _quadratic(sigmas, lr, steps, seeds, batch, zeta1=1.0, zeta2=0.0)
        assert chase_w[1] > pike_w[1] + 0.1 and chase_loss > pike_loss


# ---- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, key",
    [
        ("pike", {"zeta2": -1.0}, "pike.params.zeta2: expected"),
        ("pike", {"min_weight": 1.5}, "pike.params.min_weight: expected"),
        ("pike", {"grad_groups": 1}, "pike.params.grad_groups: expected"),
        ("pike", {"step_size": 0}, "pike.params.step_size: expected"),
        ("balanced_pike", {"tau": 0}, "balanced_pike.params.tau: expected"),
        ("pike", {"zeta": 1.0}, "pike.params.zeta: unknown parameter"),
    ],
)
def test_bad_params_are_one_line_errors_naming_the_key(name, params, key):
    cls = PiKE if name == "pike" else BalancedPiKE
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_params(cls.Params, params, f"{name}.params")


def test_floors_that_cannot_hold_are_errors():
    with pytest.raises(ValueError, match=r"pike\.params\.min_weight: expected a number < 1/K"):
        build_algorithm("pike", ["a", "b", "c", "d"], {"min_weight": 0.3}, where="pike")
    # K and B are known at config load, so the check runs before any data or model exists.
    with pytest.raises(ValueError, match=r"pike\.params\.min_samples: K·min_samples = 4·3 ≥ the global batch B = 8"):
        build_algorithm("pike", ["a", "b", "c", "d"], {"min_samples": 3}, where="pike", batch_size=8)
    # the case: 4 domains, B = 8, the default min_samples 2 floors every weight to 1/4
    for name in ("pike", "balanced_pike"):
        with pytest.raises(ValueError, match=r"every weight would stay at 1/K; use a global batch of at least 9"):
            build_algorithm(name, ["a", "b", "c", "d"], {}, where=name, batch_size=8)
    assert build_algorithm("pike", ["a", "b", "c", "d"], {}, batch_size=9).sampling_weights.sum() == 1


# ---- plumbing: tiny model, StepEngine, ranks, resume, NaN, Trainer ------------------------------------
class TinyLM(torch.nn.Module):
    """A causal-LM-shaped model without transformers (spawned test processes start faster)."""

    def __init__(self, seed=0, vocab=48, dim=16):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, dim)
        self.mix = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.head(torch.tanh(self.mix(self.embed(input_ids)))))


def _train_steps(engine, model, data, steps, slices=1, lr=0.1, start=1):
    """Plain-loop training of ``model`` with the step engine; each global batch is split into ``slices``
    micro-batches (what ``slices`` ranks would each hold), gradients averaged over them."""
    collate = DomainCollator(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    it = engine.sampler.iter_batches()
    trajectory = []
    for step in range(start, start + steps):
        rows = next(it)
        for part in np.array_split(rows, slices):
            batch = collate([data[int(i)] for i in part])
            ids, labels = batch.pop("domain_ids"), batch.pop("labels")
            batch.pop("sample_ids", None)
            logits = model(**batch).logits
            loss = engine.training_loss(
                logits, MicroBatch(ids, labels, batch_index=step - 1, model=model, inputs=batch)
            )
            (loss / slices).backward()
        if torch.distributed.is_initialized():
            for p in model.parameters():  # what DDP would do
                torch.distributed.all_reduce(p.grad)
                p.grad /= torch.distributed.get_world_size()
        opt.step()
        opt.zero_grad()
        engine.end_step(step, model=model)
        trajectory.append(engine.algorithm.sampling_weights.tolist())
    return trajectory


def _pike_engine(data, batch=8, rank=0, world=1, update_step=1, log_dir=None, name="pike"):
    names = data.domain_names
    algo = build_algorithm(name, names, {"min_samples": 1}, init_weights=np.ones(len(names)) / len(names))
    sampler = MixtureSampler(data.domain_sizes, algo.sampling_weights, batch, seed=2, rank=rank, world_size=world)
    return StepEngine(sampler, algo, schedule=UpdateSchedule(update_step=update_step), log_dir=log_dir)


def _ranks_run(rank, world, out):
    data = MixtureDataset(tiny_domains())
    engine = _pike_engine(data, rank=rank, world=world)
    trajectory = _train_steps(engine, TinyLM(seed=4), data, steps=4)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(trajectory, f)


@pytest.mark.distributed
def test_two_ranks_hold_identical_weights_equal_to_one_process(tmp_path):
    run_distributed(_ranks_run, str(tmp_path))
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1
    # one process, the same global batches in one micro-batch: the groups are the global batch's,
    # so the world size does not change the estimate (nor, then, the weights)
    data = MixtureDataset(tiny_domains())
    single = _train_steps(_pike_engine(data), TinyLM(seed=4), data, steps=4, slices=1)
    assert np.allclose(single, r0, rtol=1e-6, atol=1e-9)
    assert not np.allclose(single[-1], np.ones(3) / 3)


def test_gradient_accumulation_does_not_change_the_weights():
    data = MixtureDataset(tiny_domains())
    whole = _train_steps(_pike_engine(data), TinyLM(seed=4), data, steps=4, slices=1)
    accumulated = _train_steps(_pike_engine(data), TinyLM(seed=4), data, steps=4, slices=4)
    assert np.allclose(whole, accumulated, rtol=1e-6, atol=1e-9)
    assert not np.allclose(whole[-1], np.ones(3) / 3)


def test_resume_reproduces_the_weight_trajectory(tmp_path):
    data = MixtureDataset(tiny_domains())
    model = TinyLM(seed=6)
    full = _pike_engine(data, update_step=2, name="balanced_pike")
    first = _train_steps(full, model, data, steps=3)
    full.save(tmp_path / "ckpt")
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    rest = _train_steps(full, model, data, steps=4, start=4)

    resumed = _pike_engine(data, update_step=2, name="balanced_pike")
    resumed.load(tmp_path / "ckpt")
    model2 = TinyLM(seed=99)
    model2.load_state_dict(saved_model)
    # the sampler continues from batch 3 (the stream restarts at the restored position)
    again = _train_steps(resumed, model2, data, steps=4, start=4)
    assert np.allclose(again, rest, rtol=1e-9)
    assert not np.allclose(rest[-1], first[0])  # the weights did move after the checkpoint


def test_non_finite_gradient_statistics_skip_the_update_with_a_warning(caplog):
    data = MixtureDataset(tiny_domains())
    engine = _pike_engine(data)
    model = TinyLM()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        _train_steps(engine, model, data, steps=1)
    assert "non-finite" in caplog.text
    assert engine.algorithm.num_updates == 0 and np.allclose(engine.algorithm.sampling_weights, np.ones(3) / 3)


def test_nan_estimate_inside_update_is_not_a_crash():
    algo = _pike()
    before = algo.sampling_weights
    algo.apply_update(grad_stats([float("nan"), 1.0], [1.0, 1.0]), step=1)
    assert np.allclose(algo.sampling_weights, before) and np.all(np.isfinite(algo.sampling_weights))


def test_grad_stats_work_inside_the_hf_trainer(tmp_path):
    from transformers import TrainerCallback

    from mixflow.integrations.hf_trainer import MixflowTrainer

    class Grads(TrainerCallback):
        def __init__(self):
            self.first = None

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if self.first is None:
                self.first = torch.cat([p.grad.reshape(-1).clone() for p in model.parameters() if p.grad is not None])

    def run(name, out, steps):
        train = MixtureDataset(tiny_domains())
        args = tiny_training_args(out, max_steps=steps, lr_scheduler_type="linear")
        params = {"min_samples": 1} if name == "pike" else {}
        algo = build_algorithm(name, train.domain_names, params, init_weights=np.ones(3) / 3)
        engine = StepEngine(
            MixtureSampler(train.domain_sizes, algo.sampling_weights, 8, seed=3),
            algo,
            schedule=UpdateSchedule(update_step=1),
            log_dir=out,
        )
        grads = Grads()
        MixflowTrainer(
            model=tiny_llama(seed=1),
            args=args,
            train_dataset=train,
            data_collator=DomainCollator(0),
            engine=engine,
            callbacks=[grads],
        ).train()
        return engine, grads.first

    engine, grads = run("pike", tmp_path / "pike", steps=3)
    records = [json.loads(x) for x in (tmp_path / "pike" / "pike_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.all(np.isfinite(r["perdomain_scores"])) for r in records)  # every task had estimates
    assert not np.allclose(records[-1]["sampling_weights"], np.ones(3) / 3)
    # the provider's partial backward passes leave the training gradient untouched
    _, static_grads = run("static", tmp_path / "static", steps=1)
    assert torch.allclose(grads, static_grads, rtol=1e-5, atol=1e-7)


def test_normalising_scale_is_averaged_over_updates():
    from mixflow.algorithms.pike import exponent_scale, pike_terms

    algo = _pike(scale_smoothing=0.9)
    first, second = ([4.0, 1.0], [2.0, 2.0]), ([0.5, 0.1], [2.0, 2.0])
    scales = [exponent_scale(*pike_terms(np.array(n), np.array(v), 16, algo.params)) for n, v in (first, second)]
    algo.apply_update(grad_stats(*first), step=1)
    assert algo.scale == pytest.approx(scales[0])  # the first update's own S
    w = algo.sampling_weights
    algo.apply_update(grad_stats(*second), step=2)
    assert algo.scale == pytest.approx(0.9 * scales[0] + 0.1 * scales[1])
    # the exponent is divided by the averaged S, not by this update's (much smaller) one
    delta = algo.params.step_size * (np.array(second[0]) - np.array(second[1]) / 32) / algo.scale
    assert np.allclose(algo.scores, delta)
    expected = w * np.exp(delta)
    assert np.allclose(algo.sampling_weights, expected / expected.sum())


def test_unbiased_norm_estimate_can_be_negative_and_moves_weights_down():
    algo = _pike()
    algo.apply_update(grad_stats([-0.5, 0.5], [8.0, 8.0]), step=1)  # a noisy window: ‖ĝ‖² < σ̂²/b for task 0
    assert algo.scores[0] < algo.scores[1] and algo.sampling_weights[0] < 0.5
