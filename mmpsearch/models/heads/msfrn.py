# Copyright (c) mmpsearch contributors. All rights reserved.
"""Where ``MSFRN`` was defined: configs dumped into work dirs name it by
this path. It is a neck (``mmpsearch.models.necks.msfrn``)."""
from ..necks.msfrn import MSFRN

__all__ = ['MSFRN']
