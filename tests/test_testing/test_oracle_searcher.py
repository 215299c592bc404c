# Copyright (c) mmpsearch contributors. All rights reserved.
"""The oracle searcher (mmpsearch.testing) predicts on its inputs' device.

The 'meta' device stands in for CUDA: it raises on a tensor of another
device as CUDA does, and needs no GPU.
"""
import json

import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from mmpsearch.testing.oracle_searcher import OracleColourSearcher


def _sample(split, img_id, boxes):
    ds = DetDataSample(
        metainfo=dict(img_id=img_id, split=split, scale_factor=(2.0, 0.5)))
    ds.gt_instances = InstanceData(bboxes=boxes)
    return ds


def test_predict_stays_on_the_inputs_device(tmp_path):
    boxes_file = tmp_path / 'boxes.json'
    boxes_file.write_text(json.dumps({'a.jpg': [[1, 2, 10, 20]]}))
    model = OracleColourSearcher(str(boxes_file))
    img = torch.zeros(3, 8, 8, device='meta')
    query = _sample('query', 'q.jpg', torch.zeros(0, 4, device='meta'))
    # a gallery image without boxes in the file
    gallery = _sample('gallery', 'b.jpg', torch.zeros(0, 4))
    out = model.predict([img, img], [query, gallery])
    for ds in out:
        pred = ds.pred_instances
        for key in ('bboxes', 'scores', 'labels', 'embeddings'):
            assert pred[key].device.type == 'meta', key
    # on the CPU: the boxes scaled by the scale factor before cropping
    img = torch.arange(3 * 40 * 40, dtype=torch.float32).reshape(3, 40, 40)
    query = _sample('query', 'q.jpg', torch.tensor([[1., 2., 10., 20.]]))
    gallery = _sample('gallery', 'a.jpg', torch.zeros(0, 4))
    q, g = model.predict([img, img], [query, gallery])
    torch.testing.assert_close(q.pred_instances.embeddings,
                               g.pred_instances.embeddings)
    torch.testing.assert_close(
        q.pred_instances.embeddings,
        model._embed(img, torch.tensor([[2., 1., 20., 10.]])))
    assert g.pred_instances.bboxes.tolist() == [[1., 2., 10., 20.]]
