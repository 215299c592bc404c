# Copyright (c) mmpsearch contributors. All rights reserved.
"""Print the environment for bug reports: ``python -m
mmpsearch.utils.collect_env``."""
from mmengine.utils import get_git_hash
from mmengine.utils.dl_utils import collect_env as collect_base_env


def collect_env() -> dict:
    """Collect the information of the running environments."""
    import diffusers
    import mmdet
    import mmpretrain
    import transformers

    import mmpsearch
    env_info = collect_base_env()
    env_info['MMDetection'] = mmdet.__version__
    env_info['MMPretrain'] = mmpretrain.__version__
    env_info['diffusers'] = diffusers.__version__
    env_info['transformers'] = transformers.__version__
    env_info['mmpsearch'] = mmpsearch.__version__ + '+' + get_git_hash()[:7]
    return env_info


if __name__ == '__main__':
    for name, val in collect_env().items():
        print(f'{name}: {val}')
