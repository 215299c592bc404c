# Copyright (c) mmpsearch contributors. All rights reserved.
"""A toy regressor and dataset that exercise the tools (train, resume,
load_from, distributed) without the cost of a person-search model."""
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mmpsearch.registry import DATASETS, MODELS


@MODELS.register_module(force=True)
class ToyRegressor(BaseModel):
    """y = w x + b fitted with an L2 loss."""

    def __init__(self, in_dim: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, 1)

    def forward(self, inputs, targets=None, mode: str = 'tensor'):
        preds = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((preds - targets)**2).mean())
        return preds


@DATASETS.register_module(force=True)
class ToyRegressionDataset(Dataset):
    """A fixed random linear problem (seeded, the same in every process)."""

    def __init__(self,
                 num_samples: int = 32,
                 in_dim: int = 4,
                 nan_targets: bool = False) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(num_samples, in_dim, generator=gen)
        w = torch.arange(1, in_dim + 1, dtype=torch.float32)
        self.y = self.x @ w + 0.5
        if nan_targets:  # a broken input file: every loss is NaN
            self.y[:] = float('nan')
        self.metainfo = dict(name='toy')

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: int) -> dict:
        return dict(inputs=self.x[idx], targets=self.y[idx])
