# Copyright (c) mmpsearch contributors. All rights reserved.
"""Input files named in errors: a folder where a file is expected is
called a folder, not "does not exist" (``docs/en/refusals.md``)."""
import os.path as osp


def require_file(path: str, what: str) -> None:
    """Raise ``FileNotFoundError`` naming ``path`` and what it should hold
    (also when ``path`` is a folder, saying so)."""
    if osp.isdir(path):
        raise FileNotFoundError(f'{path} is a folder, not a file; expected '
                                f'{what}')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} does not exist; expected {what}')
