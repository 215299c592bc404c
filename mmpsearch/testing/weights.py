# Copyright (c) mmpsearch contributors. All rights reserved.
"""Random weights for tests and benchmarks."""
import logging

import torch
from mmengine.logging import MMLogger


def quiet_init_weights(model: torch.nn.Module) -> None:
    """``model.init_weights()`` without the per-parameter report that
    mmengine logs at INFO (the current logger's level is restored after,
    also when it raises)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
