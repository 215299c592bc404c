# Copyright (c) mmpsearch contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F

from mmpsearch.models.losses.oim import OIMLoss


def _unit(n, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def test_loss_uses_tables_before_the_update_and_ignores_unlabeled():
    oim = OIMLoss(num_features=4, num_pids=3, num_cq_size=2, scale=30.0)
    with torch.no_grad():
        oim.lut.copy_(_unit(3, seed=1))
        oim.cq.copy_(_unit(2, seed=2))
    table = torch.cat([oim.lut, oim.cq]).clone()
    x = _unit(4, seed=3).requires_grad_()
    ids = torch.tensor([2, -1, 0, -2])  # labeled, unlabeled, labeled, bg
    loss = oim(x, ids)
    expected = F.cross_entropy(30.0 * x[[0, 2]] @ table.t(),
                               torch.tensor([2, 0]))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert x.grad is not None and float(x.grad[[0, 2]].abs().sum()) > 0


def test_lookup_table_momentum_update():
    oim = OIMLoss(num_features=4, num_pids=3, num_cq_size=2, momentum=0.5)
    old = _unit(3, seed=1)
    with torch.no_grad():
        oim.lut.copy_(old)
    x = _unit(3, seed=4)
    oim(x, torch.tensor([1, 1, 2]))
    # two samples of id 1: applied in order
    step1 = F.normalize(0.5 * old[1] + 0.5 * x[0], dim=0)
    step2 = F.normalize(0.5 * step1 + 0.5 * x[1], dim=0)
    torch.testing.assert_close(oim.lut[1], step2)
    torch.testing.assert_close(oim.lut[2],
                               F.normalize(0.5 * old[2] + 0.5 * x[2], dim=0))
    torch.testing.assert_close(oim.lut[0], old[0])  # untouched


def test_queue_is_circular():
    oim = OIMLoss(num_features=4, num_pids=2, num_cq_size=5)
    a = _unit(3, seed=5)
    oim(a, torch.full((3, ), -1))
    torch.testing.assert_close(oim.cq[:3], a)
    assert int(oim.cq_head) == 3
    b = _unit(4, seed=6)
    oim(b, torch.full((4, ), -1))
    # slots 3, 4 then wrap to 0, 1
    torch.testing.assert_close(oim.cq[[3, 4, 0, 1]], b)
    torch.testing.assert_close(oim.cq[2], a[2])
    assert int(oim.cq_head) == 2
    c = _unit(7, seed=7)  # more than the queue holds: newest 5 survive
    oim(c, torch.full((7, ), -1))
    assert int(oim.cq_head) == (2 + 7) % 5
    for k in range(2, 7):
        slot = (2 + k) % 5
        torch.testing.assert_close(oim.cq[slot], c[k])


def test_no_update_in_eval_and_tables_in_state_dict():
    oim = OIMLoss(num_features=4, num_pids=2, num_cq_size=3).eval()
    oim(_unit(2), torch.tensor([0, -1]))
    assert float(oim.lut.abs().sum()) == 0
    assert float(oim.cq.abs().sum()) == 0
    assert {'lut', 'cq', 'cq_head'} <= set(oim.state_dict())


def test_bad_inputs():
    oim = OIMLoss(num_features=4, num_pids=2, num_cq_size=3)
    with pytest.raises(ValueError, match='num_pids'):
        oim(_unit(1), torch.tensor([2]))
    with pytest.raises(ValueError, match=r'\(N, 4\)'):
        oim(torch.zeros(2, 5), torch.tensor([0, 1]))
