# Copyright (c) mmpsearch contributors. All rights reserved.
# `make demo-quick`: psdiff_r18_synthetic.py (model, recipe and test settings
# unchanged) on the quick variant's own scenes and teacher, for a short
# schedule: 500 iterations of 4 images instead of 4,500 (warm-up 100 as
# there, lr /10 at 400, i.e. at 80 % as there), one checkpoint at the end.
# A check that the whole chain works in minutes, not a result: its numbers
# are well below those of the full schedule (docs/en/model_zoo.md).
#
#   python tools/dataset_converters/make_synthetic.py --format cuhk \
#       --out data/synthetic_cuhk_quick --num-images 300 --num-ids 200 \
#       --seed 0
#   python tools/train.py configs/teacher/teacher_synthetic_quick.py
#   python tools/extract_teacher_embeddings.py \
#       configs/teacher/teacher_synthetic_quick.py \
#       $(cat work_dirs/teacher_synthetic_quick/last_checkpoint) \
#       --out work_dirs/teacher_synthetic_quick/teacher_embeddings.npz
#   python tools/train.py configs/psdiff/psdiff_r18_synthetic_quick.py
# (`make demo-quick` runs these, then tools/test.py at 1 and 8 steps.)
from mmengine.config import read_base

with read_base():
    from .psdiff_r18_synthetic import *  # noqa: F401,F403

data_root = 'data/synthetic_cuhk_quick/'
teacher_embeds = 'work_dirs/teacher_synthetic_quick/teacher_embeddings.npz'
teacher_ckpt = 'work_dirs/teacher_synthetic_quick/iter_150.pth'

# the quick variant's data and teacher
model['backbone']['init_cfg']['checkpoint'] = teacher_ckpt  # noqa: F405
noise_generator = dict(  # noqa: F405
    noise_generator, teacher_embeds=teacher_embeds)  # noqa: F405
train_pipeline = [
    noise_generator if 'teacher_embeds' in t else t
    for t in train_pipeline  # noqa: F405
]
train_dataloader['dataset'].update(  # noqa: F405
    data_root=data_root, pipeline=train_pipeline)
val_dataloader['dataset']['datasets'] = [  # noqa: F405
    dict(d, data_root=data_root)
    for d in val_dataloader['dataset']['datasets']  # noqa: F405
]
test_dataloader = val_dataloader  # noqa: F405
val_evaluator = dict(val_evaluator, data_root=data_root)  # noqa: F405
test_evaluator = val_evaluator

# the short schedule: the parent's, shortened
max_iters = 500
train_cfg.update(max_iters=max_iters, val_interval=max_iters)  # noqa: F405
lr_decay = dict(lr_decay, end=max_iters, milestones=[400])  # noqa: F405
param_scheduler = [lr_warmup, lr_decay]  # noqa: F405
default_hooks['checkpoint'].update(interval=max_iters)  # noqa: F405
