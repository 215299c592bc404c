# Copyright (c) mmpsearch contributors. All rights reserved.
from .checkpoint import (SAFE_GLOBALS, UnsafeCheckpointError,
                         register_safe_checkpoint_loader, safe_torch_load)
from .dist import setup_cpu_distributed
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'safe_torch_load', 'SAFE_GLOBALS',
    'UnsafeCheckpointError', 'register_safe_checkpoint_loader',
    'setup_cpu_distributed'
]
