# Copyright (c) mmpsearch contributors. All rights reserved.
"""Score a results-format dict under a dataset's standard protocol."""
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Union

import numpy as np

from mmpsearch.datasets.protocol import QuerySubset, SearchProtocol
from mmpsearch.utils.thresholds import check_unit_interval
from .cbgm import CBGM, check_cbgm_k_bounds, resolve_cbgm_k
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


def subset_suffix(name: str, gallery_size: Optional[int] = None) -> str:
    """Suffix of the search keys of a CUHK-SYSU query subset:
    ``'_occlusion'`` (``mAP_occlusion``, ...) when its queries are searched
    in the gallery lists of the subset file, ``'_occlusion_g50'`` in their
    ``TestG50`` lists."""
    return f'_{name}' + ('' if gallery_size is None else
                         gallery_size_suffix(gallery_size))


def evaluate_person_search(
    results: dict,
    protocols: Union[SearchProtocol, Sequence[SearchProtocol]],
    score_thr: float = 0.5,
    cross_camera: bool = False,
    validate: bool = True,
    cbgm: bool = False,
    cbgm_k1: Optional[int] = None,
    cbgm_k2: Optional[int] = None,
    subsets: Sequence[QuerySubset] = ()
) -> Dict[str, float]:
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
    - ``mAP_{name}``, ``top1_{name}``, ...: CUHK-SYSU query subsets
      (``name`` ``'occlusion'`` or ``'resolution'``), each query searched
      in the gallery list of the subset file (``mAP_{name}_g{N}``: in its
      ``TestG{N}`` list, a subset loaded with ``gallery_size=N``).

    Args:
        results (dict): In the results format.
        protocols (SearchProtocol | Sequence[SearchProtocol]): One protocol
            or several CUHK-SYSU protocols (gallery sizes) that share their
            gallery.
        score_thr (float): Detections scoring below it are dropped.
        cross_camera (bool): PRW: also score the cross-camera variant.
        validate (bool): Check ``results`` against the protocol first.
        cbgm (bool): Re-rank the search with Context Bipartite Graph
            Matching (SeqNet, AAAI 2021; see ``cbgm.py``): every search key
            is then the "+CBGM" number (detection keys are unchanged). It
            needs the detections of each query's image in
            ``results['gallery']``.
        cbgm_k1, cbgm_k2 (int, optional): CBGM's top-k1 detections and k2
            context persons; ``None``: SeqNet's 10 / 3 (CUHK-SYSU) or
            30 / 4 (PRW).
        subsets (Sequence[QuerySubset]): CUHK-SYSU query subsets (from
            ``load_cuhk_subset``) of the first protocol's queries.

    Returns:
        OrderedDict[str, float]
    """
    # scores >= nan (or >= 5) drops every detection: zeros, not an error
    score_thr = check_unit_interval(score_thr, 'score_thr')
    if isinstance(protocols, SearchProtocol):
        protocols = [protocols]
    protocols = list(protocols)
    if not protocols:
        raise ValueError('evaluate_person_search needs a protocol')
    first = protocols[0]
    if cbgm:
        cbgm_k1, cbgm_k2 = resolve_cbgm_k(first.name, cbgm_k1, cbgm_k2)
    elif cbgm_k1 is not None or cbgm_k2 is not None:
        raise ValueError('cbgm_k1 / cbgm_k2 are given but cbgm is False')
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

    rerank = None
    if cbgm:
        # k2 = 100000 allocated a (Q, k2, D) context before failing
        check_cbgm_k_bounds(results, first.name, cbgm_k1, cbgm_k2, score_thr)
        rerank = CBGM.from_results(results, cbgm_k1, cbgm_k2, score_thr)

    out: Dict[str, float] = OrderedDict()

    def put(scores: dict, suffix: str) -> None:
        for key in SEARCH_KEYS:
            out[key + suffix] = float(scores[key])

    for i, protocol in enumerate(protocols):
        if protocol.name == 'cuhk':
            scores = eval_search_cuhk(
                pack, q_emb, protocol, DEFAULT_TOPK, cbgm=rerank)
            put(scores,
                '' if i == 0 else gallery_size_suffix(protocol.gallery_size))
        elif protocol.name == 'prw':
            if i > 0:
                raise ValueError('PRW has one protocol; got several')
            put(
                eval_search_prw(
                    pack, q_emb, protocol, False, DEFAULT_TOPK, cbgm=rerank),
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
            eval_search_prw(
                pack, q_emb, first, True, DEFAULT_TOPK, cbgm=rerank),
            CROSS_CAMERA_SUFFIX)
    for subset in subsets:
        suffix = subset_suffix(subset.name, subset.protocol.gallery_size)
        if 'mAP' + suffix in out:
            raise ValueError(f'query subset {subset.name!r} is given twice '
                             f'(keys *{suffix})')
        idx = np.asarray(subset.query_indices, np.int64).reshape(-1)
        if first.name != 'cuhk' or (
                subset.protocol.gallery is not first.gallery
                and list(subset.protocol.gallery) != list(first.gallery)):
            raise ValueError(f'query subset {subset.name!r} does not share '
                             'the gallery of the CUHK-SYSU protocol')
        if len(idx) != len(subset.protocol.queries) or (
                idx.size and (idx.min() < 0 or idx.max() >= len(queries))):
            raise ValueError(
                f'query subset {subset.name!r}: query_indices must give '
                f'each of its {len(subset.protocol.queries)} queries an '
                f'index among the {len(queries)} queries of the results')
        sub_rerank = None if rerank is None else CBGM(
            rerank.context[idx], rerank.length[idx], rerank.k1)
        put(
            eval_search_cuhk(
                pack,
                q_emb[idx],
                subset.protocol,
                DEFAULT_TOPK,
                cbgm=sub_rerank), suffix)
    return out
