# Copyright (c) mmpsearch contributors. All rights reserved.
"""Checkpoints load with weights_only=True and an allow-list; a crafted
checkpoint is refused and its payload never runs."""
import os

import pytest
import torch
from mmengine.runner import load_checkpoint

from mmpsearch.utils import (UnsafeCheckpointError, register_all_modules,
                             safe_checkpoint_loading, safe_torch_load)
from .conftest import run_tool


@pytest.fixture(scope='module', autouse=True)
def safe_loaders():
    """mmengine's loaders as every entry point sets them: made safe within
    ``safe_checkpoint_loading()`` (neither importing mmpsearch nor
    ``register_all_modules()`` does it)."""
    register_all_modules(init_default_scope=False)
    with safe_checkpoint_loading():
        yield


class _Payload:
    """Pickles to a call of os.system: what a malicious checkpoint holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def _malicious_checkpoint(path, marker):
    torch.save({'state_dict': {}, 'meta': {'x': _Payload(marker)}}, path)
    # prove the payload works when the safety is off (without running it
    # here): the pickle names os.system / posix.system
    assert b'system' in path.read_bytes()


def test_safe_load_refuses_and_runs_nothing(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = tmp_path / 'evil.pth'
    _malicious_checkpoint(ckpt, marker)
    with pytest.raises(UnsafeCheckpointError, match='Refused to load'):
        safe_torch_load(str(ckpt))
    assert not marker.exists()


def test_mmengine_load_checkpoint_is_safe(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = tmp_path / 'evil.pth'
    _malicious_checkpoint(ckpt, marker)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UnsafeCheckpointError, match='system'):
        load_checkpoint(model, str(ckpt), map_location='cpu')
    assert not marker.exists()


def test_train_resume_refuses_malicious(tmp_path, toy_config):
    marker = tmp_path / 'pwned'
    ckpt = tmp_path / 'evil.pth'
    _malicious_checkpoint(ckpt, marker)
    proc = run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(tmp_path / 'work'), '--resume',
        str(ckpt)
    ],
                    check=False)
    assert proc.returncode != 0
    assert 'Refused to load checkpoint' in proc.stderr
    assert 'none of its code ran' in proc.stderr
    assert not marker.exists()


def test_real_checkpoint_types_are_allowed(tmp_path, toy_config):
    """A checkpoint written by mmengine's Runner (message hub, numpy
    scalars, Counter in MultiStepLR) loads under weights_only=True."""
    run_tool([
        'tools/train.py', toy_config, '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_iters=2'
    ])
    ckpt = safe_torch_load(str(tmp_path / 'iter_2.pth'))
    assert set(ckpt) >= {'meta', 'state_dict', 'optimizer', 'message_hub'}
    # and plain torch.load with weights_only=True and no allow-list fails:
    # the allow-list is what makes it work, not a switched-off safety
    with pytest.raises(Exception):
        torch.load(str(tmp_path / 'iter_2.pth'), weights_only=True)


def test_remote_weights_load_safely(tmp_path, monkeypatch):
    """torchvision:// / http(s):// weights go through the same allow-list
    (mmengine would use torch's unrestricted loader)."""
    import torch.hub
    from mmengine.runner.checkpoint import CheckpointLoader
    marker = tmp_path / 'pwned'
    served = tmp_path / 'served.pth'
    _malicious_checkpoint(served, marker)

    def fake_download(url, dst, progress=True):
        assert url == 'https://example.org/weights/evil.pth'
        with open(dst, 'wb') as f:
            f.write(served.read_bytes())

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(UnsafeCheckpointError, match='system'):
        CheckpointLoader.load_checkpoint(
            'https://example.org/weights/evil.pth', map_location='cpu')
    assert not marker.exists()
    assert (tmp_path / 'hub' / 'checkpoints' / 'evil.pth').is_file()
