# Copyright (c) mmpsearch contributors. All rights reserved.
"""`mim train mmpsearch CONFIG` finds our tools through mmpsearch/.mim."""
import shutil
import subprocess
import sys
from pathlib import Path

from mmpsearch.utils import safe_torch_load
from .conftest import REPO, tool_env


def test_mim_train(tmp_path, toy_config):
    mim = shutil.which('mim', path=str(Path(sys.executable).parent))
    assert mim, 'openmim is installed by `make install`'
    assert (REPO / 'mmpsearch' / '.mim' / 'tools' / 'train.py').is_file()
    proc = subprocess.run([
        mim, 'train', 'mmpsearch', toy_config, '--work-dir',
        str(tmp_path), '--cfg-options', 'train_cfg.max_iters=2'
    ],
                          cwd=REPO,
                          env=tool_env(),
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert safe_torch_load(str(tmp_path / 'iter_2.pth'))['meta']['iter'] == 2
