# Copyright (c) mmpsearch contributors. All rights reserved.
import importlib.util
from pathlib import Path

import pytest

from mmpsearch.datasets.synthetic import make_synthetic

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='session')
def tiny_cuhk(tmp_path_factory) -> str:
    """A small synthetic tree in the released CUHK-SYSU format (the smallest
    the format allows: 101 training scenes, 8 training identities)."""
    root = tmp_path_factory.mktemp('teacher_cuhk') / 'cuhk'
    make_synthetic(
        'cuhk', str(root), num_images=202, num_ids=16, image_size=(128, 96))
    return str(root)


@pytest.fixture(scope='session')
def extract_tool():
    """tools/extract_teacher_embeddings.py as a module (tools/ is not a
    package), so its main() runs in this process."""
    path = REPO / 'tools' / 'extract_teacher_embeddings.py'
    spec = importlib.util.spec_from_file_location('extract_teacher_tool',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
