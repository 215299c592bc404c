# Copyright (c) mmpsearch contributors. All rights reserved.
# The ReID teacher of `make demo-quick`: teacher_synthetic.py unchanged (150
# iterations), on the quick variant's own, smaller scenes, so that nothing of
# `make demo`'s data or work dirs is read or written:
#
#   python tools/dataset_converters/make_synthetic.py --format cuhk \
#       --out data/synthetic_cuhk_quick --num-images 300 --num-ids 200 \
#       --seed 0
#   python tools/train.py configs/teacher/teacher_synthetic_quick.py
#
# 300 scenes with 200 identities still hold all 100 training identities
# (num_classes of teacher_synthetic.py).
from mmengine.config import read_base

with read_base():
    from .teacher_synthetic import *  # noqa: F401,F403

data_root = 'data/synthetic_cuhk_quick/'
person_search_train = dict(
    person_search_train,  # noqa: F405
    data_root=data_root)
# 150 training scenes give an identity 2-4 boxes: hold out every third
# (every fifth would leave the validation subset empty)
train_dataloader['dataset'].update(  # noqa: F405
    dataset=person_search_train, holdout_every=3)
val_dataloader['dataset'].update(  # noqa: F405
    dataset=person_search_train, holdout_every=3)
test_dataloader = val_dataloader  # noqa: F405
