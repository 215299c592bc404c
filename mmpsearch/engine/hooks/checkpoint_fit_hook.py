# Copyright (c) mmpsearch contributors. All rights reserved.
"""Refuse, or warn loudly about, a checkpoint that does not fit the model."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpsearch.registry import HOOKS
from mmpsearch.utils.checkpoint import check_checkpoint_fits


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Compare every checkpoint the Runner loads (``load_from``, resume)
    with the model, before its weights are copied in.

    mmengine's Runner loads ``load_from`` with ``strict=False``: a checkpoint
    of another model loads nothing (or half) and only a log line says so, so
    a test run prints the metrics of a partly random model and a training
    run quietly starts from scratch. With this hook:

    - ``allow_partial=False`` (``tools/test.py`` without
      ``--allow-partial``): a missing, unexpected or mis-shaped key is a
      :class:`~mmpsearch.utils.checkpoint.CheckpointMismatchError` naming the
      file and the first keys of each kind;
    - ``allow_partial=True`` (the training default, for ``load_from`` of
      e.g. a detector pretrained without the ReID head): a warning with the
      counts of loaded / missing / unexpected keys.

    Args:
        allow_partial (bool): Warn instead of raising. Defaults to True.
        filename (str, optional): The checkpoint's name for the message;
            by default the Runner's ``load_from``.
        hint (str): How to opt in to a partial load, added to the error.
        allow_empty (bool): With ``allow_partial``, also accept a
            checkpoint that fills none of the weights (``tools/test.py
            --allow-partial``). Refused by default: a training
            ``load_from`` that loads nothing trains from scratch.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 allow_partial: bool = True,
                 filename: Optional[str] = None,
                 hint: str = '',
                 allow_empty: bool = False) -> None:
        self.allow_partial = bool(allow_partial)
        self.allow_empty = bool(allow_empty)
        self.filename = filename
        self.hint = hint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        filename = self.filename or getattr(runner, '_load_from', None) or \
            'being loaded'
        fit = check_checkpoint_fits(
            model,
            checkpoint,
            filename,
            allow_partial=self.allow_partial,
            hint=self.hint,
            allow_empty=self.allow_empty)
        runner.logger.info(
            f'checkpoint {filename}: {fit["loaded"]} of {fit["total"]} '
            f'weights loaded, {len(fit["missing"])} missing, '
            f'{len(fit["unexpected"])} unexpected, {len(fit["shape"])} of '
            'another shape')
