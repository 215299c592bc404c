# Copyright (c) mmpsearch contributors. All rights reserved.
from .inference import (GalleryIndex, SearchMatch, denoising_steps,
                        embed_query, index_gallery, init_searcher,
                        list_gallery_images, search)
from .teacher_embeddings import (build_crop_dataset,
                                 extract_teacher_embeddings,
                                 write_teacher_embeddings)

__all__ = [
    'init_searcher', 'index_gallery', 'search', 'embed_query', 'GalleryIndex',
    'denoising_steps',
    'SearchMatch', 'list_gallery_images', 'build_crop_dataset',
    'extract_teacher_embeddings', 'write_teacher_embeddings'
]
