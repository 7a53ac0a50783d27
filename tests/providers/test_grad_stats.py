import numpy as np
import pytest
import torch

from mixflow.algorithms.statistics import DomainStats, gradient_moments
from mixflow.loss.per_sample import sample_losses
from mixflow.providers.base import BatchContext
from mixflow.providers.grad_stats import CountSketch, GradientStatistics, RowSketch, select_parameters
from tests.helpers import tiny_llama


def _context(model, ids, seed=0):
    """One micro-batch; a different seed is a different step (a provider deals each step's samples into groups)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 40, (len(ids), 6), generator=g)
    logits = model(input_ids=x).logits
    losses = sample_losses(logits, x)
    return BatchContext(
        model, {"input_ids": x}, x, losses, torch.tensor(ids), 2, batch_index=seed, update_pending=True
    ), losses


def _per_sample_grads(model, losses, params):
    out = []
    for j in range(losses.mean.numel()):
        grads = torch.autograd.grad(losses.mean[j], params, retain_graph=True)
        out.append(torch.cat([g.reshape(-1) for g in grads]).double())
    return torch.stack(out)


def test_one_sample_per_group_matches_exact_per_sample_moments():
    model = tiny_llama(seed=2)
    ids = [0, 0, 0, 1, 1, 1, 1]
    ctx, losses = _context(model, ids)
    provider = GradientStatistics(patterns=None, groups=100, sketch_dim=0)  # groups of one sample, no sketch
    stats = DomainStats.zeros(2)
    stats.extras.update(provider.batch_statistics(ctx))
    norm_sq, sigma2 = gradient_moments(stats)
    per = _per_sample_grads(model, losses, select_parameters(model, None))
    for d in (0, 1):
        gd = per[torch.tensor(ids) == d]
        b = gd.shape[0]
        var = gd.var(dim=0, unbiased=True).sum()
        mean_sq = gd.mean(dim=0).square().sum()
        assert np.isclose(sigma2[d], var.item(), rtol=1e-6)
        assert np.isclose(norm_sq[d], max(mean_sq.item() - var.item() / b, 0.0), rtol=1e-6, atol=1e-12)


def _micro_batch(model, x, ids, rows, step):
    part = x[rows]
    losses = sample_losses(model(input_ids=part).logits, part)
    return BatchContext(
        model, {"input_ids": part}, part, losses, torch.tensor(ids)[rows], 2, batch_index=step, update_pending=True
    )


@pytest.mark.parametrize("closed_form", [True, False])
def test_groups_are_the_global_batch_s_whatever_the_micro_batches(closed_form):
    model = tiny_llama(seed=5)
    ids = [0, 1, 0, 1, 1, 0, 0, 1, 1]
    x = torch.randint(1, 40, (len(ids), 6), generator=torch.Generator().manual_seed(3))
    totals = []
    for splits in ([range(9)], [range(4), range(4, 9)], [range(3), range(3, 6), range(6, 9)]):
        provider = GradientStatistics(groups=2, sketch_dim=0)
        provider.attach(model)
        if not closed_form:
            provider._closed_form = False  # one partial backward per group part
        stats = DomainStats.zeros(2)
        for rows in splits:
            part = DomainStats.zeros(2)
            part.extras.update(provider.batch_statistics(_micro_batch(model, x, ids, list(rows), step=7)))
            stats.add_(part)
        totals.append(gradient_moments(stats))
    # domain 0's rows are 0, 2, 5, 6: dealt round-robin into groups {0, 5} and {2, 6} in every split
    for norm_sq, sigma2 in totals[1:]:
        assert np.allclose(norm_sq, totals[0][0], rtol=1e-5) and np.allclose(sigma2, totals[0][1], rtol=1e-5)
    assert np.all(np.isfinite(totals[0][1])) and np.all(totals[0][1] > 0)


def test_a_new_step_deals_its_groups_afresh():
    model = tiny_llama(seed=5)
    provider = GradientStatistics(groups=2, sketch_dim=0)
    x = torch.randint(1, 40, (4, 6), generator=torch.Generator().manual_seed(3))
    first = provider.batch_statistics(_micro_batch(model, x, [0, 0, 1, 1], [0, 1, 2, 3], step=1))
    again = provider.batch_statistics(_micro_batch(model, x, [0, 0, 1, 1], [0, 1, 2, 3], step=2))
    for key in first:
        assert torch.allclose(first[key], again[key], rtol=1e-5, atol=1e-8)
    assert first["grad_group_samples"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_statistics_are_skipped_unless_an_update_is_pending():
    model = tiny_llama()
    ctx, _ = _context(model, [0, 1])
    ctx.update_pending = False
    assert GradientStatistics().batch_statistics(ctx) == {}


def test_domain_with_one_group_gets_nan():
    model = tiny_llama()
    ctx, _ = _context(model, [0, 0, 0, 1])
    stats = DomainStats.zeros(2)
    stats.extras.update(GradientStatistics(groups=2).batch_statistics(ctx))
    norm_sq, sigma2 = gradient_moments(stats)
    assert np.isfinite(norm_sq[0]) and np.isnan(norm_sq[1]) and np.isnan(sigma2[1])


def test_count_sketch_is_linear_and_preserves_squared_norm_on_average():
    sketch = CountSketch(5000, 256, seed=1)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5000, generator=g), torch.randn(5000, generator=g)
    assert torch.allclose(sketch(a.double() + b.double()), sketch(a) + sketch(b), atol=1e-9)
    ratios = [sketch(torch.randn(5000, generator=g)).square().sum() / 5000 for _ in range(50)]
    assert abs(float(torch.stack(ratios).mean()) - 1.0) < 0.05
    assert CountSketch(10, 256).exact


def test_parameter_patterns():
    model = tiny_llama()
    chosen = select_parameters(model, ["model.layers.1.*"])
    assert chosen and all(any(p is q for q in model.model.layers[1].parameters()) for p in chosen)
    import pytest

    with pytest.raises(ValueError, match="grad_params: no trainable parameter matches"):
        select_parameters(model, ["nothing.*"])


@pytest.mark.parametrize("sketch_dim", [0, 256])
def test_head_statistics_in_closed_form_equal_the_partial_backwards(caplog, sketch_dim):
    import logging

    ids = [0, 0, 0, 1, 1, 1, 1]
    model = tiny_llama(seed=3)
    closed = GradientStatistics(groups=3, sketch_dim=sketch_dim)
    closed.batch_statistics(_context(model, ids, seed=1)[0])  # the first batch's forward ran before the hook
    assert closed._closed_form is None
    ctx, _ = _context(model, ids)
    fast = closed.batch_statistics(ctx)
    assert closed._closed_form is True  # an untied, bias-free head: no backward at all
    slow = GradientStatistics(groups=3, sketch_dim=sketch_dim)
    slow._setup(model)
    slow._closed_form = False  # force one partial backward per group
    reference = slow.batch_statistics(ctx)
    for key in fast:
        assert torch.allclose(fast[key], reference[key], rtol=1e-4, atol=1e-6), key
    # a tied head's gradient also flows through the input embedding: the closed form is refused, in one line
    tied, tied_model = GradientStatistics(groups=2, sketch_dim=0), tiny_llama(tied=True)
    tied.batch_statistics(_context(tied_model, ids, seed=1)[0])
    with caplog.at_level(logging.INFO, logger="mixflow"):
        tied.batch_statistics(_context(tied_model, ids)[0])
    assert tied._closed_form is False and "closed-form gradient differs" in caplog.text


def test_row_sketch_commutes_with_the_head_gradient_and_keeps_norms_on_average():
    gen = torch.Generator().manual_seed(0)
    r, h = (
        torch.randn(20, 50, generator=gen, dtype=torch.float64),
        torch.randn(20, 8, generator=gen, dtype=torch.float64),
    )
    sketch = RowSketch(50, 8, dim=80)
    assert sketch.out_dim == 80 and not sketch.exact
    assert torch.allclose(sketch((r.T @ h).reshape(-1)), (sketch.residuals(r).T @ h).reshape(-1))
    g = (r.T @ h).reshape(-1)
    norms = [RowSketch(50, 8, dim=80, seed=s)(g).square().sum().item() for s in range(400)]
    assert abs(np.mean(norms) / g.square().sum().item() - 1) < 0.05
    assert RowSketch(50, 8, dim=400).exact and torch.equal(RowSketch(50, 8, dim=400)(g), g)


def test_closed_form_skips_ignored_tokens_like_the_backward():
    model = tiny_llama(seed=4)
    ids = torch.tensor([0, 0, 1, 1])
    x = torch.randint(1, 40, (4, 6), generator=torch.Generator().manual_seed(2))
    labels = x.clone()
    labels[0, 3:] = -100  # padding / prompt tokens carry no loss
    labels[2, :2] = -100

    def ctx():
        losses = sample_losses(model(input_ids=x).logits, labels)
        return BatchContext(model, {"input_ids": x}, labels, losses, ids, 2, batch_index=0, update_pending=True)

    closed = GradientStatistics(groups=2, sketch_dim=256)
    closed.batch_statistics(ctx())  # the hook sees the next forward
    fast = closed.batch_statistics(c := ctx())
    assert closed._closed_form is True
    slow = GradientStatistics(groups=2, sketch_dim=256)
    slow._setup(model)
    slow._closed_form = False
    reference = slow.batch_statistics(c)
    for key in fast:
        assert torch.allclose(fast[key], reference[key], rtol=1e-4, atol=1e-6), key
