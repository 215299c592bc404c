# Copyright (c) mmpsearch contributors. All rights reserved.
from .search_visualizer import (PersonSearchVisualizer, draw_denoising_steps,
                                draw_search_result, write_png)

__all__ = [
    'PersonSearchVisualizer', 'draw_search_result', 'draw_denoising_steps',
    'write_png'
]
