# Copyright (c) mmpsearch contributors. All rights reserved.
from .gallery_index import GalleryIndex
from .inference import (SearchMatch, denoising_steps, embed_query,
                        index_gallery, init_searcher, list_gallery_images,
                        search)
from .media_indexing import bad_inputs, index_sources, model_identity
from .sharded_index import (CorruptShardError, IndexModelMismatchError,
                            ShardedIndex)
from .teacher_embeddings import (build_crop_dataset,
                                 extract_teacher_embeddings,
                                 write_teacher_embeddings)
from .vector_search import VectorIndex
from .video_search import (Appearance, IndexHit, contact_sheet,
                           group_appearances, search_index, write_hits)

__all__ = [
    'init_searcher', 'index_gallery', 'search', 'embed_query', 'GalleryIndex',
    'denoising_steps', 'SearchMatch', 'list_gallery_images',
    'build_crop_dataset', 'extract_teacher_embeddings',
    'write_teacher_embeddings', 'ShardedIndex', 'index_sources',
    'search_index', 'model_identity', 'bad_inputs', 'VectorIndex',
    'Appearance', 'IndexHit', 'group_appearances', 'contact_sheet',
    'write_hits', 'CorruptShardError', 'IndexModelMismatchError'
]
