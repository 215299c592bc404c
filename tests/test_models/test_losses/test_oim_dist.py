# Copyright (c) mmpsearch contributors. All rights reserved.
"""OIMLoss across processes: 2 ranks on CPU (gloo) must hold the tables of
one process on the concatenated batches, with uneven batches per rank."""
import datetime
import socket
from typing import List, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mmpsearch.models.losses.oim import OIMLoss

D, PIDS, CQ = 4, 4, 5
# person ids per iteration, (rank 0, rank 1): uneven counts, id 1 on both
# ranks and repeated, a rank with no labeled sample (it. 1, 2), an empty
# batch (it. 3), nothing to update anywhere (it. 4); the queue wraps
IDS = [
    ([0, 1, 1, -1, -2], [1, -1, 2]),
    ([-1, -1, -2], [3, 0, -1, 3]),
    ([2, -1, -1, 0], [-2, -1, -1, -1]),
    ([], [1, -1]),
    ([-2], [-2, -2]),
]


def _unit(n: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=g), dim=1)


def _batches() -> List[List[Tuple[torch.Tensor, torch.Tensor]]]:
    """The same seeded batches in every process."""
    g = torch.Generator().manual_seed(0)
    return [[(_unit(len(ids), g), torch.tensor(ids, dtype=torch.long))
             for ids in pair] for pair in IDS]


def _new_oim() -> OIMLoss:
    oim = OIMLoss(num_features=D, num_pids=PIDS, num_cq_size=CQ)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero tables, so the momentum matters
        oim.lut.copy_(_unit(PIDS, g))
        oim.cq.copy_(_unit(CQ, g))
    return oim


def _cat(pair):
    return (torch.cat([x for x, _ in pair]), torch.cat([y for _, y in pair]))


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60))
    try:
        oim = _new_oim()
        losses = []
        for pair in _batches():
            # with one rank, that rank gets both halves of the batch
            x, y = pair[rank] if world_size == 2 else _cat(pair)
            losses.append(oim(x.requires_grad_(), y).detach())
        torch.save(
            dict(state=oim.state_dict(), losses=losses),
            f'{out}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


def _spawn(world_size: int, tmp_path) -> List[dict]:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(
        _worker, args=(world_size, port, str(tmp_path)), nprocs=world_size)
    return [
        torch.load(tmp_path / f'rank{r}.pt', weights_only=True)
        for r in range(world_size)
    ]


def _reference() -> Tuple[dict, List[List[torch.Tensor]]]:
    """One process, no process group: the tables after the concatenated
    batches, and each rank's local loss against the tables before."""
    oim = _new_oim()
    losses = []
    for pair in _batches():
        oim.eval()  # the loss of each half, without updating
        losses.append([oim(x, y) for x, y in pair])
        oim.train()
        oim(*_cat(pair))
    return oim.state_dict(), losses


def _assert_same_tables(a: dict, b: dict) -> None:
    assert set(a) == set(b) == {'lut', 'cq', 'cq_head'}
    for key in a:  # same data, same order: bitwise equal
        assert torch.equal(a[key], b[key]), key


def test_two_ranks_hold_the_tables_of_one_process(tmp_path):
    results = _spawn(2, tmp_path)
    _assert_same_tables(results[0]['state'], results[1]['state'])
    ref_state, ref_losses = _reference()
    _assert_same_tables(results[0]['state'], ref_state)
    # the tables moved and the queue wrapped: the comparison is not vacuous
    assert not torch.equal(ref_state['lut'], _new_oim().lut)
    assert int(ref_state['cq_head']) == (2 + 3 + 5 + 1) % CQ
    # each rank's loss is that of its own batch against the old tables
    for rank in range(2):
        for it, loss in enumerate(results[rank]['losses']):
            torch.testing.assert_close(loss, ref_losses[it][rank])


def test_world_size_one_is_one_process(tmp_path):
    (result, ) = _spawn(1, tmp_path)
    ref_state, _ = _reference()
    _assert_same_tables(result['state'], ref_state)


def test_one_process_update_by_hand():
    """Without a process group: labeled in order, unlabeled into the queue
    at its head, ignored ones nowhere."""
    oim = _new_oim()
    lut, cq = oim.lut.clone(), oim.cq.clone()
    g = torch.Generator().manual_seed(2)
    x = _unit(5, g)
    oim(x, torch.tensor([3, -1, -2, 3, -1]))

    step = F.normalize(0.5 * lut[3] + 0.5 * x[0], dim=0)
    lut[3] = F.normalize(0.5 * step + 0.5 * x[3], dim=0)
    cq[[0, 1]] = x[[1, 4]]
    torch.testing.assert_close(oim.lut, lut, rtol=0, atol=0)
    torch.testing.assert_close(oim.cq, cq, rtol=0, atol=0)
    assert int(oim.cq_head) == 2
