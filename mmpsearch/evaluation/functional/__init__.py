# Copyright (c) mmpsearch contributors. All rights reserved.
"""Vectorised person-search protocol: search mAP / top-k of CUHK-SYSU and
PRW, and gallery detection AP / recall."""
from .box_ops import paired_iou, search_iou_threshold
from .cbgm import CBGM, CBGM_DEFAULTS, check_cbgm_k, resolve_cbgm_k
from .detection import eval_detection
from .gallery import GalleryDetections, l2_normalize, pack_gallery_detections
from .person_search import (CROSS_CAMERA_SUFFIX, DETECTION_KEYS, SEARCH_KEYS,
                            evaluate_person_search, gallery_size_suffix,
                            subset_suffix)
from .protocol_settings import ProtocolSettings, check_protocol_settings
from .ranking import average_precision, count_at_least
from .search import eval_search_cuhk, eval_search_prw

__all__ = [
    'paired_iou', 'search_iou_threshold', 'eval_detection',
    'GalleryDetections', 'l2_normalize', 'pack_gallery_detections',
    'evaluate_person_search', 'gallery_size_suffix', 'SEARCH_KEYS',
    'DETECTION_KEYS', 'CROSS_CAMERA_SUFFIX', 'average_precision',
    'count_at_least', 'eval_search_cuhk', 'eval_search_prw', 'CBGM',
    'CBGM_DEFAULTS', 'check_cbgm_k', 'resolve_cbgm_k', 'subset_suffix',
    'ProtocolSettings', 'check_protocol_settings'
]
