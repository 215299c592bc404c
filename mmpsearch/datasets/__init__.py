# Copyright (c) mmpsearch contributors. All rights reserved.
from .cuhk_subsets import (CUHK_SUBSETS, available_subsets, load_cuhk_subset,
                           load_cuhk_subsets, resolve_subsets)
from .cuhk_sysu import CUHK_GALLERY_SIZES, CUHKSYSUDataset, load_cuhk_protocol
from .file_checks import clear_cache
from .person_crops import PersonCropDataset
from .protocol import GalleryImage, Query, QuerySubset, SearchProtocol
from .prw import PRWDataset, load_prw_protocol, prw_cam_id
from .synthetic import make_synthetic
from .teacher_cache import TeacherEmbeddings, save_teacher_embeddings
from .transforms import (CropPersonBox, DualNoiseGenerator,
                         LoadPersonSearchAnnotations, PackPersonSearchInputs)

__all__ = [
    'CUHKSYSUDataset', 'PRWDataset', 'PersonCropDataset', 'load_cuhk_protocol',
    'load_prw_protocol', 'CUHK_GALLERY_SIZES', 'prw_cam_id', 'make_synthetic',
    'clear_cache', 'GalleryImage', 'Query', 'SearchProtocol',
    'TeacherEmbeddings', 'save_teacher_embeddings',
    'LoadPersonSearchAnnotations', 'PackPersonSearchInputs',
    'DualNoiseGenerator', 'CropPersonBox', 'CUHK_SUBSETS', 'QuerySubset',
    'available_subsets', 'load_cuhk_subset', 'load_cuhk_subsets',
    'resolve_subsets'
]
