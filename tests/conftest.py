# Copyright (c) mmpsearch contributors. All rights reserved.
import pytest
import torch


@pytest.fixture(scope='module')
def one_torch_thread():
    """Run a module on one torch thread: with tiny tensors it is faster, and
    much faster on a busy machine (OpenMP threads wait for a descheduled
    sibling)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
