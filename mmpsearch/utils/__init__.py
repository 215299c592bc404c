# Copyright (c) mmpsearch contributors. All rights reserved.
"""Utilities. The names below are imported on first use (PEP 562): their
modules import torch, and ``import mmpsearch.utils.cli_args`` (what the
tools build their parsers from before torch) must stay light."""
from importlib import import_module
from typing import Any

#: name -> the submodule that defines it
_LAZY = {
    'setup_cpu_distributed': '.dist',
    'SAFE_GLOBALS': '.safe_load',
    'UnsafeCheckpointError': '.safe_load',
    'safe_checkpoint_loading': '.safe_load',
    'safe_torch_load': '.safe_load',
    'register_all_modules': '.setup_env',
}

__all__ = [
    'register_all_modules', 'safe_torch_load', 'SAFE_GLOBALS',
    'UnsafeCheckpointError', 'safe_checkpoint_loading', 'setup_cpu_distributed'
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
