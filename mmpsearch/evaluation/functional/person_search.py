# Copyright (c) mmpsearch contributors. All rights reserved.
"""Score a results-format dict under a dataset's standard protocol."""
from collections import OrderedDict
from typing import Dict, Sequence, Union

import numpy as np

from mmpsearch.datasets.protocol import SearchProtocol
from .detection import eval_detection
from .gallery import pack_gallery_detections
from .search import DEFAULT_TOPK, eval_search_cuhk, eval_search_prw

SEARCH_KEYS = ('mAP', 'top1', 'top5', 'top10')
DETECTION_KEYS = ('det_ap', 'det_recall', 'labeled_det_ap',
                  'labeled_det_recall')
CROSS_CAMERA_SUFFIX = '_cross_cam'


def gallery_size_suffix(size: int) -> str:
    """Suffix of the search keys of a further CUHK-SYSU gallery size."""
    return f'_g{size}'


def evaluate_person_search(results: dict,
                           protocols: Union[SearchProtocol,
                                            Sequence[SearchProtocol]],
                           score_thr: float = 0.5,
                           cross_camera: bool = False,
                           validate: bool = True) -> Dict[str, float]:
    """Search and detection metrics of ``results`` (the results format of
    ``mmpsearch.evaluation.results_io``).

    Keys (fractions in [0, 1]):

    - ``mAP``, ``top1``, ``top5``, ``top10``: search under the first
      protocol (CUHK-SYSU: its gallery size; PRW: all other frames).
    - ``det_ap``, ``det_recall``, ``labeled_det_ap``, ``labeled_det_recall``:
      detection at IoU 0.5 over all / labeled gallery persons (they do not
      depend on the gallery size).
    - ``mAP_g{N}``, ``top1_g{N}``, ...: CUHK-SYSU protocols after the
      first, of gallery size N.
    - ``mAP_cross_cam``, ``top1_cross_cam``, ...: PRW with
      ``cross_camera=True``, searching only frames of other cameras (the
      unsuffixed keys stay the standard all-frames protocol).

    Args:
        results (dict): In the results format.
        protocols (SearchProtocol | Sequence[SearchProtocol]): One protocol
            or several CUHK-SYSU protocols (gallery sizes) that share their
            gallery.
        score_thr (float): Detections scoring below it are dropped.
        cross_camera (bool): PRW: also score the cross-camera variant.
        validate (bool): Check ``results`` against the protocol first.

    Returns:
        OrderedDict[str, float]
    """
    if isinstance(protocols, SearchProtocol):
        protocols = [protocols]
    protocols = list(protocols)
    if not protocols:
        raise ValueError('evaluate_person_search needs a protocol')
    first = protocols[0]
    if validate:
        from ..results_io import validate_search_results
        validate_search_results(results, first)
    for p in protocols[1:]:
        if list(p.gallery) != list(first.gallery) or p.name != first.name:
            raise ValueError('the protocols to score together must share '
                             'their dataset and gallery images')
        if len(p.queries) != len(first.queries):
            raise ValueError(f'protocol of gallery size {p.gallery_size} has'
                             f' {len(p.queries)} queries, the first has '
                             f'{len(first.queries)}')
    queries = results['query']
    dim = int(queries[0]['embedding'].shape[0]) if queries else 0
    pack = pack_gallery_detections(results['gallery'], list(first.gallery),
                                   score_thr, dim)
    q_emb = np.stack([q['embedding'] for q in queries]) if queries else \
        np.zeros((0, dim), np.float32)

    out: Dict[str, float] = OrderedDict()

    def put(scores: dict, suffix: str) -> None:
        for key in SEARCH_KEYS:
            out[key + suffix] = float(scores[key])

    for i, protocol in enumerate(protocols):
        if protocol.name == 'cuhk':
            scores = eval_search_cuhk(pack, q_emb, protocol, DEFAULT_TOPK)
            put(scores,
                '' if i == 0 else gallery_size_suffix(protocol.gallery_size))
        elif protocol.name == 'prw':
            if i > 0:
                raise ValueError('PRW has one protocol; got several')
            put(
                eval_search_prw(pack, q_emb, protocol, False, DEFAULT_TOPK),
                '')
        else:
            raise ValueError(f'unknown protocol name {protocol.name!r}, '
                             'expected "cuhk" or "prw"')
        if i == 0:
            det = eval_detection(pack, protocol, labeled_only=False)
            lab = eval_detection(pack, protocol, labeled_only=True)
            out['det_ap'] = det['ap']
            out['det_recall'] = det['recall']
            out['labeled_det_ap'] = lab['ap']
            out['labeled_det_recall'] = lab['recall']
    if cross_camera:
        if first.name != 'prw':
            raise ValueError('cross_camera applies to PRW only')
        put(
            eval_search_prw(pack, q_emb, first, True, DEFAULT_TOPK),
            CROSS_CAMERA_SUFFIX)
    return out
