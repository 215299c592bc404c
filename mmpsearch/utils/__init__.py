# Copyright (c) mmpsearch contributors. All rights reserved.
from .dist import setup_cpu_distributed
from .safe_load import (SAFE_GLOBALS, UnsafeCheckpointError,
                        safe_checkpoint_loading, safe_torch_load)
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'safe_torch_load', 'SAFE_GLOBALS',
    'UnsafeCheckpointError', 'safe_checkpoint_loading', 'setup_cpu_distributed'
]
