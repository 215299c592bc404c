# Copyright (c) mmpsearch contributors. All rights reserved.
"""Helpers shared by the evaluation tests: the eval_search.py module,
results files of exact detections and model outputs made from a results
dict."""
from typing import Optional, Sequence

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from ..conftest import load_tool


def load_eval_search():
    """tools/analysis_tools/eval_search.py as a module (a fresh one)."""
    return load_tool('tools/analysis_tools/eval_search.py', 'eval_search_cli')


def results_to_samples(results: dict,
                       query_order: Optional[Sequence[int]] = None) -> list:
    """Model outputs as the test loop gives them: the gallery split first,
    then the query split (in ``query_order``, default as listed)."""
    out = []
    for img_id, item in results['gallery'].items():
        s = DetDataSample(metainfo=dict(img_id=img_id, split='gallery'))
        s.pred_instances = InstanceData(
            bboxes=torch.from_numpy(item['bboxes']),
            scores=torch.from_numpy(item['scores']),
            labels=torch.zeros(len(item['scores']), dtype=torch.long),
            embeddings=torch.from_numpy(item['embeddings']))
        out.append(s)
    if query_order is None:
        query_order = range(len(results['query']))
    for i in query_order:
        q = results['query'][i]
        s = DetDataSample(
            metainfo=dict(
                img_id=q['img_id'], split='query', query_index=int(i)))
        s.pred_instances = InstanceData(
            bboxes=torch.from_numpy(q['bbox'][None]),
            scores=torch.ones(1),
            labels=torch.zeros(1, dtype=torch.long),
            embeddings=torch.from_numpy(q['embedding'][None]))
        out.append(s)
    return out


def search_results(protocol, rng=None) -> dict:
    """Every person detected exactly; with ``rng`` the embeddings are
    random, else one-hot by identity (a perfect searcher)."""
    dim = 64
    gallery = {}
    for img_id, g in protocol.gallery.items():
        n = len(g.person_ids)
        if rng is None:
            emb = np.zeros((n, dim), np.float32)
            emb[np.arange(n), (g.person_ids % (dim - 1)) + 1] = 1
        else:
            emb = rng.standard_normal((n, dim)).astype(np.float32)
        gallery[img_id] = dict(
            bboxes=g.boxes.astype(np.float32),
            scores=np.full(n, 0.9, np.float32),
            embeddings=emb)
    query = []
    for q in protocol.queries:
        emb = np.zeros(dim, np.float32)
        if rng is None:
            emb[q.person_id % (dim - 1) + 1] = 1
        else:
            emb = rng.standard_normal(dim).astype(np.float32)
        query.append(
            dict(
                img_id=q.img_id, bbox=q.box.astype(np.float32), embedding=emb))
    return dict(gallery=gallery, query=query)
