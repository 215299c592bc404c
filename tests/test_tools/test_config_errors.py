# Copyright (c) mmpsearch contributors. All rights reserved.
"""Errors that name the wrong key or file before any work: misspelled
``--cfg-options`` arguments, ``env_cfg`` and hook keys, offline weights
downloads, truncated checkpoints and teacher files."""
import glob
import os.path as osp
from urllib.error import URLError

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmpsearch.datasets.teacher_cache import (TeacherEmbeddings,
                                              save_teacher_embeddings)
from mmpsearch.utils import register_all_modules
from mmpsearch.utils.cfg_signature import check_config_keys
from mmpsearch.utils.config import load_config
from mmpsearch.utils.safe_load import (CorruptCheckpointError,
                                       WeightsDownloadError, load_from_local,
                                       safe_checkpoint_loading)
from .conftest import REPO

PSDIFF = str(REPO / 'configs' / 'psdiff' / 'psdiff_r18_synthetic.py')

register_all_modules(init_default_scope=False)


# 1. misspelled last key of --cfg-options -------------------------------
@pytest.mark.parametrize('key,right', [
    ('model.backbone.depht', 'depth'),
    ('model.bbox_head.denoiser.num_clases', 'num_classes'),
    ('model.test_cfg.sampling_stepz', 'sampling_steps'),
    ('optim_wrapper.optimizer.lrr', 'lr'),
    ('train_cfg.max_iterz', 'max_iters'),
])
def test_misspelled_argument_is_refused_with_a_suggestion(key, right):
    with pytest.raises(KeyError, match=f"did you mean '{right}'") as err:
        load_config(PSDIFF, {key: 4})
    assert key in str(err.value)


@pytest.mark.parametrize(
    'key',
    [
        'model.backbone.init_cfg.checkpoint',  # an existing key
        'model.backbone.with_cp',  # a new, real argument of ResNet
        'model.backbone._delete_',  # mmengine's ConfigDict semantics
        'model.test_cfg.seed',
        'param_scheduler.0.convert_to_iter_based',  # popped by the Runner
        'default_hooks.checkpoint.priority',
        'default_hooks.checkpoint.max_keep_ckpts',
        'default_hooks.checkpoint.meta',  # CheckpointHook -> save_checkpoint
        # built by build_norm_layer: not checked
        'model.backbone.norm_cfg.eps',
    ])
def test_legitimate_keys_are_accepted(key):
    load_config(PSDIFF, {key: True if key.endswith('_delete_') else 1})


def test_every_shipped_config_passes_the_checks():
    files = [
        f for f in sorted(
            glob.glob(str(REPO / 'configs/**/*.py'), recursive=True))
        if '_base_' not in f
    ]
    assert len(files) > 10
    for f in files:
        cfg = Config.fromfile(f)
        # every type= dict, not only hooks; env_cfg; dataloaders
        check_config_keys(cfg, whole=True, typed_tops=None)


# 2. env_cfg -------------------------------------------------------------
def test_env_cfg_typo_is_refused():
    with pytest.raises(KeyError, match="did you mean 'cudnn_benchmark'"):
        load_config(PSDIFF, {'env_cfg.cudnn_benchmrk': True})
    cfg = load_config(PSDIFF, {'env_cfg.resource_limit': 8192})
    assert cfg.env_cfg.resource_limit == 8192


# 3. hooks ---------------------------------------------------------------
def test_hook_option_typo_is_refused_at_startup():
    with pytest.raises(KeyError, match="did you mean 'interval'"):
        load_config(PSDIFF, {'default_hooks.checkpoint.intervl': 1})
    hooks = [dict(type='mmpsearch.FiniteLossHook', intervl=1)]
    with pytest.raises(KeyError, match='custom_hooks.0.intervl'):
        load_config(PSDIFF, {'custom_hooks': hooks})


# 4. offline weights download ------------------------------------------
def test_offline_download_names_the_weights_and_the_way_out(
        monkeypatch, tmp_path):
    import torch.hub
    from mmengine.runner.checkpoint import CheckpointLoader

    def offline(url, dst, *args, **kwargs):
        raise URLError('[Errno -3] Temporary failure in name resolution')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    with pytest.raises(WeightsDownloadError) as err, \
            safe_checkpoint_loading():
        CheckpointLoader.load_checkpoint('torchvision://resnet50')
    msg = str(err.value)
    assert 'resnet50' in msg and 'download.pytorch.org' in msg
    assert str(tmp_path) in msg  # where to put the file
    assert 'init_cfg.checkpoint' in msg


# 5. truncated / corrupt files ------------------------------------------
@pytest.mark.parametrize('cut', ['half', 'empty', 'garbage'])
def test_truncated_checkpoint_names_the_file(tmp_path, cut):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.zeros(500)}}, good)
    data = good.read_bytes()
    bad = tmp_path / 'bad.pth'
    bad.write_bytes({
        'half': data[:len(data) // 2],
        'empty': b'',
        'garbage': b'not a checkpoint'
    }[cut])
    with pytest.raises(CorruptCheckpointError, match='truncated') as err:
        load_from_local(str(bad))
    assert str(bad) in str(err.value)


@pytest.mark.parametrize('cut', ['half', 'empty', 'crc'])
def test_corrupt_teacher_file_names_the_file(tmp_path, cut):
    good = str(tmp_path / 'teacher.npz')
    save_teacher_embeddings(good, ['a'], [np.zeros((2, 4))], [np.ones((2, 8))])
    data = bytearray(open(good, 'rb').read())
    if cut == 'half':
        data = data[:len(data) // 2]
    elif cut == 'empty':
        data = b''
    else:
        data[100:140] = b'\0' * 40  # inside the first array's bytes
    bad = osp.join(str(tmp_path), 'bad.npz')
    open(bad, 'wb').write(bytes(data))
    with pytest.raises(ValueError, match='truncated or corrupt') as err:
        TeacherEmbeddings(bad)
    assert bad in str(err.value)


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tools_print_the_typo_without_a_traceback(tool):
    """The tools turn the check's error into a one-line message and exit
    code 1 before anything is built."""
    import subprocess
    import sys
    args = [sys.executable, str(REPO / 'tools' / tool), PSDIFF]
    if tool == 'test.py':
        args.append('no_such.pth')
    args += ['--cfg-options', 'model.backbone.depht=18']
    proc = subprocess.run(
        args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "did you mean 'depth'" in proc.stderr
    assert 'Traceback' not in proc.stderr
