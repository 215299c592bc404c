# Copyright (c) mmpsearch contributors. All rights reserved.
"""tools/analysis_tools/count_params.py against the built model."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmpsearch.registry import MODELS
from mmpsearch.utils.setup_env import register_all_modules
from ..conftest import load_tool

ROOT = osp.join(osp.dirname(__file__), '..', '..')
count_params = load_tool('tools/analysis_tools/count_params.py',
                         'count_params')


def test_parts_add_up_to_the_trainable_parameters_of_the_model(tiny_sd_dir):
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(
        osp.join(ROOT, 'tests', 'data', 'configs', 'diffps_sd21_synthetic.py'))
    cfg.model.backbone.sd_path = tiny_sd_dir
    model = MODELS.build(cfg.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = count_params.count_parts(cfg, skip=['backbone'])
    assert 'backbone' not in parts and parts['reid_roi_head'] > 0
    assert sum(parts.values()) == trainable
    # the frozen Stable Diffusion adds nothing when it is built
    with_sd = count_params.count_parts(cfg)
    assert with_sd.pop('backbone') == 0
    assert with_sd == parts
    with pytest.raises(KeyError, match=r"\['backbon'\]"):
        count_params.count_parts(cfg, skip=['backbon'])
