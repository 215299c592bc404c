# Copyright (c) mmpsearch contributors. All rights reserved.
"""mmpsearch: diffusion-based person search (PSDiff, DiffPS) for OpenMMLab.

Importing it checks the installed versions of mmcv, mmengine and mmdet from
their package metadata, without importing them (mmcv and mmdet import
torch), so that ``import mmpsearch`` and the tools' ``--help`` stay quick.
"""
from importlib import metadata

from mmengine.utils import digit_version

from .version import __version__, version_info

# The versions measured to work together (see README, "Installation").
mmcv_minimum_version = '2.1.0'
mmcv_maximum_version = '2.2.0'
mmengine_minimum_version = '0.10.7'
mmengine_maximum_version = '1.0.0'
mmdet_minimum_version = '3.3.0'
mmdet_maximum_version = '3.4.0'


def _installed(name: str) -> str:
    """The version of the installed distribution ``name``, read from its
    metadata; an ImportError when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise ImportError(f'{name} is not installed, but mmpsearch needs it. '
                          'Run `make install`.') from None


def _check(name: str, found: str, low: str, high: str) -> None:
    if not (digit_version(low) <= digit_version(found) < digit_version(high)):
        raise ImportError(f'{name}=={found} is installed, but mmpsearch needs '
                          f'{name}>={low}, <{high}. Run `make install` (or '
                          f'`pip install "{name}>={low},<{high}"`).')


_check('mmcv', _installed('mmcv'), mmcv_minimum_version, mmcv_maximum_version)
_check('mmengine', _installed('mmengine'), mmengine_minimum_version,
       mmengine_maximum_version)
_check('mmdet', _installed('mmdet'), mmdet_minimum_version,
       mmdet_maximum_version)

__all__ = ['__version__', 'version_info']
