# Copyright (c) mmpsearch contributors. All rights reserved.
from mmdet.engine.hooks import DetVisualizationHook
from mmdet.visualization import DetLocalVisualizer
from mmengine.hooks import (CheckpointHook, DistSamplerSeedHook, IterTimerHook,
                            LoggerHook, ParamSchedulerHook)
from mmengine.runner import LogProcessor
from mmengine.visualization import LocalVisBackend

from mmpsearch.engine.hooks import (CheckpointFitHook, FiniteLossHook,
                                    TeacherEmbeddingsCheckHook)

default_scope = 'mmpsearch'

default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, interval=50),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, interval=1),
    sampler_seed=dict(type=DistSamplerSeedHook),
    visualization=dict(type=DetVisualizationHook),
    # refusals (docs/en/refusals.md): stop at the first NaN / inf loss,
    # before its checkpoint; check the teacher file against the training
    # set; warn loudly when load_from / resume leaves weights unloaded
    # (tools/test.py makes that an error)
    finite_loss=dict(type=FiniteLossHook),
    teacher_check=dict(type=TeacherEmbeddingsCheckHook),
    checkpoint_fit=dict(type=CheckpointFitHook, allow_partial=True))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # On a machine without CUDA, tools/train.py starts 'gloo' itself (with
    # the same timeout). timeout: seconds a collective may wait (mmengine's
    # init_dist turns it into a timedelta), so a rank that died before a
    # collective (OIM's all-gather, the metric broadcast) ends the others'
    # wait at a known time; long enough for rank 0's full-gallery evaluation.
    dist_cfg=dict(backend='nccl', timeout=1800),
)

# Each rank seeds torch with seed + rank (mmengine's set_random_seed; seed
# None: one random seed per run, shared by the ranks): the training noise of
# DiffPS (the posterior sample and the forward noise of the Stable Diffusion
# backbone) and of PSDiff (noisy boxes) differs between ranks instead of
# repeating rank 0's draws. DDP broadcasts rank 0's initial weights, and the
# data sampler keeps one seed for all ranks. Test-time randomness has its own
# seeds (noise_seed, test_cfg.seed).
randomness = dict(seed=None, diff_rank_seed=True)

vis_backends = [dict(type=LocalVisBackend)]
visualizer = dict(
    type=DetLocalVisualizer, vis_backends=vis_backends, name='visualizer')
log_processor = dict(type=LogProcessor, window_size=50, by_epoch=False)

log_level = 'INFO'
load_from = None
resume = False
