"""IMP-Loss and DIMP-Loss (Kuo et al. 2025, ICLR, "IMP-Loss and DIMP-Loss"): every Properties line."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixflow.algorithms.registry import build_algorithm, build_weighter
from mixflow.config import ConfigError, load_config
from mixflow.data.sampler import MixtureSampler
from mixflow.engine.engine import StepEngine
from mixflow.engine.micro_batch import MicroBatch
from mixflow.recipes.build import load_weighter_inputs
from mixflow.recipes.weights_cache import WeightsCache, read_weights_cache, write_weights_cache


def _cache(path, quality, diversity, labels=None):
    n = len(quality)
    write_weights_cache(
        path,
        WeightsCache(
            quality=np.asarray(quality, dtype=np.float64),
            diversity=np.asarray(diversity, dtype=np.float64),
            labels=np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels),
            domain_names=["all"],
            domain_sizes=[n],
            data_fingerprint="d",
            checker_fingerprint="c",
        ),
    )
    return str(path)


def _build(name, path, **params):
    """The weighter as the run builder makes it: built from params, then handed the cache's table."""
    weighter = build_weighter(name, ["all"], {"weights_cache": path, **params}, where=name)
    load_weighter_inputs(weighter)
    return weighter


def test_cache_roundtrip_and_foreign_files_are_errors(tmp_path):
    path = _cache(tmp_path / "c.npz", [0.2, 0.9], [0.4, 0.3], labels=[1, 0])
    cache = read_weights_cache(path)
    assert cache.quality.tolist() == [0.2, 0.9] and cache.diversity.tolist() == [0.4, 0.3]
    assert cache.labels.tolist() == [1, 0] and cache.data_fingerprint == "d"
    np.savez(tmp_path / "other.npz", x=np.ones(2))
    with pytest.raises(ValueError, match="not a cache written by `mixflow checkers`"):
        read_weights_cache(tmp_path / "other.npz")


def test_equal_checkers_make_imp_exactly_cross_entropy(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, c = 12, 3
    probs = torch.rand(40, generator=g, dtype=torch.float64) * 0.98 + 0.01
    probs[0] = 1e-6  # below the floor on both sides: still exactly 1
    path = _cache(tmp_path / "c.npz", probs.numpy(), probs.numpy())
    imp = _build("imp", path)
    ids = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 39])
    assert torch.equal(
        imp.weights(torch.zeros(n), torch.zeros(n, dtype=torch.long), 0, ids), torch.ones(n, dtype=torch.float64)
    )

    logits = torch.randn(n, c, generator=g, requires_grad=True)
    labels = torch.randint(0, c, (n,), generator=g)

    def engine(weighter):
        algo = build_algorithm("static", ["all"], {}, init_weights=[1.0])
        return StepEngine(MixtureSampler([40], algo.sampling_weights, n), algo, weighter=weighter, shift_labels=False)

    domain = torch.zeros(n, dtype=torch.long)
    loss_imp = engine(imp).training_loss(logits, MicroBatch(domain, labels, batch_index=0, sample_ids=ids))
    (g_imp,) = torch.autograd.grad(loss_imp, logits)
    loss_plain = engine(None).training_loss(logits, MicroBatch(domain, labels, batch_index=0, sample_ids=ids))
    (g_plain,) = torch.autograd.grad(loss_plain, logits)
    assert torch.equal(loss_imp, loss_plain) and torch.equal(g_imp, g_plain)
    ce = F.cross_entropy(logits, labels)
    assert torch.allclose(loss_imp, ce, atol=1e-7)
    # and with unequal checkers IMP is the weighted loss −(1/N) Σ w_j log P_θ(y_j|x_j), weights raw
    q = probs.clone()
    q[ids] = q[ids] * 0.5
    imp2 = _build("imp", _cache(tmp_path / "c2.npz", probs.numpy(), q.numpy()))
    w = imp2.weights(torch.zeros(n), domain, 0, ids)
    assert torch.allclose(w[1:], torch.full((n - 1,), 2.0, dtype=torch.float64))
    loss2 = engine(imp2).training_loss(logits, MicroBatch(domain, labels, batch_index=0, sample_ids=ids))
    per = F.cross_entropy(logits, labels, reduction="none").double()
    assert torch.allclose(loss2.double(), (w * per).sum() / n, atol=1e-6)


def test_dimp_weights_are_one_when_the_model_matches_the_quality_checker(tmp_path):
    quality = np.linspace(0.05, 0.99, 30)
    dimp = _build("dimp", _cache(tmp_path / "c.npz", quality, np.full(30, 0.5)))
    ids = torch.arange(30)
    losses = torch.as_tensor(-np.log(quality))  # ℓ_j = −log P_θt(y_j|x_j) = −log P̂′(y_j|x_j)
    w = dimp.weights(losses, torch.zeros(30, dtype=torch.long), 0, ids)
    assert torch.allclose(w, torch.ones(30, dtype=torch.float64), rtol=1e-12)
    # a model less sure than the checker up-weights, a surer one down-weights: P̂′/P_θt
    w = dimp.weights(losses + 0.5, torch.zeros(30, dtype=torch.long), 0, ids)
    assert torch.allclose(w, torch.full((30,), math.exp(0.5), dtype=torch.float64), rtol=1e-12)


def test_floor_and_cap_bound_the_weights(tmp_path):
    path = _cache(tmp_path / "c.npz", [0.9, 1e-9, 0.5], [1e-9, 0.9, 0.5])
    ids = torch.tensor([0, 1, 2])
    w = _build("imp", path, min_prob=0.01).weights(torch.zeros(3), None, 0, ids)
    assert torch.allclose(w, torch.tensor([90.0, 0.01 / 0.9, 1.0], dtype=torch.float64))
    w = _build("imp", path, min_prob=0.01, max_weight=5.0).weights(torch.zeros(3), None, 0, ids)
    assert float(w.max()) == 5.0
    dimp = _build("dimp", path, min_prob=0.01)
    w = dimp.weights(torch.tensor([50.0, 0.1, 0.1]), None, 0, ids)  # P_θt ≈ e^-50: floored
    assert math.isclose(float(w[0]), 0.9 / 0.01)
    assert torch.all(torch.isfinite(w))


def test_weights_need_sample_ids_from_the_cached_rows(tmp_path):
    imp = _build("imp", _cache(tmp_path / "c.npz", [0.5] * 4, [0.5] * 4))
    with pytest.raises(ValueError, match="sample_ids"):
        imp.weights(torch.zeros(2), None, 0, None)
    with pytest.raises(ValueError, match="outside the cache's 4 rows"):
        imp.weights(torch.zeros(2), None, 0, torch.tensor([1, 4]))


def test_the_run_builder_hands_the_cache_to_the_weighter(tmp_path):
    path = tmp_path / "c.npz"
    _cache(path, [0.5, 0.5], [0.25, 0.5])
    bare = build_weighter("imp", ["all"], {"weights_cache": str(path)}, where="imp")
    # The algorithms layer reads no file: without the table the weighter says what is missing.
    with pytest.raises(ValueError, match=r"^imp: no checker probabilities; call set_table\(\)"):
        bare.weights(torch.zeros(2), None, 0, torch.tensor([0, 1]))
    _cache(path, [0.5, 0.5], [0.5, 0.25])  # the table is the file's content when the run is built
    load_weighter_inputs(bare)
    assert bare.weights(torch.zeros(2), None, 0, torch.tensor([0, 1])).tolist() == [1.0, 2.0]


def _config(tmp_path, component, task="classification"):
    data = tmp_path / "a.jsonl"
    data.write_text('{"text": "hello", "label": 1}\n{"text": "bye", "label": 0}\n')
    return {
        "task": task,
        "domains": [{"name": "a", "path": str(data)}],
        "train_type": "dynamic_weight",
        "component": component,
        "model_config": {"model_type": "llama"},
        "output_dir": str(tmp_path / "out"),
    }


@pytest.mark.parametrize("name", ["imp", "dimp"])
def test_config_errors_are_one_line_and_name_the_key(tmp_path, name):
    cases = [
        ({"name": name}, f"{name}.params.weights_cache: required"),
        (
            {"name": name, "params": {"weights_cache": str(tmp_path / "missing.npz")}},
            f"{name}.params.weights_cache: file not found",
        ),
        (
            {"name": name, "params": {"weights_cache": _cache(tmp_path / "c.npz", [0.5], [0.5]), "min_prob": 0}},
            f"{name}.params.min_prob: expected a number in",
        ),
        (
            {"name": name, "params": {"weights_cache": str(tmp_path / "c.npz"), "max_weight": -1}},
            f"{name}.params.max_weight",
        ),
    ]
    for component, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            load_config(raw=_config(tmp_path, component))
        assert "\n" not in str(err.value)
    good = {"name": name, "params": {"weights_cache": str(tmp_path / "c.npz")}}
    load_config(raw=_config(tmp_path, good))
    with pytest.raises(ConfigError, match=f"task: the {name} weighter needs task: classification"):
        load_config(raw=_config(tmp_path, good, task="causal_lm"))


# ---- 2-D Gaussian mixture: 30% of one region's labels flipped in the synthetic set -----------------
def _gaussian_mixture(n, rng, flip_rate=0.0):
    """Two classes, each a mixture of a lower (x2 < 0) and an upper (x2 > 0) component. With
    ``flip_rate``, 30% of the upper region's labels are flipped, all to class 1 (a biased generator)."""
    y = rng.integers(0, 2, n)
    centres = {0: [(-1.5, -1.5), (-0.5, 1.5)], 1: [(1.5, -1.5), (0.5, 1.5)]}
    comp = rng.integers(0, 2, n)
    x = np.array([centres[c][k] for c, k in zip(y, comp)]) + rng.normal(0, 0.7, (n, 2))
    flipped = (x[:, 1] > 0) & (y == 0) & (rng.random(n) < 2 * flip_rate)  # half the region is class 0
    y = np.where(flipped, 1, y)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.tensor(flipped)


def _fit(x, y, weighter=None, seed=0, steps=300, lr=0.1):
    """Full-batch gradient descent on a logistic-regression classifier; the weighter (if any) gives
    per-example weights from the detached per-example losses, as the step engine does."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    ids = torch.arange(len(y))
    mean_weights = torch.zeros(len(y), dtype=torch.float64)
    for step in range(steps):
        losses = F.cross_entropy(model(x), y, reduction="none")
        w = torch.ones(len(y), dtype=torch.float64)
        if weighter is not None:
            w = weighter.weights(losses.detach(), torch.zeros(len(y), dtype=torch.long), step, ids)
        mean_weights += w / steps
        opt.zero_grad()
        (w.float() * losses).mean().backward()  # −(1/N) Σ w_j log P_θ(y_j|x_j)
        opt.step()
    return model, mean_weights


def _label_prob(model, x, y):
    with torch.no_grad():
        return torch.softmax(model(x), -1).gather(1, y[:, None]).squeeze(1).double().numpy()


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


@pytest.fixture
def one_thread():
    # Thousands of tiny ops: a thread pool only adds synchronisation (and stalls on a busy machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_imp_and_dimp_beat_cross_entropy_when_one_region_is_mislabelled(tmp_path, one_thread):
    results = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x_syn, y_syn, flipped = _gaussian_mixture(1000, rng, flip_rate=0.3)
        x_real, y_real, _ = _gaussian_mixture(200, rng)  # the small clean real set P′
        x_test, y_test, _ = _gaussian_mixture(2000, rng)
        quality_checker, _ = _fit(x_real, y_real, seed=seed)
        diversity_checker, _ = _fit(x_syn, y_syn, seed=seed)
        path = _cache(
            tmp_path / f"gmm{seed}.npz",
            _label_prob(quality_checker, x_syn, y_syn),
            _label_prob(diversity_checker, x_syn, y_syn),
        )
        ce, _ = _fit(x_syn, y_syn, seed=seed)
        imp, w_imp = _fit(x_syn, y_syn, _build("imp", path), seed=seed)
        dimp, w_dimp = _fit(x_syn, y_syn, _build("dimp", path), seed=seed)
        results.append([_accuracy(m, x_test, y_test) for m in (ce, imp, dimp)])
        for w in (w_imp, w_dimp):  # the mislabelled examples count less
            assert float(w[flipped].mean()) < 0.8 * float(w[~flipped].mean())
    ce_acc, imp_acc, dimp_acc = np.mean(results, axis=0)
    assert imp_acc > ce_acc + 0.02, results
    assert dimp_acc > ce_acc + 0.02, results
