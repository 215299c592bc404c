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


def _reference_update(oim, embeddings, person_ids):
    """The per-sample update as the authors' code writes it (and as this
    class did before it was vectorised): one identity at a time, in batch
    order, and the queue written from its head read on the host."""
    x = embeddings.detach().to(oim.lut.dtype)
    m = oim.momentum
    for i in (person_ids >= 0).nonzero().flatten().tolist():
        y = int(person_ids[i])
        oim.lut[y] = F.normalize(m * oim.lut[y] + (1.0 - m) * x[i], dim=0)
    unlabeled = x[person_ids == -1]
    n = unlabeled.shape[0]
    if n == 0 or oim.num_cq_size == 0:
        return
    if n > oim.num_cq_size:
        unlabeled = unlabeled[-oim.num_cq_size:]
        start = (int(oim.cq_head) + n - oim.num_cq_size) % oim.num_cq_size
    else:
        start = int(oim.cq_head)
    idx = (start + torch.arange(unlabeled.shape[0])) % oim.num_cq_size
    oim.cq[idx] = unlabeled
    oim.cq_head.fill_((int(oim.cq_head) + n) % oim.num_cq_size)


def _pair(num_pids=50, cq=20, d=16):
    """Two OIMs with the same non-zero tables."""
    a = OIMLoss(num_features=d, num_pids=num_pids, num_cq_size=cq)
    with torch.no_grad():
        a.lut.copy_(_unit(num_pids, d, seed=11))
        a.cq.copy_(_unit(cq, d, seed=12))
        a.cq_head.fill_(7)
    b = OIMLoss(num_features=d, num_pids=num_pids, num_cq_size=cq)
    b.load_state_dict(a.state_dict())
    return a, b


def _batch(ids, d=16, seed=0):
    return _unit(len(ids), d, seed=seed), torch.tensor(ids)


def _update_both(vec, ref, ids, g, seed):
    """A batch of ``ids`` in an order drawn from ``g`` through the
    vectorised update of ``vec`` and the loop of ``ref``: the same
    operations per row, so bit for bit the loop's tables. Returns the
    batch (embeddings, ids)."""
    ids = ids[torch.randperm(len(ids), generator=g)]
    x, _ = _batch(ids.tolist(), seed=seed)
    vec.update(x, ids)
    _reference_update(ref, x, ids)
    assert torch.equal(vec.lut, ref.lut)
    assert torch.equal(vec.cq, ref.cq)
    assert int(vec.cq_head) == int(ref.cq_head)
    return x, ids


def test_vectorised_update_equals_the_loop_for_unique_ids():
    vec, ref = _pair()
    g = torch.Generator().manual_seed(3)
    for it in range(4):
        labeled = torch.randperm(50, generator=g)[:12]  # distinct ids
        ids = torch.cat(
            [labeled, torch.full((9, ), -1),
             torch.full((3, ), -2)])
        _update_both(vec, ref, ids, g, seed=20 + it)
    assert not torch.equal(vec.lut, _unit(50, 16, seed=11))


def test_vectorised_update_chains_repeated_ids_as_the_loop():
    # several samples of one identity compound in batch order, as in the
    # authors' loop; the queue wraps and overflows (25 > 20)
    vec, ref = _pair()
    g = torch.Generator().manual_seed(4)
    for it, (n, n_cq) in enumerate(((30, 25), (64, 9), (5, 3))):
        ids = torch.cat([
            torch.randint(0, 6, (n, ), generator=g),
            torch.full((n_cq, ), -1),
            torch.full((4, ), -2)
        ])
        x, ids = _update_both(vec, ref, ids, g, seed=30 + it)
    # and the order matters: the same samples reversed give other rows
    again, _ = _pair()
    again.update(x.flip(0), ids.flip(0))
    repeated = [i for i in range(6) if int((ids == i).sum()) > 1]
    assert repeated and not torch.allclose(again.lut[repeated],
                                           vec.lut[repeated])


def test_update_reads_the_host_a_fixed_number_of_times(host_reads):
    """No host sync per sample: the Python-visible reads of tensor values
    (int(), bool(), item(), tolist()) do not grow with the batch."""
    reads = host_reads

    def count(n):
        oim, _ = _pair(num_pids=200)
        ids = torch.cat([torch.arange(n), torch.full((n, ), -1)])
        reads.clear()
        oim.update(_unit(2 * n, 16, seed=n), ids)
        return len(reads)

    assert count(8) == count(128)


def test_update_in_training_with_gradients():
    oim, ref = _pair()
    x = _unit(6, 16, seed=40).requires_grad_()
    ids = torch.tensor([3, 3, -1, 7, -2, 0])
    table = torch.cat([oim.lut, oim.cq]).clone()
    loss = oim(x, ids)
    loss.backward()  # the update in place did not break the graph
    expected = x.detach().clone().requires_grad_()
    F.cross_entropy(oim.scale * expected[[0, 1, 3, 5]] @ table.t(),
                    ids[[0, 1, 3, 5]]).backward()
    torch.testing.assert_close(x.grad, expected.grad)
    _reference_update(ref, x, ids)
    assert torch.equal(oim.lut, ref.lut)
    for buf in (oim.lut, oim.cq):
        assert not buf.requires_grad and buf.grad_fn is None
