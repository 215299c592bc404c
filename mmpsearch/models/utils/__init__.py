# Copyright (c) mmpsearch contributors. All rights reserved.
from .query_gallery import (is_query, query_boxes, query_instance,
                            scale_factor, to_input_pixels, to_original_pixels)

__all__ = [
    'is_query', 'query_boxes', 'query_instance', 'scale_factor',
    'to_input_pixels', 'to_original_pixels'
]
