# Copyright (c) mmpsearch contributors. All rights reserved.
from .formatting import LoadPersonSearchAnnotations, PackPersonSearchInputs
from .noise_generator import DualNoiseGenerator
from .person_crop import CropPersonBox

__all__ = [
    'LoadPersonSearchAnnotations', 'PackPersonSearchInputs',
    'DualNoiseGenerator', 'CropPersonBox'
]
