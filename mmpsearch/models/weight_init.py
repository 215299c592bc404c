# Copyright (c) mmpsearch contributors. All rights reserved.
"""Loading pretrained weights that must fit exactly."""
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info

from mmpsearch.registry import WEIGHT_INITIALIZERS
from mmpsearch.utils.checkpoint import (CheckpointMismatchError,
                                        load_fitting_state_dict)


@WEIGHT_INITIALIZERS.register_module(name='StrictPretrained')
class StrictPretrainedInit(PretrainedInit):
    """mmengine's ``Pretrained`` init with ``strict=True``.

    mmengine loads ``init_cfg=dict(type='Pretrained', ...)`` non-strictly:
    a checkpoint of another width only logs its size mismatches, and the
    module silently keeps its random weights. Where the weights are part of
    the recipe (the synthetic PSDiff backbone starts from the ReID teacher's
    backbone), a missing, unexpected or mis-shaped key is an error instead.
    Checkpoints go through mmengine's loader (made safe by the tools,
    :func:`~mmpsearch.utils.safe_load.safe_checkpoint_loading`); the fit is
    :func:`~mmpsearch.utils.checkpoint.check_checkpoint_fits`, the one check
    of every loader.

    Args: as ``PretrainedInit`` (``checkpoint``, ``prefix``,
    ``map_location``).
    """

    def __call__(self, module) -> None:
        from mmengine.runner.checkpoint import (_load_checkpoint,
                                                _load_checkpoint_with_prefix)
        where = f' {self.prefix} in' if self.prefix else ''
        print_log(
            f'load{where} model from: {self.checkpoint} (strict)',
            logger='current')
        if self.prefix is None:
            ckpt = _load_checkpoint(
                self.checkpoint, map_location=self.map_location)
        else:
            ckpt = _load_checkpoint_with_prefix(
                self.prefix, self.checkpoint, map_location=self.map_location)
        name = f'{self.checkpoint}' + (f' (prefix {self.prefix})'
                                       if self.prefix else '')
        try:
            load_fitting_state_dict(module, ckpt, name)
        except CheckpointMismatchError as err:
            raise CheckpointMismatchError(
                f'init_cfg StrictPretrained: {err}') from None
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())
