import pytest
import torch
import torch.nn.functional as F

from mixflow.loss.objective import DomainVectors, domain_coefficients, weighted_loss
from mixflow.loss.per_sample import sample_losses


def _batch(b=3, t=7, v=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, requires_grad=True)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, 4:] = -100  # padding in one sample
    labels[2, :3] = -100  # a masked prompt in another
    return logits, labels


def _reference_loss(logits, labels):
    # What a Hugging Face causal LM computes: shift, flatten, mean over non-ignored tokens.
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def test_per_sample_losses_match_token_level_cross_entropy():
    logits, labels = _batch()
    out = sample_losses(logits, labels)
    for j in range(labels.shape[0]):
        lab = labels[j, 1:]
        keep = lab != -100
        expected = F.cross_entropy(logits[j, :-1][keep], lab[keep], reduction="sum")
        assert torch.allclose(out.token_loss_sum[j], expected, atol=1e-5)
        assert int(out.token_count[j]) == int(keep.sum())


def test_uniform_coefficients_reproduce_plain_loss_and_gradient():
    logits, labels = _batch()
    ref = _reference_loss(logits, labels)
    (g_ref,) = torch.autograd.grad(ref, logits)
    loss = weighted_loss(sample_losses(logits, labels), None, None)
    (g,) = torch.autograd.grad(loss, logits)
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(g, g_ref, atol=1e-7)


@pytest.mark.parametrize("chunk_rows", [1, 4, 5, 1000])
def test_chunking_does_not_change_loss_or_gradient(chunk_rows):
    logits, labels = _batch(b=4, t=9, v=13)
    full = weighted_loss(sample_losses(logits, labels, chunk_rows=10_000), None, None)
    (g_full,) = torch.autograd.grad(full, logits)
    chunked = weighted_loss(sample_losses(logits, labels, chunk_rows=chunk_rows), None, None)
    (g_chunk,) = torch.autograd.grad(chunked, logits)
    assert torch.allclose(full, chunked, atol=1e-6)
    assert torch.allclose(g_full, g_chunk, atol=1e-7)


def test_num_items_in_batch_normalises_over_the_accumulated_batch():
    logits, labels = _batch()
    losses = sample_losses(logits, labels)
    n = int(losses.token_count.sum())
    assert torch.allclose(weighted_loss(losses, None, 2 * n), weighted_loss(losses, None, None) / 2)
    assert torch.allclose(weighted_loss(losses, None, torch.tensor(2 * n)), weighted_loss(losses, None, None) / 2)


def test_coefficients_scale_each_sample():
    logits, labels = _batch()
    losses = sample_losses(logits, labels)
    c = torch.tensor([2.0, 0.0, 1.0])
    expected = (2 * losses.token_loss_sum[0] + losses.token_loss_sum[2]) / losses.token_count.sum()
    assert torch.allclose(weighted_loss(losses, c, None), expected)


def test_domain_coefficients_importance_mode_is_q_over_p():
    ids = torch.tensor([0, 1, 1, 2])
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    w = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    prior = torch.full((3,), 1 / 3, dtype=torch.float64)
    c = domain_coefficients(ids, "importance", DomainVectors(p, w, prior))
    q = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    assert torch.allclose(c, (q / p)[ids])
    # E_p[c] = Σ_d p_d q_d / p_d = 1: the scale of the plain loss is kept.
    assert torch.isclose((p * (q / p)).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_domain_coefficients_objective_mode():
    ids = torch.tensor([0, 1])
    p = torch.tensor([0.9, 0.1], dtype=torch.float64)
    prior = torch.full((2,), 0.5, dtype=torch.float64)
    assert domain_coefficients(ids, "objective", DomainVectors(p, torch.ones(2, dtype=torch.float64), prior)) is None
    c = domain_coefficients(ids, "objective", DomainVectors(p, torch.tensor([2.0, 0.5], dtype=torch.float64), prior))
    assert c.tolist() == [2.0, 0.5]
    with pytest.raises(ValueError, match="mode"):
        domain_coefficients(ids, "bogus", DomainVectors(p, torch.ones(2), prior))  # type: ignore[arg-type]


@pytest.mark.parametrize("rows", [1, 3, 64])
def test_chunked_cross_entropy_matches_torch_in_value_and_gradient(rows):
    from mixflow.loss.per_sample import per_token_losses

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 7, (10,), generator=gen)
    labels[[2, 5]] = -100
    weights = torch.rand(10, generator=gen, dtype=torch.float64)
    ours = per_token_losses(logits, labels, chunk_rows=rows)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    ref = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    assert torch.allclose(ours.double(), ref, atol=1e-6) and torch.all(ours[[2, 5]] == 0)
    assert torch.allclose(g_ours, g_ref, atol=1e-6) and torch.all(g_ours[[2, 5]] == 0)
    assert ours.dtype == torch.float32  # upcast, as transformers' loss


@pytest.mark.parametrize("rows", [3, 64])
def test_chunked_cross_entropy_of_bfloat16_logits_is_float32_with_a_bfloat16_gradient(rows):
    from mixflow.loss.per_sample import per_token_losses

    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(10, 7, generator=gen)).bfloat16().requires_grad_()
    labels = torch.randint(0, 7, (10,), generator=gen)
    labels[4] = -100
    ours = per_token_losses(logits, labels, chunk_rows=rows)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    exact = logits.detach().float().requires_grad_()
    ref = F.cross_entropy(exact, labels, ignore_index=-100, reduction="none")
    (g_ref,) = torch.autograd.grad(ref.sum(), exact)
    # the loss is computed in float32 from the bfloat16 values; only the gradient is rounded back
    assert ours.dtype == torch.float32 and torch.allclose(ours, ref, atol=1e-6)
    assert g_ours.dtype == torch.bfloat16 and torch.allclose(g_ours.float(), g_ref, atol=4e-3) and g_ours[4].eq(0).all()


def test_chunked_cross_entropy_of_no_rows_has_an_empty_gradient():
    from mixflow.loss.per_sample import per_token_losses

    logits = torch.zeros(0, 7, requires_grad=True)
    (grad,) = torch.autograd.grad(per_token_losses(logits, torch.zeros(0, dtype=torch.long)).sum(), logits)
    assert grad.shape == (0, 7)


def test_chunk_rows_follow_the_vocabulary_size():
    from mixflow.loss.per_sample import CHUNK_BYTES, chunk_rows_for

    assert chunk_rows_for(128_000) == CHUNK_BYTES // (4 * 128_000) < 4096  # a large vocabulary really is chunked
    assert chunk_rows_for(259) > 4096
    assert chunk_rows_for(10**12) == 1
