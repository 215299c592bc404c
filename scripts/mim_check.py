# Copyright (c) mmpsearch contributors. All rights reserved.
"""Does `mim` find mmpsearch's tools and model index? (scripts/install.sh)

``mim train / test / search mmpsearch`` look in
``mim.utils.get_installed_path('mmpsearch')/.mim`` for ``tools/train.py``,
``tools/test.py`` and ``model-index.yml`` (setup.py's ``add_mim_extension``
links them there). For an editable install that path is the repository only
when the install is a legacy one (an egg-link, ``setup.py develop`` of
setuptools < 80); a PEP 660 install makes it ``site-packages/mmpsearch``,
which does not exist.

Exits 0, or 1 with the reason on stderr::

    python scripts/mim_check.py
"""
import os.path as osp
import sys
import warnings

NEEDED = ('tools/train.py', 'tools/test.py', 'model-index.yml')


def missing(root: str) -> list:
    """The files of ``NEEDED`` that are not under ``root/.mim``."""
    return [
        osp.join(root, '.mim', name) for name in NEEDED
        if not osp.isfile(osp.join(root, '.mim', name))
    ]


def main() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # pkg_resources' deprecation
        try:
            from mim.utils import get_installed_path
            root = get_installed_path('mmpsearch')
        except Exception as e:  # noqa: BLE001 (any failure is the answer)
            print(f'mim cannot locate mmpsearch: {e!r}', file=sys.stderr)
            return 1
    gone = missing(root)
    if gone:
        print(
            f'mim looks for {", ".join(gone)}, which do not exist (a PEP 660 '
            'editable install? install with setuptools<80 and '
            '`pip install --no-use-pep517 -e .`)',
            file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
