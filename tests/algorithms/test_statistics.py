import math

import torch

from mixflow.algorithms.statistics import DomainStats


def test_from_samples_sums_per_domain_and_ignores_empty_samples():
    ids = torch.tensor([0, 2, 2, 0])
    tls = torch.tensor([4.0, 3.0, 9.0, 0.0])
    cnt = torch.tensor([2, 1, 3, 0])
    s = DomainStats.from_samples(ids, tls, cnt, num_domains=3)
    assert s.token_loss_sum.tolist() == [4.0, 0.0, 12.0]
    assert s.token_count.tolist() == [2.0, 0.0, 4.0]
    assert s.mean_token_loss[0] == 2.0 and math.isnan(s.mean_token_loss[1]) and s.mean_token_loss[2] == 3.0


def test_pack_unpack_and_state_roundtrip_with_extras():
    s = DomainStats.from_samples(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]), torch.tensor([1, 2]), 2)
    s.extras["ref"] = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    flat, layout = s.pack()
    t = DomainStats.zeros(2)
    t.extras["ref"] = torch.zeros(2, 2, dtype=torch.float64)
    t.unpack_(flat * 2, layout)
    assert t.token_loss_sum.tolist() == [2.0, 4.0] and t.extras["ref"].tolist() == [[2.0, 4.0], [6.0, 8.0]]
    u = DomainStats.zeros(2)
    u.load_state_dict(s.state_dict())
    assert u.token_count.tolist() == s.token_count.tolist() and torch.equal(u.extras["ref"], s.extras["ref"])


def test_add_accumulates():
    a = DomainStats.from_samples(torch.tensor([0]), torch.tensor([1.0]), torch.tensor([1]), 2)
    b = DomainStats.from_samples(torch.tensor([1]), torch.tensor([5.0]), torch.tensor([5]), 2)
    a.add_(b).add_(b)
    assert a.token_loss_sum.tolist() == [1.0, 10.0] and a.token_count.tolist() == [1.0, 10.0]
