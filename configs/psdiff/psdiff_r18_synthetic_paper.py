# Copyright (c) mmpsearch contributors. All rights reserved.
# psdiff_r18_synthetic.py with the paper's training recipe exactly
# (psdiff_r50_cuhk_paper.py): Hungarian matching, 0/1 focal targets, one
# CDL pass, uncentred teacher targets. The row of docs/en/model_zoo.md that
# shows what each departure of the shipped recipe buys.
#
#   python tools/train.py configs/psdiff/psdiff_r18_synthetic_paper.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=$(cat \
#       work_dirs/teacher_synthetic/last_checkpoint)
from mmengine.config import read_base

with read_base():
    from .psdiff_r18_synthetic import *  # noqa: F401,F403
    # after the leaf, so that these names win
    from .psdiff_r50_cuhk_paper import (center_teacher, paper_criterion,
                                        paper_num_layers, paper_test_cfg,
                                        paper_train_cfg)

model['bbox_head']['criterion'] = paper_criterion  # noqa: F405
model['bbox_head']['num_layers'] = paper_num_layers  # noqa: F405
model['train_cfg'] = paper_train_cfg  # noqa: F405
model['test_cfg'].update(paper_test_cfg)  # noqa: F405
train_pipeline = [
    *train_transforms,  # noqa: F405
    dict(noise_generator, center_teacher=center_teacher),  # noqa: F405
    pack_inputs  # noqa: F405
]
train_dataloader.update(  # noqa: F405
    dict(dataset=dict(pipeline=train_pipeline)))
