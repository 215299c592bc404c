# Copyright (c) mmpsearch contributors. All rights reserved.
# psdiff_r50_prw.py with the paper's training recipe exactly (see
# psdiff_r50_cuhk_paper.py).
from mmengine.config import read_base

with read_base():
    from .psdiff_r50_cuhk_paper import *  # noqa: F401,F403
    # the dataset after the recipe: its variables replace CUHK-SYSU's
    from .._base_.datasets.prw import *  # noqa: F401,F403
    from .psdiff_r50_prw import noise_generator, teacher_embeds  # noqa

noise_generator = dict(noise_generator, center_teacher=center_teacher)  # noqa
train_pipeline = [*train_transforms, noise_generator, pack_inputs]  # noqa
train_dataloader.update(  # noqa: F405
    dict(batch_size=8, dataset=dict(pipeline=train_pipeline)))
