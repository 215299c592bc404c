# Copyright (c) mmpsearch contributors. All rights reserved.
"""Stop training at the first non-finite loss."""
import math
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook

from mmpsearch.registry import HOOKS


class NonFiniteLossError(FloatingPointError):
    """A loss term of a training iteration is NaN or infinite."""


def _as_float(value) -> Optional[float]:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() else None
    if isinstance(value, (int, float)):
        return float(value)
    return None


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise :class:`NonFiniteLossError` after the first training iteration
    whose loss (or any ``loss*`` term of the model's log variables) is NaN
    or infinite, naming the terms.

    Without it, training goes on with NaN weights (one NaN row of a teacher
    embeddings file is enough) and ``CheckpointHook`` saves them. This hook
    runs before ``LoggerHook`` and ``CheckpointHook``, so no checkpoint is
    written for that iteration (earlier ones stay). In distributed training
    the ranks agree (one all-reduce of a flag), so all stop together.

    Registered by ``configs/_base_/default_runtime.py`` as
    ``default_hooks.finite_loss``; set it to None to train on regardless.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        bad = {}
        for key, value in (outputs or {}).items():
            if 'loss' not in key:
                continue
            number = _as_float(value)
            if number is not None and not math.isfinite(number):
                bad[key] = number
        flag = torch.tensor([float(bool(bad))])
        if get_world_size() > 1:
            all_reduce(flag, op='max')  # in place
        if not bad and float(flag.max()) == 0:
            return
        terms = {k: v for k, v in bad.items() if k != 'loss'} or bad
        if terms:
            named = ', '.join(f'{k}={v}' for k, v in terms.items())
            what = f'non-finite loss term{"s" if len(terms) > 1 else ""} ' \
                f'{named}'
        else:
            what = 'a non-finite loss on another rank'
        raise NonFiniteLossError(
            f'{what} at training iteration {runner.iter + 1}: training '
            'stopped, and no checkpoint was written for this iteration '
            f'(those already in {runner.work_dir} are from before). Usual '
            'causes: NaN or inf in the inputs (the teacher embeddings file, '
            'the annotations), a learning rate too high. To train on '
            'anyway, set default_hooks.finite_loss=None.')
