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
    # after the leaf, so that these names win: the paper's recipe as
    # psdiff_r50_cuhk_paper.py sets it
    from .psdiff_r50_cuhk_paper import center_teacher
    from .psdiff_r50_cuhk_paper import model as __paper_model

# its criterion and one CDL, its training and test settings (this file's
# parent keeps psdiff_r50_cuhk.py's test settings, so the paper's are
# psdiff_r50_cuhk_paper.py's)
model.bbox_head.criterion = __paper_model.bbox_head.criterion  # noqa: F405
model.bbox_head.num_layers = __paper_model.bbox_head.num_layers  # noqa: F405
model.train_cfg = __paper_model.train_cfg  # noqa: F405
model.test_cfg = __paper_model.test_cfg  # noqa: F405
# its uncentred teacher targets
noise_generator = dict(noise_generator, center_teacher=center_teacher)  # noqa
train_pipeline = [*train_transforms, noise_generator, pack_inputs]  # noqa
train_dataloader.update(  # noqa: F405
    dict(dataset=dict(pipeline=train_pipeline)))
