# Copyright (c) mmpsearch contributors. All rights reserved.
from .dual_denoising_criterion import DualDenoisingCriterion
from .oim import OIMLoss
from .reid_l2_loss import ReIDL2Loss

__all__ = ['DualDenoisingCriterion', 'OIMLoss', 'ReIDL2Loss']
