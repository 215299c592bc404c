# Copyright (c) mmpsearch contributors. All rights reserved.
"""Distributed training on machines without CUDA.

mmengine 0.10.7's pytorch and slurm launchers call ``torch.cuda.set_device``
before ``init_process_group``, which fails on a CPU-only machine. When no GPU
is there we start the ``gloo`` process group ourselves, before the Runner;
mmengine then skips its own initialisation. With GPUs nothing changes.
"""
import os
import subprocess
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config


def _slurm_env_to_torch_env(port: Optional[int] = None) -> None:
    """Translate the SLURM variables into the ones ``init_process_group``
    reads (the same translation mmengine's slurm launcher makes)."""
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(
        f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', str(port or 29500))
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ['RANK'] = str(proc_id)


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Start ``gloo`` and configure a CPU-friendly DDP wrapper when
    ``launcher`` asks for distributed training and CUDA is unavailable.

    Args:
        cfg (Config): The config; ``model_wrapper_cfg`` gets
            ``device_ids=None`` (DDP on CPU must not name a device).
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Returns:
        bool: True if this function started the process group.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if torch_dist.is_available() and torch_dist.is_initialized():
        return False
    if launcher == 'slurm':
        _slurm_env_to_torch_env(
            cfg.get('env_cfg', {}).get('dist_cfg', {}).get('port'))
    elif launcher != 'pytorch':
        raise ValueError(
            f'--launcher {launcher} needs CUDA; without a GPU use '
            '--launcher pytorch (tools/dist_train.sh) or slurm')
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(
                f'--launcher {launcher} expects the environment variable '
                f'{key}; start the job with tools/dist_train.sh (torchrun)')
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    kwargs = {}
    if timeout is not None:
        import datetime
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    # the config names 'nccl'; record what actually runs
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = \
        'gloo'
    return True
