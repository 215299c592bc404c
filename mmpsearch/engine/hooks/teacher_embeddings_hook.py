# Copyright (c) mmpsearch contributors. All rights reserved.
"""Check the teacher embeddings file against the training set."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpsearch.registry import HOOKS


def _leaf_datasets(dataset):
    """The datasets with a pipeline inside mmengine's dataset wrappers."""
    if hasattr(dataset, 'datasets'):  # ConcatDataset
        for d in dataset.datasets:
            yield from _leaf_datasets(d)
    elif hasattr(dataset, 'dataset') and not hasattr(dataset, 'pipeline'):
        yield from _leaf_datasets(dataset.dataset)  # Repeat / ClassBalanced
    else:
        yield dataset


@HOOKS.register_module()
class TeacherEmbeddingsCheckHook(Hook):
    """Before the first training iteration, check every
    ``DualNoiseGenerator`` of the training pipeline(s): it draws t on the
    model's T (``DualNoiseGenerator.check_model``; checked here once, not on
    every batch), and its teacher file opens (finite rows, consistent
    layout), has the model's width and one row per box of every training
    image. A mismatch is a ValueError naming the images; without this check
    the first mismatch would only show when a worker reaches that image, and
    a NaN row would not show at all.

    It does nothing for pipelines without a ``DualNoiseGenerator``.
    Registered by ``configs/_base_/default_runtime.py`` as
    ``default_hooks.teacher_check``.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        from mmpsearch.datasets.transforms import DualNoiseGenerator
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        # PSDiff's head (PSDiffHead.embed_dims, its denoiser's width)
        head = getattr(model, 'bbox_head', None)
        embed_dims = getattr(head, 'embed_dims', None)
        num_timesteps = getattr(head, 'num_timesteps', None)
        for dataset in _leaf_datasets(runner.train_dataloader.dataset):
            pipeline = getattr(dataset, 'pipeline', None)
            for t in getattr(pipeline, 'transforms', []):
                if isinstance(t, DualNoiseGenerator):
                    if num_timesteps is not None:
                        t.check_model(num_timesteps)
                    if hasattr(dataset, 'full_init'):
                        dataset.full_init()
                    num = t.check_dataset(dataset, embed_dims)
                    runner.logger.info(
                        f'teacher embeddings {t.teacher_embeds}: finite, '
                        f'{t.teacher.dim}-d, one row per box of the {num} '
                        'training images')
