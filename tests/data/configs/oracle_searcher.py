# The oracle searcher (mmpsearch/testing/oracle_searcher.py) on synthetic
# scenes.
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmengine.config import read_base

from mmpsearch.testing import OracleColourSearcher

with read_base():
    from ....configs._base_.datasets.synthetic_cuhk import *  # noqa: F401,F403
    from ....configs._base_.default_runtime import *  # noqa: F401,F403

boxes_file = 'boxes.json'  # set by the test
model = dict(
    type=OracleColourSearcher,
    boxes_file=boxes_file,
    data_preprocessor=dict(
        type=DetDataPreprocessor,
        mean=[0, 0, 0],
        std=[1, 1, 1],
        bgr_to_rgb=False,
        pad_size_divisor=1))
test_cfg = dict(type='TestLoop')
val_cfg = dict(type='ValLoop')
train_dataloader = None  # test-only model
