# Copyright (c) mmpsearch contributors. All rights reserved.
# A two-step person-search baseline (Xiao et al., CVPR 2017; PSDiff Table I):
# mmdet's standard Faster R-CNN R50-FPN (faster_rcnn_r50_fpn.py here) with
# one class, "person", then a separately trained, frozen ReID model on the
# crops of its detections.
# The configs that use this file set `model.reid` (the ReID model, its
# checkpoint and its crop size).
from mmengine.config import read_base

from mmpsearch.models.detectors import TwoStepPersonSearch

with read_base():
    from .faster_rcnn_r50_fpn import model as __faster_rcnn

model = dict(
    type=TwoStepPersonSearch,
    data_preprocessor=__faster_rcnn.pop('data_preprocessor'),
    detector=__faster_rcnn,
    # set by the configs that use this file
    reid=dict(model=None, checkpoint=None, crop_size=(256, 128)))
