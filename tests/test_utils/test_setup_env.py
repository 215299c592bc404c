# Copyright (c) mmpsearch contributors. All rights reserved.
"""mmengine's checkpoint loaders are made safe by ``register_all_modules()``
(the explicit set-up step of every entry point), not by importing
mmpsearch: importing a library must not change how the whole process loads
checkpoints."""
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]

# The modules of the loaders mmengine now uses for a local file and for a
# URL. Told apart by module name, so the probe imports nothing of mmpsearch.
PROBE = '''
import mmengine.runner.checkpoint as ckpt
local = ckpt.CheckpointLoader._get_checkpoint_loader('/some/epoch_1.pth')
print(local.__module__, ckpt.load_url.__module__)
'''
SAFE = 'mmpsearch.utils.checkpoint'


def loaders_after(code: str) -> List[str]:
    """The loaders' modules after running ``code`` in a fresh interpreter
    (the patch is process-wide, so this process cannot be asked)."""
    proc = subprocess.run([sys.executable, '-c', code + '\n' + PROBE],
                          cwd=str(REPO),
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_import_does_not_patch_the_loader():
    found = loaders_after('import mmpsearch')
    assert len(found) == 2 and SAFE not in found, found


def test_importing_the_library_does_not_patch_the_loader():
    # neither the package that holds the patch nor the API that uses it
    found = loaders_after('import mmpsearch.utils.checkpoint\n'
                          'import mmpsearch.apis\n'
                          'import mmpsearch.datasets')
    assert len(found) == 2 and SAFE not in found, found


def test_register_all_modules_patches_the_loader():
    found = loaders_after(
        'from mmpsearch.utils import register_all_modules\n'
        'register_all_modules(init_default_scope=False)')
    assert found == [SAFE, SAFE], found
