# Copyright (c) mmpsearch contributors. All rights reserved.
"""Single-image inputs of a model, for tests and benchmarks that feed it
random images of their own (not a dataset's)."""
from typing import Any, Dict, Tuple

import torch
from mmdet.structures import DetDataSample


def unscaled_metainfo(img_id: str,
                      shape: Tuple[int, int],
                      split: str = 'gallery',
                      **extra: Any) -> Dict[str, Any]:
    """The metainfo of an image that the pipeline neither resized nor
    padded: ``img_shape``, ``ori_shape``, ``batch_input_shape`` and
    ``pad_shape`` all ``shape`` (h, w), ``scale_factor`` 1; ``extra``
    (e.g. ``diffusion_t``) is added."""
    h, w = shape
    return dict(
        img_id=img_id,
        img_shape=(h, w),
        ori_shape=(h, w),
        scale_factor=(1.0, 1.0),
        split=split,
        batch_input_shape=(h, w),
        pad_shape=(h, w),
        **extra)


def preprocessed_image(model: torch.nn.Module,
                       image: torch.Tensor,
                       img_id: str,
                       split: str = 'gallery') -> Dict[str, Any]:
    """One (3, H, W) image, with :func:`unscaled_metainfo`, through
    ``model.data_preprocessor`` (not training): ``inputs`` and
    ``data_samples``, as ``model.predict`` takes them."""
    sample = DetDataSample(
        metainfo=unscaled_metainfo(img_id, tuple(image.shape[-2:]), split))
    return model.data_preprocessor(
        dict(inputs=[image], data_samples=[sample]), False)
