# Copyright (c) mmpsearch contributors. All rights reserved.
# PSDiff's ReID teacher on PRW: the CUHK-SYSU teacher's recipe
# (teacher_r50_cuhk.py) on the PRW training frames and their 482 identities.
#
#   python tools/train.py configs/teacher/teacher_r50_prw.py
#   python tools/extract_teacher_embeddings.py \
#       configs/teacher/teacher_r50_prw.py \
#       work_dirs/teacher_r50_prw/epoch_60.pth \
#       --out data/PRW/teacher_r50_train.npz
from mmengine.config import read_base

from mmpsearch.datasets.prw import PRWDataset

with read_base():
    from .teacher_r50_cuhk import *  # noqa: F401,F403

# Labeled identities of the PRW training split (as released).
num_classes = 482
data_root = 'data/PRW/'
person_search_train = dict(type=PRWDataset, data_root=data_root, split='train')

model.head.update(num_classes=num_classes)  # noqa: F405
train_dataloader.dataset.update(  # noqa: F405
    dataset=person_search_train, num_classes=num_classes)
val_dataloader.dataset.update(  # noqa: F405
    dataset=person_search_train, num_classes=num_classes)
test_dataloader = val_dataloader  # noqa: F405
