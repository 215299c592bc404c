# Copyright (c) mmpsearch contributors. All rights reserved.
"""The evaluation protocol of a person-search test set, as plain data.

Both the datasets (which read the released annotation files) and the metric
(which scores saved results) speak in these types, so that a results file can
be re-scored without building a model or a dataloader.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

#: The splits of a person-search dataset: training scenes, the gallery and
#: the query persons.
SPLITS = ('train', 'gallery', 'query')


@dataclass
class GalleryImage:
    """Ground truth of one gallery image.

    Attributes:
        img_id (str): The file name, e.g. ``'s22.jpg'`` or
            ``'c1s1_000151.jpg'``.
        boxes (np.ndarray): float32 (n, 4), x1y1x2y2 in pixels.
        person_ids (np.ndarray): int64 (n,), -1 for unlabeled persons.
        cam_id (int): Camera of the frame (PRW), -1 when not defined.
    """
    img_id: str
    boxes: np.ndarray
    person_ids: np.ndarray
    cam_id: int = -1


@dataclass
class Query:
    """One query person.

    Attributes:
        img_id (str): Image that holds the query.
        box (np.ndarray): float32 (4,), x1y1x2y2 in pixels.
        person_id (int): Identity, the same id as in the gallery split.
        cam_id (int): Camera (PRW), -1 when not defined.
        gallery (list, optional): CUHK-SYSU only: the query's own gallery
            from ``TestG{N}.mat``, in file order, as ``(img_id, gt_box)``
            where ``gt_box`` is float32 (4,) x1y1x2y2 or ``None`` when the
            image does not hold the query. ``None`` for PRW, where the
            gallery is every test frame but the query's own (or only frames
            of other cameras in the cross-camera variant).
    """
    img_id: str
    box: np.ndarray
    person_id: int
    cam_id: int = -1
    gallery: Optional[List[Tuple[str, Optional[np.ndarray]]]] = None


@dataclass
class SearchProtocol:
    """Everything needed to score a run on one test set.

    Attributes:
        name (str): ``'cuhk'`` or ``'prw'``.
        gallery (dict): ``img_id -> GalleryImage`` for every gallery image
            (CUHK-SYSU: the 6,978 images of ``pool.mat``; PRW: the 6,112
            frames of ``frame_test.mat``), in file order.
        queries (list[Query]): In the order of the query split.
        gallery_size (int, optional): CUHK-SYSU gallery size of
            ``queries[i].gallery``.
    """
    name: str
    gallery: Dict[str, GalleryImage] = field(default_factory=dict)
    queries: List[Query] = field(default_factory=list)
    gallery_size: Optional[int] = None


@dataclass
class QuerySubset:
    """Some queries of a test set, each searched in its own gallery list:
    the CUHK-SYSU occlusion and low-resolution subsets
    (``annotation/test/subset/{Occlusion,Resolution}.mat``).

    Attributes:
        name (str): ``'occlusion'`` or ``'resolution'``; the search keys of
            the subset end in ``_{name}``.
        protocol (SearchProtocol): ``queries[k]`` is the k-th query of the
            subset file with its gallery list; ``gallery`` is the full test
            gallery (the same dict as the full protocol's).
        query_indices (np.ndarray): int64 (n,), the index of
            ``protocol.queries[k]`` among the queries of the full protocol
            (of ``TestG{N}.mat``, the order of a results file's queries).
        source (str): The file the subset was read from.
    """
    name: str
    protocol: SearchProtocol
    query_indices: np.ndarray
    source: str = ''
